"""Loading: local files, the hub cache offline, strict key checking, and clear errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import videococa
from videococa import CheckpointError, ModelNotFoundError, WeightsUnavailableError, load_model


def test_list_models_names_coca_configs_and_tags():
    models = videococa.list_models()
    assert models["coca_ViT-B-32"] == ["laion2b_s13b_b90k", "mscoco_finetuned_laion2b_s13b_b90k"]
    assert models["coca_ViT-L-14"] == ["laion2b_s13b_b90k", "mscoco_finetuned_laion2b_s13b_b90k"]
    assert "coca_roberta-ViT-B-32" not in models  # needs transformers' text tower


def test_safetensors_and_bin_load_to_the_same_model(reference, weights_file, model, frames, tmp_path):
    bin_path = tmp_path / "weights.bin"
    torch.save(reference.state_dict(), bin_path)
    wrapped = tmp_path / "wrapped.pt"  # training checkpoints wrap the state dict
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, wrapped)
    expected = model.encode_video(frames)
    for path in (bin_path, wrapped):
        other = load_model("coca_ViT-B-32", pretrained=str(path))
        assert torch.equal(other.encode_video(frames), expected)
    assert model.info.pretrained == weights_file


def _save_without(reference, tmp_path, drop=(), add=None, reshape=None) -> str:
    sd = {k: v.contiguous() for k, v in reference.state_dict().items() if k not in drop}
    if add:
        sd.update(add)
    if reshape:
        sd[reshape] = torch.zeros(3)
    path = tmp_path / "bad.safetensors"
    save_file(sd, str(path))
    return str(path)


def test_missing_key_is_named(reference, tmp_path):
    path = _save_without(reference, tmp_path, drop=("visual.attn_pool.query",))
    with pytest.raises(CheckpointError, match=r"1 missing keys: visual\.attn_pool\.query") as err:
        load_model("coca_ViT-B-32", pretrained=path)
    assert "bad.safetensors" in str(err.value)


def test_unexpected_key_and_shape_mismatch_are_named(reference, tmp_path):
    path = _save_without(reference, tmp_path, add={"extra.weight": torch.zeros(2)}, reshape="visual.proj")
    with pytest.raises(CheckpointError) as err:
        load_model("coca_ViT-B-32", pretrained=path)
    msg = str(err.value)
    assert "1 unexpected keys: extra.weight" in msg
    assert "visual.proj: file (3,) vs model (512, 512)" in msg


def test_unreadable_and_missing_weight_files(tmp_path):
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="could not read weights file .*corrupt.safetensors"):
        load_model("coca_ViT-B-32", pretrained=str(corrupt))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model("coca_ViT-B-32", pretrained=str(tmp_path / "nope.bin"))
    with pytest.raises(CheckpointError, match="is a directory"):
        load_model("coca_ViT-B-32", pretrained=str(tmp_path) + "/")


def test_unknown_names_list_what_is_known():
    with pytest.raises(ModelNotFoundError, match=r"unknown model 'coca_ViT-X'.*coca_ViT-B-32.*coca_ViT-L-14"):
        load_model("coca_ViT-X")
    with pytest.raises(ModelNotFoundError, match="unknown pretrained tag 'laion400m'.*laion2b_s13b_b90k"):
        load_model("coca_ViT-B-32", pretrained="laion400m")
    with pytest.raises(ModelNotFoundError, match="not of the form 'hf-hub:org/repo'"):
        load_model("coca_ViT-B-32", pretrained="hf-hub:nonsense")


def test_bad_precision_and_device():
    with pytest.raises(ValueError, match="unknown precision 'fp16'; choose one of: auto, fp32, bf16"):
        load_model("coca_ViT-B-32", precision="fp16")
    with pytest.raises(ValueError, match="unknown device 'gpu'; choose one of: cpu, cuda, cuda:N"):
        load_model("coca_ViT-B-32", device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU is available"):
            load_model("coca_ViT-B-32", device="cuda:0")


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    """An empty Hugging Face cache and HF_HUB_OFFLINE: nothing can be downloaded."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return tmp_path / "hub"


def _put_in_hub_cache(cache: Path, repo_id: str, filename: str, src: str) -> None:
    """Lay a file out as huggingface_hub's cache does: refs/main -> snapshots/<commit>/<file>."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (snap / filename).write_bytes(Path(src).read_bytes())


def test_offline_tag_without_cache_explains_what_to_do(offline_hub):
    with pytest.raises(WeightsUnavailableError) as err:
        load_model("coca_ViT-B-32", pretrained="laion2b_s13b_b90k")
    msg = str(err.value)
    assert "'laion2b_s13b_b90k'" in msg and "HF_HUB_OFFLINE is set" in msg
    assert "laion/CoCa-ViT-B-32-laion2B-s13B-b90k" in msg  # where to get it
    assert "pretrained='/path/to/open_clip_model.safetensors'" in msg  # how to point at a file


def test_offline_tag_loads_from_hub_cache(offline_hub, weights_file, model, frames):
    """The real tag path: open_clip's registry -> hub repo -> cached file, with no network."""
    _put_in_hub_cache(offline_hub, "laion/CoCa-ViT-B-32-laion2B-s13B-b90k", "open_clip_model.safetensors", weights_file)
    loaded = load_model("coca_ViT-B-32", pretrained="laion2b_s13b_b90k")
    assert loaded.info.pretrained == "laion2b_s13b_b90k"
    assert torch.equal(loaded.encode_video(frames), model.encode_video(frames))


def test_offline_hf_hub_id_loads_from_cache(offline_hub, reference, model, frames, tmp_path):
    bin_path = tmp_path / "w.bin"
    torch.save(reference.state_dict(), bin_path)
    _put_in_hub_cache(offline_hub, "someone/my-coca", "open_clip_pytorch_model.bin", str(bin_path))
    loaded = load_model("coca_ViT-B-32", pretrained="hf-hub:someone/my-coca")
    assert torch.equal(loaded.encode_video(frames), model.encode_video(frames))
    with pytest.raises(WeightsUnavailableError, match="hf-hub:someone/other"):
        load_model("coca_ViT-B-32", pretrained="hf-hub:someone/other")
