"""Concurrent searches gathered into engine batches by one worker thread.

A request waits at most ``max_wait_s`` for others to join it; up to ``max_batch_size`` requests with the same K go
to the engine in one call (requests with another K form their own batch). N concurrent clients therefore cost
about N / ``max_batch_size`` engine calls instead of N. The worker is the only thread that touches the engine.
An engine error fails the requests of that batch (their futures raise it) and the worker keeps serving.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)


@dataclass
class _Request:
    text: str
    k: int
    future: Future


class Batcher:
    """Runs ``search(texts, k) -> results`` (one result per text) on a worker thread, in batches.

    Args:
        search: the batch function, e.g. :meth:`swift_ssid.service.engine.SearchEngine.search`.
        max_batch_size: most requests per call.
        max_wait_s: how long the first request of a batch waits for others.

    Example:
        >>> b = Batcher(lambda texts, k: [t.upper() * k for t in texts], max_batch_size=4)
        >>> b.submit("ab", 2).result(timeout=5)
        'ABAB'
        >>> b.close()
    """

    def __init__(self, search: Callable[[Sequence[str], int], Sequence[Any]], max_batch_size: int = 8,
                 max_wait_s: float = 0.01):  # fmt: skip
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be positive, got {max_batch_size!r}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must not be negative, got {max_wait_s!r}")
        self.search = search
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.batch_sizes: list[int] = []  # every engine call's size, for /health and the benchmark
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._closed = threading.Event()
        self._worker = threading.Thread(target=self._loop, name="ssid-search-batcher", daemon=True)
        self._worker.start()

    def submit(self, text: str, k: int) -> Future:
        """Queue one search; the future gives its result (or raises the engine's error)."""
        if self._closed.is_set():
            raise RuntimeError("the batcher is closed")
        future: Future = Future()
        self._queue.put(_Request(text, k, future))
        return future

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking requests, finish the queued ones, and stop the worker."""
        if not self._closed.is_set():
            self._closed.set()
            self._queue.put(None)
            self._worker.join(timeout)

    def _gather(self, first: _Request) -> tuple[list[_Request], bool]:
        """``first`` and the requests that arrive within the wait, up to the batch size; and whether to stop."""
        batch = [first]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def _loop(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            batch, stop = self._gather(first)
            by_k: dict[int, list[_Request]] = {}
            for request in batch:
                by_k.setdefault(request.k, []).append(request)
            for k, group in by_k.items():
                self._run(k, group)
        while True:  # closed: answer what is still queued
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                self._run(item.k, [item])

    def _run(self, k: int, group: list[_Request]) -> None:
        live = [r for r in group if r.future.set_running_or_notify_cancel()]
        if not live:
            return
        self.batch_sizes.append(len(live))
        try:
            results = self.search([r.text for r in live], k)
        except Exception as e:  # the engine failed this batch: its requests get the error, the worker lives on
            logger.exception("search batch of %d failed", len(live))
            for request in live:
                request.future.set_exception(e)
            return
        for request, result in zip(live, results, strict=True):
            request.future.set_result(result)
