"""Where batch work runs: one switch (`--backend local|ray`) that every command encoding many videos shares.

`local` (the default) is the threaded path in this process (`tasks.batch.encode_files`, `tasks.embed`).
`ray` runs the same per-file steps (read, encode, caption) as Ray Data stages on a cluster; only the
scheduling differs, and so its outputs equal the local ones (tests/backends compares them).

Both offer the same three calls:
    backend.encode_files(model, paths, **options)  each file's EncodedClips (or its FileIssue), as
                                                   `tasks.batch.encode_files` yields them: index, caption
    backend.encode_clip_keys(model, keys, **opts)  (path, start, end) clips of annotation items, as
                                                   `tasks.clipkeys.encode_clip_keys` yields them: eval,
                                                   cache-features
    backend.embed(model, paths, out, **options)    embeddings to Parquet: one file (local) or a folder
                                                   of shards with an errors table (ray)

The commands below the backends in the layering (`VideoIndex.update`, `train.cache_features`,
`eval.runner.evaluate`) never import them: they take the backend's function as `encode=` and default to the
local one, so the CLI (above both) is the one place that picks a backend.

Ray is imported only by `backends.raydata`, when a ray backend is first used: `import videococa` and the
CLI never load it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Union

from ..lazy import lazy_exports
from .options import BACKENDS, BackendName, RayOptions, check_backend

# the backends themselves load on first use (videococa.lazy): the CLI's parser reads the names above only
__getattr__, __dir__ = lazy_exports(__name__, {".local": ("LocalBackend",), ".raydata": ("RayBackend",)})

if TYPE_CHECKING:
    from .local import LocalBackend
    from .raydata import RayBackend

Backend = Union["LocalBackend", "RayBackend"]


def get_backend(name: BackendName = "local", *, ray: RayOptions | None = None, **kwargs) -> Backend:
    """The backend called `name`, ready to use as a context manager (a Ray runtime it starts is stopped at the end).

    `ray`: the Ray backend's settings (cluster address, replicas, ...); `kwargs` go to its constructor."""
    check_backend(name)
    if name == "local":
        from .local import LocalBackend  # noqa: PLC0415 - torch and the threaded path load when a command runs

        return LocalBackend()
    from .raydata import RayBackend  # noqa: PLC0415 - keeps Ray (and its import time) out of the local path

    return RayBackend(ray, **kwargs)


__all__ = ["BACKENDS", "Backend", "BackendName", "LocalBackend", "RayBackend", "RayOptions", "check_backend",
           "get_backend"]
