"""asyncio face of the outbox: one worker thread owns the SQLite connection; group commit.

SQLite calls block, so none runs on the event loop. Every call is shipped to a single
dedicated thread (SQLite connections belong to one thread). Envelopes from concurrent ingress
connections are gathered while the previous commit runs and stored in one transaction, so one
fsync covers many agents: that is what makes ``synchronous=FULL`` affordable.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from mobile_gateway.errors import OutboxError, OutboxFullError
from mobile_gateway.outbox import ClaimedEntry, DeadLetter, Outbox, OutboxStats, Settlement

__all__ = ["AsyncOutbox"]

T = TypeVar("T")

MAX_GROUP = 512  # envelopes per group commit; bounds one transaction's size and latency


class AsyncOutbox:
    def __init__(self, executor: ThreadPoolExecutor, outbox: Outbox) -> None:
        self._executor = executor
        self._outbox = outbox
        self._waiting: list[tuple[bytes, asyncio.Future[int]]] = []
        self._flusher: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        max_entries: int,
        max_bytes: int,
        clock: Callable[[], float] = time.time,
    ) -> AsyncOutbox:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        loop = asyncio.get_running_loop()
        try:
            outbox = await loop.run_in_executor(
                executor,
                functools.partial(
                    Outbox, path, max_entries=max_entries, max_bytes=max_bytes, clock=clock
                ),
            )
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(executor, outbox)

    async def _run(self, fn: Callable[[], T]) -> T:
        # Shielded: once submitted, an outbox write runs even if the task awaiting it is
        # cancelled. Without it, a session ending while a settle waits in the executor's queue
        # cancels the queued job; the uplink has already dropped the batch from its books, so
        # its entries stayed in flight until the next restart (seen in tests/e2e/test_faults).
        job = asyncio.get_running_loop().run_in_executor(self._executor, fn)
        return await asyncio.shield(job)

    @property
    def depth(self) -> int:
        """Pending + in flight; maintained by the worker, read without a round trip."""
        return self._outbox.depth

    async def put(self, envelope: bytes) -> int:
        """Durably store one envelope; raises OutboxFullError when capacity refuses it."""
        return await self.submit(envelope)

    def submit(self, envelope: bytes) -> asyncio.Future[int]:
        """Queue one envelope for the next group commit; the future resolves to its entry id
        after the commit, or raises OutboxFullError / OutboxError. The envelope is stored
        whether or not anyone still awaits the future (a plain future, no task per envelope:
        ingress calls this once per request)."""
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting.append((envelope, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="outbox-group-commit")
        return fut

    async def _flush(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting[:MAX_GROUP], self._waiting[MAX_GROUP:]
            envs = [e for e, _ in group]
            try:
                ids = await self._run(functools.partial(self._outbox.put_many, envs))
            except OutboxError as exc:
                for _, fut in group:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, fut), entry_id in zip(group, ids, strict=True):
                if fut.done():
                    continue  # the agent went away; the envelope is stored all the same
                if entry_id is None:
                    fut.set_exception(
                        OutboxFullError(self._outbox.depth, self._outbox.bytes_queued)
                    )
                else:
                    fut.set_result(entry_id)

    async def claim(self, *, batch_id: str, max_count: int, max_bytes: int) -> list[ClaimedEntry]:
        return await self._run(
            functools.partial(
                self._outbox.claim, batch_id=batch_id, max_count=max_count, max_bytes=max_bytes
            )
        )

    async def settle(
        self, settlements: Iterable[Settlement], meta: dict[str, str] | None = None
    ) -> int:
        items = list(settlements)
        return await self._run(functools.partial(self._outbox.settle, items, meta))

    async def set_meta(self, values: dict[str, str]) -> None:
        await self._run(functools.partial(self._outbox.set_meta, dict(values)))

    async def next_due(self) -> float | None:
        return await self._run(self._outbox.next_due)

    async def stats(self) -> OutboxStats:
        return await self._run(self._outbox.stats)

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        return await self._run(functools.partial(self._outbox.dead_letters, limit))

    async def close(self) -> None:
        if self._flusher is not None:
            await self._flusher
        try:
            await self._run(self._outbox.close)
        finally:
            self._executor.shutdown(wait=False)
