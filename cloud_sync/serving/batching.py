"""Dynamic batching: concurrent requests are grouped up to ``max_batch`` samples or ``max_wait_ms``,
run once, and answered individually.

Requests are grouped only with requests of the same non-batch shape (sequences of different lengths
are not padded). A bundle whose batch dim is fixed runs each request alone. The model runs in a thread
pool, so the event loop keeps accepting requests while a batch computes.
"""

from __future__ import annotations

import asyncio
import collections
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from edgec.core.types import Feed

from .host import LoadedBundle, ModelHost
from .metrics import ServerMetrics


@dataclass
class _Item:
    key: tuple[Any, ...]
    feed: Feed
    size: int
    future: asyncio.Future[tuple[Feed, LoadedBundle]]


class DynamicBatcher:
    """Groups requests and runs them on the host's current bundle.

    Args:
        host: the model host (its bundle may be swapped between batches).
        metrics: where batch sizes and queue depth go.
        max_batch: most samples per model run; 1 disables batching.
        max_wait_ms: how long the first request of a batch waits for company.
        workers: model runs in parallel (threads).
    """

    def __init__(self, host: ModelHost, metrics: ServerMetrics, max_batch: int = 16, max_wait_ms: float = 5.0, workers: int = 1) -> None:
        self.host = host
        self.metrics = metrics
        self.max_batch = max(1, max_batch)
        self.max_wait = max(0.0, max_wait_ms) / 1000
        self.workers = max(1, workers)
        self._queue: asyncio.Queue[_Item] | None = None
        self._carry: collections.deque[_Item] = collections.deque()
        self._tasks: list[asyncio.Task[None]] = []
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="edgec-infer")

    async def start(self) -> None:
        """Start the batching loops (call from the running event loop)."""
        self._queue = asyncio.Queue()
        self._tasks = [asyncio.create_task(self._loop()) for _ in range(self.workers)]

    async def stop(self) -> None:
        """Cancel the loops and release the pool."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._pool.shutdown(wait=False)

    async def submit(self, feed: Feed) -> tuple[Feed, LoadedBundle]:
        """Queue one validated request; returns its outputs and the bundle that ran it."""
        assert self._queue is not None, "start() the batcher first"
        key = tuple((name, arr.shape[1:], arr.dtype.str) for name, arr in sorted(feed.items()))
        future: asyncio.Future[tuple[Feed, LoadedBundle]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Item(key, feed, len(next(iter(feed.values()))), future))
        self.metrics.queue_depth.set(self._queue.qsize())
        return await future

    async def _next(self, timeout: float | None) -> _Item | None:
        if self._carry:
            return self._carry.popleft()
        assert self._queue is not None
        if timeout is None:
            return await self._queue.get()
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None

    async def _collect(self) -> list[_Item]:
        first = await self._next(None)
        assert first is not None
        batch, total = [first], first.size
        limit = self.max_batch if self.host.current.dynamic_batch else 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        skipped: list[_Item] = []
        while total < limit:
            item = await self._next(max(0.0, deadline - loop.time()))
            if item is None:
                break
            if item.key == first.key and total + item.size <= limit:
                batch.append(item)
                total += item.size
            else:
                skipped.append(item)
                if loop.time() >= deadline:
                    break
        self._carry.extend(skipped)
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            assert self._queue is not None
            self.metrics.queue_depth.set(self._queue.qsize() + len(self._carry))
            bundle = self.host.current
            self.metrics.batch_size.observe(sum(item.size for item in batch))
            try:
                outputs = await loop.run_in_executor(self._pool, bundle.run, [item.feed for item in batch])
            except Exception as exc:  # a runtime failure (or a bug) answers every request of the batch; app logs it
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            for item, out in zip(batch, outputs):
                if not item.future.done():
                    item.future.set_result((out, bundle))
