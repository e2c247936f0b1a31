"""precision='auto': bf16 only where the hardware multiplies it natively; a warning with the measured cost when
bf16 is forced on a CPU that emulates it."""

from __future__ import annotations

import warnings

import pytest

from videococa.models import precision as P


@pytest.fixture
def flags(monkeypatch):
    def set_flags(*names):
        monkeypatch.setattr(P, "cpu_flags", lambda: frozenset(names))

    return set_flags


@pytest.fixture(autouse=True)
def _no_override(monkeypatch):
    monkeypatch.delenv(P.ENV, raising=False)


def test_auto_follows_the_cpu(flags):
    flags("avx2", "fma")
    assert P.resolve_precision("auto", "cpu") == "fp32" and P.cpu_capability() in ("AVX2", "AVX512", "DEFAULT")
    flags("avx2", "avx512f", "avx512_bf16")
    assert P.resolve_precision("auto", "cpu") == "bf16" and P.cpu_capability() == "AVX512-BF16"
    flags("avx2", "amx_bf16", "amx_tile")
    assert P.resolve_precision("auto", "cpu") == "bf16" and P.cpu_capability() == "AMX"


def test_explicit_choices_are_kept(flags):
    flags("avx2")
    assert P.resolve_precision("fp32", "cpu") == "fp32"
    with pytest.warns(UserWarning, match=r"no AMX or AVX512-BF16\): a bf16 matmul measured [0-9.]+x the time of fp32"):
        assert P.resolve_precision("bf16", "cpu") == "bf16"
    flags("amx_bf16")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert P.resolve_precision("bf16", "cpu") == "bf16"


def test_slowdown_is_a_measured_positive_ratio():
    assert P.bf16_slowdown(64, 2) > 0


def test_environment_overrides_auto_only(flags, monkeypatch):
    flags("amx_bf16")
    monkeypatch.setenv(P.ENV, "fp32")
    assert P.resolve_precision("auto", "cpu") == "fp32" and P.resolve_precision("bf16", "cpu") == "bf16"


def test_load_model_resolves_auto(flags):
    from videococa import load_model

    flags("avx2")
    assert load_model("videococa-tiny").precision == "fp32"
    flags("amx_bf16")
    model = load_model("videococa-tiny")
    assert model.precision == "bf16" and model.provenance()["precision"] == "bf16"
    from videococa.errors import OptionError

    with pytest.raises(OptionError, match="precision"):
        load_model("videococa-tiny", precision="fp16")
