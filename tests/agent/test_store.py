"""The credential store, the durable sequence counter, the spool, backoff and gateway handoff."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

import pytest

from device_agent.backoff import backoff_delay
from device_agent.errors import CredentialError, SpoolError
from device_agent.handoff import Handoff
from device_agent.spool import Spool
from device_agent.store import SEQ_BLOCK, AgentHome, Credential
from tests.agent.conftest import FakeIngress, MakeCredential


def test_backoff_grows_caps_and_jitters() -> None:
    low = [backoff_delay(n, base=1.0, cap=8.0, rand=lambda: 0.0) for n in range(6)]
    high = [backoff_delay(n, base=1.0, cap=8.0, rand=lambda: 1.0) for n in range(6)]
    assert low == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert high == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    with pytest.raises(ValueError, match="attempt"):
        backoff_delay(-1)


async def test_sequence_numbers_survive_reopen_and_are_never_reused(
    make_credential: MakeCredential,
) -> None:
    credential = await make_credential("D0:00:00:00:00:10")

    def take(c: Credential, n: int) -> list[int]:
        return [c.next_seq() for _ in range(n)]

    used = await asyncio.to_thread(take, credential, 3)
    assert used == [1, 2, 3]
    # The reservation was durable before the first number was handed out.
    state = json.loads(await asyncio.to_thread(credential.state_path.read_bytes))
    assert state["seq_reserved"] >= 3
    # A crash now (nothing else written) and a reopen: numbers continue above the block.
    reopened = await asyncio.to_thread(Credential, credential.dir)
    later = await asyncio.to_thread(take, reopened, SEQ_BLOCK + 2)
    assert min(later) > max(used)
    assert later == sorted(set(later))


async def test_key_file_is_0600_and_a_readable_key_is_refused(
    make_credential: MakeCredential,
) -> None:
    credential = await make_credential("D0:00:00:00:00:10")
    mode = stat.S_IMODE((await asyncio.to_thread(credential.key_path.stat)).st_mode)
    assert mode == 0o600
    await asyncio.to_thread(credential.key_path.chmod, 0o644)
    with pytest.raises(CredentialError, match="chmod 600"):
        await asyncio.to_thread(credential.read_key_pem)


async def test_damaged_state_is_refused(make_credential: MakeCredential) -> None:
    credential = await make_credential("D0:00:00:00:00:10")
    for bad in (b"{", b'{"v": 2}', b'{"v": 1, "device_id": "../x", "seq_reserved": 0}'):
        await asyncio.to_thread(credential.state_path.write_bytes, bad)
        with pytest.raises(CredentialError):
            await asyncio.to_thread(Credential, credential.dir)


def test_second_agent_on_one_home_is_refused(tmp_path: Path) -> None:
    home = AgentHome(tmp_path / "home")
    second = home.instance_lock()
    with home.instance_lock(), pytest.raises(CredentialError, match="another agent"):
        second.__enter__()


async def test_handoff_deletes_only_after_accepted_and_keeps_when_busy_or_down(
    tmp_path: Path, ingress: FakeIngress
) -> None:
    spool = Spool(tmp_path / "spool")
    for seq in (1, 2, 3):
        await asyncio.to_thread(spool.put, "dev-1", seq, bytes([seq]) * 10)

    down = Handoff(tmp_path / "nobody.sock", spool)
    report = await down.deliver()
    assert not report.reachable
    assert report.remaining == 3  # unreachable gateway: everything stays spooled

    ingress.busy = True
    handoff = Handoff(ingress.path, spool)
    report = await handoff.deliver()
    assert report.busy
    assert report.remaining == 3
    assert ingress.accepted == []

    ingress.busy = False
    report = await handoff.deliver()
    assert report.accepted == 3
    assert report.remaining == 0
    assert ingress.accepted == [bytes([s]) * 10 for s in (1, 2, 3)]  # oldest first


async def test_spool_refuses_a_reused_sequence_number(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    await asyncio.to_thread(spool.put, "dev-1", 7, b"x")
    with pytest.raises(SpoolError, match="spooled twice"):
        await asyncio.to_thread(spool.put, "dev-1", 7, b"y")


async def test_a_damaged_spool_file_is_set_aside_not_blocking_the_queue(
    tmp_path: Path, ingress: FakeIngress
) -> None:
    spool = Spool(tmp_path / "spool")
    for seq in (1, 2):
        await asyncio.to_thread(spool.put, "dev-1", seq, b"envelope-%d" % seq)
    first = (await asyncio.to_thread(spool.pending))[0]
    await asyncio.to_thread(first.path.write_bytes, b"")  # truncated by a failing disk
    report = await Handoff(ingress.path, spool).deliver()
    assert report.accepted == 1
    assert report.rejected == 1
    assert ingress.accepted == [b"envelope-2"]
    kept = await asyncio.to_thread(lambda: sorted(p.name for p in spool.rejected_dir.iterdir()))
    assert kept == [first.path.name, first.path.name + ".reason"]  # kept for review
