"""Outbox state machine, durability across reopen (crash recovery), capacity and dead letters."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from mobile_gateway.errors import OutboxFullError
from mobile_gateway.outbox import (
    TRANSITIONS,
    EntryEvent,
    EntryState,
    Outbox,
    Settlement,
    open_readonly,
    read_stats,
)
from mobile_gateway.store import AsyncOutbox


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_claim_ack_lifecycle(tmp_path: Path) -> None:
    clock = Clock()
    box = Outbox(tmp_path / "o.db", clock=clock)
    ids = box.put_many([b"a", b"bb", b"ccc", b"dddd"])
    assert ids == [1, 2, 3, 4]
    batch = box.claim(batch_id="b1", max_count=10, max_bytes=1000)
    assert [e.envelope for e in batch] == [b"a", b"bb", b"ccc", b"dddd"]
    # A PUBACK is not an ack: nothing changes until settle().
    assert box.stats().in_flight == 4
    changed = box.settle(
        [
            Settlement(entry_id=1, event=EntryEvent.STORED),
            Settlement(entry_id=2, event=EntryEvent.DUPLICATE),
            Settlement(entry_id=3, event=EntryEvent.REJECTED_PERMANENT, reason="bad_signature"),
            Settlement(entry_id=4, event=EntryEvent.RETRY, delay=5.0),
        ]
    )
    assert changed == 4
    stats = box.stats()
    assert (stats.pending, stats.in_flight, stats.dead, stats.done_total) == (1, 0, 1, 2)
    assert box.depth == 1
    assert [(d.entry_id, d.reason) for d in box.dead_letters()] == [(3, "bad_signature")]
    # Backoff honoured: not due yet, then due.
    assert box.claim(batch_id="b2", max_count=10, max_bytes=1000) == []
    clock.now += 5.0
    (again,) = box.claim(batch_id="b3", max_count=10, max_bytes=1000)
    assert (again.entry_id, again.envelope, again.attempts) == (4, b"dddd", 2)
    assert box.purge_dead() == 1
    box.close()


def test_batch_bounded_by_count_and_bytes(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    box.put_many([b"x" * 100] * 10)
    assert len(box.claim(batch_id="a", max_count=3, max_bytes=10_000)) == 3
    assert len(box.claim(batch_id="b", max_count=100, max_bytes=250)) == 2
    box.close()


def test_in_flight_recovered_as_pending_on_reopen(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    box = Outbox(path)
    box.put_many([b"one", b"two"])
    box.claim(batch_id="b", max_count=10, max_bytes=100)
    box._db.close()  # simulate a crash: no checkpoint, no clean close
    again = Outbox(path)
    assert again.stats().pending == 2
    assert [e.envelope for e in again.claim(batch_id="c", max_count=10, max_bytes=100)] == [
        b"one",
        b"two",
    ]
    again.close()


def test_survives_kill_9_after_put_returned(tmp_path: Path) -> None:
    # A child process stores envelopes, reports, then is SIGKILLed: every reported id survives.
    path = tmp_path / "o.db"
    code = (
        "import sys, os, time\n"
        "from pathlib import Path\n"
        "from mobile_gateway.outbox import Outbox\n"
        f"box = Outbox(Path({str(path)!r}))\n"
        "for i in range(50):\n"
        "    box.put(b'env-%d' % i)\n"
        "print('stored', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "stored"
    proc.kill()
    proc.wait()
    proc.stdout.close()
    box = Outbox(path)
    got = [e.envelope for e in box.claim(batch_id="x", max_count=100, max_bytes=10_000)]
    assert got == [b"env-%d" % i for i in range(50)]
    box.close()


def test_capacity_refuses_new_never_drops(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", max_entries=3, max_bytes=1000)
    assert box.put_many([b"1", b"2", b"3", b"4"]) == [1, 2, 3, None]
    with pytest.raises(OutboxFullError):
        box.put(b"5")
    assert box.stats().pending == 3
    box.settle([Settlement(entry_id=1, event=EntryEvent.STORED)])
    assert box.put(b"6") == 4
    byte_box = Outbox(tmp_path / "b.db", max_entries=100, max_bytes=10)
    assert byte_box.put_many([b"x" * 6, b"y" * 6]) == [1, None]
    box.close()
    byte_box.close()


def test_late_ack_for_expired_batch_still_settles(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    box.put(b"a")
    box.claim(batch_id="b1", max_count=1, max_bytes=10)
    box.settle([Settlement(entry_id=1, event=EntryEvent.TIMEOUT, delay=0)])
    assert box.stats().pending == 1
    assert box.settle([Settlement(entry_id=1, event=EntryEvent.STORED)]) == 1
    assert box.depth == 0
    # Terminal: a second ack changes nothing.
    assert box.settle([Settlement(entry_id=1, event=EntryEvent.STORED)]) == 0
    box.close()


def test_illegal_moves_are_ignored(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    box.put(b"a")
    assert box.settle([Settlement(entry_id=1, event=EntryEvent.RETRY)]) == 0
    assert (EntryState.DEAD, EntryEvent.STORED) not in TRANSITIONS
    # settle ends entries with one DELETE per ack: every event that ends one ends the same states
    ending = {
        ev: {st for (st, e), nxt in TRANSITIONS.items() if e is ev and nxt is EntryState.DONE}
        for (_, ev), nxt in TRANSITIONS.items()
        if nxt is EntryState.DONE
    }
    assert len({frozenset(states) for states in ending.values()}) == 1
    # ... and settle honours it: a dead entry acked "stored" with others stays dead, the
    # others go, and the byte count follows exactly.
    box.put_many([b"bb", b"ccc"])
    box.claim(batch_id="b1", max_count=3, max_bytes=100)
    box.settle([Settlement(entry_id=1, event=EntryEvent.REJECTED_PERMANENT, reason="x")])
    changed = box.settle([Settlement(entry_id=i, event=EntryEvent.STORED) for i in (1, 2, 3, 99)])
    assert changed == 2
    assert [d.entry_id for d in box.dead_letters()] == [1]
    assert (box.depth, box.bytes_queued, box.stats().done_total) == (0, 0, 2)
    with pytest.raises(ValueError, match="reason"):
        Settlement(entry_id=1, event=EntryEvent.REJECTED_PERMANENT)
    box.close()


def test_file_mode_and_readonly_status(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    box = Outbox(path)
    box.put(b"a")
    box.set_meta({"link_state": "connected"})
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    ro = open_readonly(path)
    stats = read_stats(ro)
    assert stats.pending == 1
    assert stats.meta["link_state"] == "connected"
    ro.close()
    box.close()


async def test_async_group_commit(tmp_path: Path) -> None:
    box = await AsyncOutbox.open(tmp_path / "o.db", max_entries=150, max_bytes=1 << 20)
    results = await asyncio.gather(
        *(box.put(b"e%d" % i) for i in range(200)), return_exceptions=True
    )
    stored = [r for r in results if isinstance(r, int)]
    refused = [r for r in results if isinstance(r, OutboxFullError)]
    assert len(stored) == 150
    assert len(refused) == 50
    assert box.depth == 150
    assert (await box.stats()).pending == 150
    await box.close()
