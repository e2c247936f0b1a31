"""How a Ray run is laid out: the cluster, the model replicas and the sizes of the units of work."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import OptionError

BackendName = Literal["local", "ray"]
BACKENDS: tuple[str, ...] = ("local", "ray")


@dataclass(frozen=True)
class RayOptions:
    """Settings of the Ray backend; the defaults suit one machine and scale with the cluster they find."""

    address: str | None = None
    """Cluster to join (`auto`, `HOST:6379`, `ray://HOST:10001`); None: $RAY_ADDRESS, else a Ray runtime started on
    this machine for the run (and stopped after it)."""
    actors: int | None = None
    """Model replicas; None: one per GPU on a cluster with GPUs, else one per two CPUs (the other CPU decodes)."""
    gpus_per_actor: float | None = None
    """GPUs each replica holds; None: 1 on a cluster with GPUs, else 0 (CPU replicas)."""
    cpus_per_actor: float = 1.0
    """CPUs reserved by each replica; a CPU replica runs torch with that many threads."""
    decode_cpus: float = 1.0
    """CPUs reserved by each decoding task (PyAV decodes a file on one core)."""
    files_per_task: int = 4
    """Files one decoding task reads: the unit of retry for decoding (small: a retried task redoes little)."""
    files_per_shard: int = 256
    """Files per Parquet shard (at most): the unit a killed driver's re-run skips as a whole."""
    task_retries: int = 3
    """Attempts after the first for a task or actor call whose worker died (SIGKILL, OOM killer, lost node).
    Ray Data's default is to retry for ever, which would loop on a file that crashes the decoder every time;
    after these, the batch is set aside, and its files are tried again one by one (see `raydata`)."""

    def check(self) -> None:
        """Raise OptionError naming the first value that cannot be used."""
        for name in ("files_per_task", "files_per_shard"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise OptionError(f"{name} must be a positive integer, got {v!r}")
        if self.actors is not None and (not isinstance(self.actors, int) or self.actors < 1):
            raise OptionError(f"actors must be a positive integer, got {self.actors!r}")
        for name in ("gpus_per_actor", "cpus_per_actor", "decode_cpus"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and v >= 0):
                raise OptionError(f"{name} must be 0 or more, got {v!r}")
        if not isinstance(self.task_retries, int) or self.task_retries < 0:
            raise OptionError(f"task_retries must be 0 or more, got {self.task_retries!r}")


def check_backend(name: str) -> str:
    """`name` if it is a backend, else an OptionError listing them."""
    if name not in BACKENDS:
        raise OptionError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    return name
