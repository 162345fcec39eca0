"""``phd bench agent``: resident memory of the device agent serving six PHDs.

Runs the real ``phd agent run --virtual`` as a child process, with six enrolled credentials
(one per virtual PHD, certified by a throw-away PKI) and a local ingress socket that accepts
everything, lets it poll the PHDs for a while, and samples the child's VmRSS from /proc. The
number is conservative: the six virtual PHDs (bumble peripherals) live in the same process as
the agent, so their memory is counted too. Target from the issue: under 80 MB.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from phd_cli.cmd_bench import BenchRow
from phd_cli.procstat import status_kib

_ADDRESSES = [f"D0:00:00:00:00:{n:02X}" for n in range(0x10, 0x16)]  # the virtual fleet
_TARGET_MB = 80.0
_REPO = Path(__file__).resolve().parents[1]


def _prepare(root: Path) -> None:
    from device_agent.store import AgentHome, CredentialFiles, IngestKey, PhdInfo
    from hospital_server.pki.ca import init_pki, issue_device_certificate
    from hospital_server.pki.layout import PkiLayout
    from phd_protocol import crypto
    from phd_protocol.enrollment import ingest_key_id
    from phd_protocol.pki import build_device_csr

    layout = PkiLayout(root / "pki")
    init_pki(layout)
    ingest = crypto.x25519_public_raw(crypto.generate_hpke_key())
    home = AgentHome(root / "agent")
    for address in _ADDRESSES:
        key = crypto.generate_signing_key()
        device_id = uuid.uuid4()
        cert, chain = issue_device_certificate(layout, build_device_csr(key), device_id)
        home.create_credential(
            device_id=str(device_id),
            phd=PhdInfo(address=address),
            files=CredentialFiles(
                key_pem=crypto.private_key_pem(key),
                cert_pem=cert,
                chain_pem=chain,
                root_pem=layout.root_ca_cert.read_bytes(),
                ingest_keys=(IngestKey(kid=ingest_key_id(ingest), public_key=ingest),),
            ),
        )


class _Sink:
    """Accepts every envelope (a gateway with an infinitely fast outbox) and counts them."""

    def __init__(self) -> None:
        self.count = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from phd_protocol.ingress import IngressReply, IngressStatus, RequestReader, encode_reply

        requests = RequestReader()
        accepted = encode_reply(IngressReply(status=IngressStatus.ACCEPTED, reason="stored"))
        with contextlib.suppress(Exception):
            while chunk := await reader.read(65536):
                for _ in requests.feed(chunk):
                    self.count += 1
                    writer.write(accepted)
                await writer.drain()
        writer.close()


async def _measure(root: Path, seconds: float) -> dict[str, float]:
    socket = root / "ingress.sock"
    sink = _Sink()
    server = await asyncio.start_unix_server(sink, path=socket)
    command = [
        sys.executable,
        "-m",
        "phd_cli.main",
        "agent",
        "run",
        "--virtual",
        "--home",
        str(root / "agent"),
        "--gateway",
        str(socket),
        "--poll",
        "1",
    ]
    env = {**os.environ, "PYTHONPATH": str(_REPO)}
    child = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    samples: list[float] = []
    started = time.monotonic()
    try:
        while time.monotonic() - started < seconds and child.returncode is None:
            await asyncio.sleep(0.5)
            rss = status_kib(child.pid, "VmRSS") or 0.0
            if rss:
                samples.append(rss)
        peak = status_kib(child.pid, "VmHWM") or 0.0
    finally:
        with contextlib.suppress(ProcessLookupError):
            child.terminate()
        await child.wait()
        server.close()
        await server.wait_closed()
    steady = samples[-1] if samples else 0.0
    return {"steady_kb": steady, "peak_kb": peak, "envelopes": float(sink.count)}


def run(console: Any, quick: bool) -> list[BenchRow]:
    seconds = 8.0 if quick else 30.0
    with tempfile.TemporaryDirectory(prefix="phd-bench-agent-") as tmp:
        root = Path(tmp)
        console.print("agent: preparing a PKI and six credentials ...")
        _prepare(root)
        console.print(f"agent: running 'phd agent run --virtual' for {seconds:.0f}s ...")
        result = asyncio.run(_measure(root, seconds))
    steady_mb = result["steady_kb"] / 1024
    peak_mb = result["peak_kb"] / 1024
    return [
        BenchRow(
            "agent",
            "RSS with 6 PHDs (steady)",
            steady_mb,
            "MB",
            target=f"< {_TARGET_MB:.0f}",
            met=steady_mb < _TARGET_MB,
        ),
        BenchRow(
            "agent",
            "RSS with 6 PHDs (peak, VmHWM)",
            peak_mb,
            "MB",
            target=f"< {_TARGET_MB:.0f}",
            met=peak_mb < _TARGET_MB,
        ),
        BenchRow(
            "agent",
            f"envelopes handed to the gateway in {seconds:.0f}s",
            result["envelopes"],
            "count",
        ),
    ]
