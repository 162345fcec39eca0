"""Overlap one batch's commit with the next batch's verification, inside one ingest worker.

:meth:`Ingestor.prepare` (reads, HPKE, signatures, parsing, encryption: CPU) runs in the
caller's thread; :meth:`Ingestor.commit` (the write transaction, waiting on the database's
disk and network) runs in one committer thread, in submission order, and then calls
``on_done(token, results)``, where the ingest worker publishes the ack and only then
acknowledges the message to the broker. So a batch's answer still follows its durable commit
(nothing is acked before it is stored); what changes is that the worker verifies batch N+1
while the database writes batch N, instead of leaving the CPU idle during every commit.

At most ``depth`` prepared batches wait for the committer (back pressure on the caller).
An exception in the committer stops the pipeline and is raised again by the next
:meth:`submit` or by :meth:`close`: a worker never carries on past a database failure it did
not classify. Never logs content.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from hospital_server.db import SessionFactory
from hospital_server.ingest.process import Ingestor, PreparedBatch
from phd_protocol.wire import EnvelopeResult

__all__ = ["IngestPipeline", "PipelineStopped"]

T = TypeVar("T")


class PipelineStopped(Exception):  # noqa: N818 -- a state, not an error condition of its own
    """The committer has stopped (closed, or failed: the failure is the ``__cause__``)."""


class IngestPipeline(Generic[T]):
    def __init__(
        self,
        sessions: SessionFactory,
        ingestor: Ingestor,
        on_done: Callable[[T, list[EnvelopeResult]], None],
        *,
        depth: int = 1,
    ) -> None:
        self._sessions = sessions
        self._ingestor = ingestor
        self._on_done = on_done
        self._queue: queue.Queue[tuple[T, PreparedBatch] | None] = queue.Queue(maxsize=depth)
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._commit_loop, name="ingest-commit")
        self._thread.daemon = True
        self._thread.start()

    def submit(self, token: T, gateway_id: str, envelopes: Sequence[bytes]) -> None:
        """Prepare a batch here and queue it for commit; ``on_done(token, ...)`` follows."""
        self._raise_failure()
        with self._sessions() as session:
            prepared = self._ingestor.prepare(session, gateway_id, envelopes)
        while True:
            try:
                self._queue.put((token, prepared), timeout=0.5)
                return
            except queue.Full:
                self._raise_failure()  # the committer died while we waited for room

    def flush(self) -> None:
        """Wait until every submitted batch is committed and answered (keeps acks in order
        when the caller answers something itself, such as a malformed batch)."""
        self._queue.join()
        self._raise_failure()

    def close(self, timeout: float = 30.0) -> None:
        """Commit and answer what was submitted, then stop the committer."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)
        self._raise_failure()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise PipelineStopped("ingest committer stopped") from self._failure

    def _commit_loop(self) -> None:
        try:
            while (item := self._queue.get()) is not None:
                try:
                    token, prepared = item
                    with self._sessions() as session:
                        results = self._ingestor.commit(session, prepared)
                    self._on_done(token, results)
                finally:
                    self._queue.task_done()
            self._queue.task_done()  # the close marker
        except BaseException as exc:  # noqa: BLE001 -- handed to the submitting thread
            self._failure = exc
            # Unblock a submitter waiting for room or a flush; nothing more is committed
            # (the broker still holds those messages unacknowledged and redelivers them).
            while True:
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
                self._queue.task_done()
