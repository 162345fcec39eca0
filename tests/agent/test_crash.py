"""kill -9 in the middle of a stored-record download, then restart: nothing lost, no seq reused.

The agent runs as a real subprocess (``phd agent run --virtual``) with its virtual glucose meter
sending 60 stored records slowly; the test's ingress plays the gateway. After SIGKILL the same
command runs again to completion. The hospital-side view (every envelope opened and its
signature checked) must hold every record, and envelope sequence numbers must be unique and
strictly increasing across both runs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from device_agent.store import AgentHome
from phd_protocol import cose
from phd_protocol.envelope import Payload, open_envelope
from phd_protocol.pki import certificate_public_key, load_certificate
from tests.agent.conftest import FakeIngress, Hospital, MakeCredential

_REPO = Path(__file__).resolve().parents[2]
RECORDS = 60
METER = "D0:00:00:00:00:11"  # the virtual fleet's glucose meter (second device started)


def _command(home: Path, socket: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "phd_cli.main",
        "agent",
        "run",
        "--virtual",
        "--home",
        str(home),
        "--gateway",
        str(socket),
        "--virtual-records",
        str(RECORDS),
        "--virtual-record-interval",
        "0.03",
        "--batch-max",
        "5",
        "--once",
    ]


def _received(hospital: Hospital, cert_pem: bytes, envelopes: list[bytes]) -> list[Payload]:
    public = certificate_public_key(load_certificate(cert_pem))
    out = []
    for envelope in envelopes:
        message = open_envelope(envelope, hospital.ring).message
        cose.verify_sign1(message, public)
        out.append(Payload.decode(message.payload))
    return out


async def _wait_for(predicate: object, seconds: float) -> None:
    assert callable(predicate)
    deadline = asyncio.get_running_loop().time() + seconds
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_kill_9_mid_transfer_then_restart_loses_nothing(
    agent_home: AgentHome,
    make_credential: MakeCredential,
    ingress: FakeIngress,
    hospital: Hospital,
) -> None:
    credential = await make_credential(METER, kind="glucose")
    env = {**os.environ, "PYTHONPATH": str(_REPO)}
    command = _command(agent_home.root, ingress.path)

    first = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    await _wait_for(lambda: len(ingress.accepted) >= 2, 60)
    first.send_signal(signal.SIGKILL)
    assert await first.wait() == -signal.SIGKILL
    after_kill = len(ingress.accepted)

    second = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(second.communicate(), 90)
    assert second.returncode == 0, stderr.decode(errors="replace")[-2000:]

    cert_pem = await asyncio.to_thread(credential.cert_path.read_bytes)
    payloads = await asyncio.to_thread(_received, hospital, cert_pem, list(ingress.accepted))

    def glucose_records(batch: list[Payload]) -> set[int]:
        return {
            int.from_bytes(r.b[1:3], "little")
            for p in batch
            for r in p.raw_records()
            if r.uuid == "2A18"
        }

    records = glucose_records(payloads)
    first_run = [p.seq for p in payloads[:after_kill]]
    assert len(glucose_records(payloads[:after_kill])) < RECORDS  # killed mid-transfer
    assert records == set(range(1, RECORDS + 1))  # nothing lost
    # A sequence number may arrive twice only as the *same* envelope: killed after the
    # gateway's "accepted" but before the spool file was deleted, the agent re-sends it
    # (at-least-once; the hospital deduplicates on (device, seq)). Two different envelopes
    # under one number would be a reuse.
    by_seq: dict[int, set[bytes]] = {}
    for payload, envelope in zip(payloads, ingress.accepted, strict=True):
        by_seq.setdefault(payload.seq, set()).add(envelope)
    assert all(len(envelopes) == 1 for envelopes in by_seq.values()), "sequence number reused"
    new_after_restart = [p.seq for p in payloads[after_kill:] if p.seq not in set(first_run)]
    assert new_after_restart
    assert min(new_after_restart) > max(first_run)  # the restart continued above the old ones
    assert await asyncio.to_thread(lambda: list(agent_home.spool_dir.glob("*.env"))) == []
