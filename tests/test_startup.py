"""Start-up stays cheap: `import videococa` and the CLI's help and usage errors load none of torch, open_clip, PyAV,
FAISS or NumPy (checked by what a fresh interpreter has imported, not by timing)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "open_clip", "av", "faiss", "numpy", "pyarrow", "fastapi")


def imported_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True).stdout.splitlines()[-1]
    return {m.split(".")[0] for m in json.loads(out)}


@pytest.mark.parametrize("code", [
    "import videococa",
    "import videococa.cli as c; c.build_parser()",
    "import videococa.cli as c\ntry:\n    c.main(['index', '--help'])\nexcept SystemExit:\n    pass",
    "import videococa.cli as c\ntry:\n    c.main(['index', 'x', '--index', 'y', '--frames', '0'])\nexcept SystemExit:\n    pass",
])
def test_light_paths_load_nothing_heavy(code):
    assert not imported_after(code) & set(HEAVY)


def test_public_names_still_load_on_use():
    import videococa

    assert videococa.VideoIndex.__name__ == "VideoIndex" and "load_model" in dir(videococa)
    assert set(videococa.__all__) <= set(dir(videococa))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        videococa.nope  # noqa: B018
    from videococa.tasks import ZeroShotClassifier, load_labels  # noqa: F401

    assert "torch" in imported_after("from videococa import load_model")
