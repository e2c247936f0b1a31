"""Long operations (rescan, index an upload, delete) as background jobs, one at a time, with progress.

Each job opens its own VideoIndex (its own SQLite connection) and writes under the index's writer lock; the
server's searches see each file as soon as it is committed.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Callable, Literal

from ..errors import VideoCoCaError

log = logging.getLogger("videococa.serve")
State = Literal["queued", "running", "done", "failed"]
KEEP_FINISHED = 200
"""Finished jobs remembered for /api/jobs."""


@dataclass
class Job:
    """One background operation."""

    id: str
    """Opaque id."""
    kind: str
    """What it does: 'update', 'upload', 'delete'."""
    state: State = "queued"
    """queued -> running -> done | failed."""
    done: int = 0
    """Files processed so far."""
    total: int = 0
    """Files to process (0 until known)."""
    current: str = ""
    """The file last processed (relative to the library)."""
    message: str = ""
    """A summary when done, or the reason it failed."""
    result: dict = field(default_factory=dict)
    """Counts when done (added, updated, removed, failed, ...)."""
    created: float = field(default_factory=time.time)
    """Unix time submitted."""
    started: float | None = None
    """Unix time it began running."""
    finished: float | None = None
    """Unix time it ended."""
    version: int = 0
    """Bumped on every change (what the event stream watches)."""

    def public(self) -> dict:
        d = asdict(self)
        d["progress"] = (self.done / self.total) if self.total else (1.0 if self.state == "done" else 0.0)
        return d


class JobRunner:
    """A queue of jobs run one after another on a worker thread."""

    def __init__(self):
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._queue: list[tuple[Job, Callable]] = []
        self._cv = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="videococa-jobs", daemon=True)
        self._thread.start()

    def submit(self, kind: str, work: Callable[[Job, Callable[..., None]], dict]) -> Job:
        """Queue `work(job, update)`; it reports progress with `update(done=, total=, current=)` and returns the
        result counts."""
        job = Job(uuid.uuid4().hex[:12], kind)
        with self._cv:
            self._jobs[job.id] = job
            self._queue.append((job, work))
            self._trim()
            self._cv.notify_all()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._cv:
            return self._jobs.get(job_id)

    def all(self) -> list[Job]:
        with self._cv:
            return list(self._jobs.values())[::-1]

    def running(self) -> Job | None:
        with self._cv:
            return next((j for j in self._jobs.values() if j.state == "running"), None)

    def busy(self) -> bool:
        with self._cv:
            return any(j.state in ("queued", "running") for j in self._jobs.values())

    def wait(self, job_id: str, version: int, timeout: float) -> Job | None:
        """The job once its version passes `version` or it has ended (or after `timeout`)."""
        with self._cv:
            self._cv.wait_for(lambda: (j := self._jobs.get(job_id)) is None or j.version > version
                              or j.state in ("done", "failed"), timeout=timeout)
            return self._jobs.get(job_id)

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        self._thread.join(timeout=5)

    def _trim(self) -> None:
        ended = [k for k, j in self._jobs.items() if j.state in ("done", "failed")]
        for k in ended[: max(0, len(ended) - KEEP_FINISHED)]:
            del self._jobs[k]

    def _change(self, job: Job, **fields) -> None:
        with self._cv:
            for k, v in fields.items():
                setattr(job, k, v)
            job.version += 1
            self._cv.notify_all()

    def _run(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._queue or self._stop)
                if self._stop:
                    return
                job, work = self._queue.pop(0)
            self._change(job, state="running", started=time.time())
            try:
                result = work(job, lambda **kw: self._change(job, **kw))
                self._change(job, state="done", result=result, finished=time.time(),
                             message=", ".join(f"{v} {k}" for k, v in result.items() if isinstance(v, int)))
            except VideoCoCaError as exc:
                self._change(job, state="failed", message=str(exc), finished=time.time())
            except Exception:  # noqa: BLE001 - a bug: logged in full here, a plain message for the client
                log.exception("job %s (%s) failed", job.id, job.kind)
                self._change(job, state="failed", message="internal error; see the server log", finished=time.time())
