"""The model off the event loop: one worker thread runs every model call in turn; text queries that arrive
together are encoded in one batch."""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Any, Callable

import numpy as np

from ..models.videococa import VideoCoCa

MAX_TEXT_BATCH = 64
"""Text queries encoded in one call at most."""


class Engine:
    """Serialises model work from many request threads; `depth` is how many calls wait (a metric)."""

    def __init__(self, model: VideoCoCa, *, max_text_batch: int = MAX_TEXT_BATCH):
        self.model = model
        self.max_text_batch = max_text_batch
        self._queue: queue.Queue = queue.Queue()
        self._held: list = []  # a non-text call taken off the queue while gathering a text batch
        self._closed = False
        self.batches = 0
        """Text batches encoded so far (tests read it to see batching happen)."""
        self._thread = threading.Thread(target=self._run, name="videococa-model", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        return self._queue.qsize() + len(self._held)

    def encode_text(self, text: str) -> Future:
        """A future (E,) numpy embedding of `text`."""
        return self._put(("text", text, Future()))

    def call(self, fn: Callable[..., Any], *args, **kwargs) -> Future:
        """Run `fn(model, *args, **kwargs)` on the model thread; a future of its result."""
        return self._put(("call", (fn, args, kwargs), Future()))

    def _put(self, item) -> Future:
        if self._closed:
            raise RuntimeError("the model engine is closed")
        self._queue.put(item)
        return item[2]

    def close(self) -> None:
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _next(self):
        return self._held.pop(0) if self._held else self._queue.get()

    def _run(self) -> None:
        while True:
            item = self._next()
            if item is None:
                return
            if item[0] == "text":
                batch = [item]
                while len(batch) < self.max_text_batch:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None or more[0] != "text":
                        self._held.append(more)
                        break
                    batch.append(more)
                self._texts(batch)
            else:
                fn, args, kwargs = item[1]
                self._settle(item[2], lambda: fn(self.model, *args, **kwargs))

    def _texts(self, batch: list) -> None:
        live = [b for b in batch if b[2].set_running_or_notify_cancel()]
        if not live:
            return
        try:
            emb = self.model.encode_text([b[1] for b in live]).cpu().numpy().astype(np.float32)  # (B, E)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting request, which reports it
            for b in live:
                b[2].set_exception(exc)
            return
        self.batches += 1
        for b, e in zip(live, emb):
            b[2].set_result(e)

    @staticmethod
    def _settle(fut: Future, run: Callable[[], Any]) -> None:
        if not fut.set_running_or_notify_cancel():
            return
        try:
            fut.set_result(run())
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting request, which reports it
            fut.set_exception(exc)
