"""``phd bench envelope``: the cost of sealing and of opening + verifying one envelope.

Measured in one run, interleaved, on realistic 10-observation batches: three Blood Pressure
measurements (systolic/diastolic/mean compound plus pulse rate, user flag) and four Glucose
measurements, each encoded as the device sends it, decoded by ``phd_protocol.gatt`` and turned
into observation wire dicts exactly as the agent's sealer does, with the seven original
characteristic values as raw records. The timed loops rotate through many distinct batches
and envelopes (distinct ids, times, values, seqs), so no memo table makes a repeated input
look faster than real traffic would. Figures:

- raw primitives: one HPKE open plus one signature verify, the floor no envelope format can
  go below, with the same loaded key objects the real path reuses (the ring's X25519 key, the
  credential record's public key);
- open + verify: framing, HPKE, COSE, credential lookup, signature, payload header, standing,
  skew and replay checks; the figure the 1.3x target applies to;
- open + verify + parsed sections: the same plus parsing the observation and raw sections, as
  ingest does before storing;
- seal: payload encoding, COSE signing, HPKE sealing, framing.

Each figure is the best mean over many short timed blocks (32 calls, a few milliseconds),
the four measurements' blocks alternating: the least-disturbed block on a shared machine,
with lasting disturbances hitting all four alike. Envelopes/s per core is the reciprocal.
Both device key types are measured.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from phd_cli.cmd_bench import BenchRow

PART = "envelope"
SEAL_TARGET_US = 300.0
RATIO_TARGET = 1.3
DEVICE_ID = "0b6f7a52-3c1d-4e8f-9a0b-1c2d3e4f5a6b"
BATCHES = 256  # distinct batches rotated through by every timed loop


def sample_readings(index: int) -> list[tuple[int, bytes]]:
    """(characteristic UUID, value bytes) of the seven readings of batch ``index``."""
    from phd_protocol.gatt import (
        BloodPressureMeasurement,
        BloodPressureStatus,
        DateTime,
        GlucoseMeasurement,
        GlucoseSampleLocation,
        GlucoseType,
    )

    readings: list[tuple[int, bytes]] = []
    for r in range(3):
        i = index * 7 + r
        measurement = BloodPressureMeasurement(
            systolic=Decimal(100 + i % 60) + Decimal(i % 10) / 10,
            diastolic=Decimal(60 + i % 30),
            mean_arterial_pressure=Decimal(75 + i % 25),
            timestamp=DateTime(
                year=2026,
                month=1 + index % 12,
                day=1 + i % 28,
                hours=i % 24,
                minutes=index % 60,
                seconds=r,
            ),
            pulse_rate=Decimal(55 + i % 40),
            user_id=1,
            status=BloodPressureStatus(0),
        )
        readings.append((0x2A35, measurement.encode()))
    for r in range(4):
        i = index * 7 + r
        glucose = GlucoseMeasurement(
            sequence_number=i % 65536,
            base_time=DateTime(
                year=2026,
                month=1 + index % 12,
                day=1 + i % 28,
                hours=i % 24,
                minutes=index % 60,
                seconds=10 + r,
            ),
            time_offset=0,
            concentration=Decimal(70 + i % 120).scaleb(-5),
            type=GlucoseType.CAPILLARY_PLASMA,
            sample_location=GlucoseSampleLocation.FINGER,
        )
        readings.append((0x2A18, glucose.encode()))
    return readings


def sample_batch(
    index: int = 0, *, received_ms: int = 1_768_469_400_000
) -> tuple[list[dict[str, Any]], list[Any]]:
    """The observation wire dicts and raw records of batch ``index``, as the agent seals them."""
    from phd_protocol import gatt
    from phd_protocol.envelope import RawRecord

    received_at = datetime.fromtimestamp(received_ms / 1000, UTC)
    wire: list[dict[str, Any]] = []
    raw: list[Any] = []
    for uuid, data in sample_readings(index):
        value = gatt.decode(uuid, data)
        observations = gatt.to_observations(value, device=DEVICE_ID, received_at=received_at)
        wire.extend(o.to_wire() for o in observations)
        raw.append(RawRecord(uuid=f"{uuid:04X}", t=received_ms, b=data))
    return wire, raw


def _best_us(fns: Sequence[Callable[[], object]], loops: int, repeats: int) -> list[float]:
    """Per function, the best mean time of a block of ``loops`` calls, in µs.

    The functions' blocks alternate, ``repeats`` rounds of short blocks (a few milliseconds
    each): on a shared machine the best block of each is the least-disturbed one, and a
    disturbance lasting longer than a block hits all the functions alike.
    """
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter_ns()
            for _ in range(loops):
                fn()
            best[i] = min(best[i], (time.perf_counter_ns() - start) / loops / 1000)
    return best


def run(console: Any, quick: bool) -> list[BenchRow]:
    from phd_protocol import cbor, cose, crypto
    from phd_protocol.envelope import (
        DeviceSigner,
        IngestKey,
        KeyRing,
        hpke_info,
        open_envelope,
        seal,
    )
    from phd_protocol.policy import (
        CredentialRecord,
        ReplayWindow,
        open_and_verify,
    )

    loops, repeats = (32, 10) if quick else (32, 120)
    now = datetime.now(UTC)
    now_ms = int(now.timestamp() * 1000)
    ingest = IngestKey(kid=b"\x01" * 16, private_key=crypto.generate_hpke_key())
    ring = KeyRing([ingest])
    recipient = ingest.recipient
    batches = [sample_batch(i, received_ms=now_ms - 60_000 + i) for i in range(BATCHES)]
    n_obs = len(batches[0][0])
    phd = {"model": "BP-7000", "manufacturer": "Example", "system_id": b"\x01" * 8}
    window = ReplayWindow().accept(1)  # every seq below is fresh for it
    info = hpke_info(ingest.kid)
    rows: list[BenchRow] = []
    for alg_name, alg in (("EdDSA", crypto.COSE_EDDSA), ("ES256", crypto.COSE_ES256)):
        key = crypto.generate_signing_key(alg)
        kid = crypto.sha256(alg_name.encode())
        signer = DeviceSigner(device_id=DEVICE_ID, kid=kid, key=key)
        record = CredentialRecord(
            kid=kid,
            device_id=DEVICE_ID,
            public_key=key.public_key(),
            not_before=now - timedelta(days=1),
            not_after=now + timedelta(days=1),
        )
        lookup = {kid: record}.get
        seqs = itertools.count(2)
        to_seal = itertools.cycle(batches)

        def do_seal(
            signer: DeviceSigner = signer,
            to_seal: Any = to_seal,
            seqs: Any = seqs,
        ) -> bytes:
            observations, raw = next(to_seal)
            return seal(
                signer=signer,
                recipient=recipient,
                seq=next(seqs),
                observations=observations,
                raw=raw,
                phd=phd,
                clock=lambda: now_ms,
            )

        envelopes = [do_seal() for _ in range(BATCHES)]
        # The raw primitives' inputs, taken apart once outside the timed loop.
        primitive_inputs = []
        for envelope in envelopes:
            frame = cbor.decode(envelope, tags=frozenset())
            assert isinstance(frame, list)
            sealed = frame[2]
            assert isinstance(sealed, bytes)
            message = open_envelope(envelope, ring).message
            signed_bytes = cose.sig_structure(message.protected, message.payload)
            primitive_inputs.append((sealed, message.signature, signed_bytes))
        to_open = itertools.cycle(envelopes)
        to_check = itertools.cycle(primitive_inputs)
        public = record.public_key

        def raw_primitives(to_check: Any = to_check, public: crypto.VerifyingKey = public) -> None:
            sealed, signature, signed_bytes = next(to_check)
            crypto.hpke_open(ingest.private_key, sealed, info=info)
            crypto.verify(public, signature, signed_bytes)

        def open_verify(to_open: Any = to_open, lookup: Any = lookup) -> object:
            return open_and_verify(
                next(to_open),
                keyring=ring,
                credentials=lookup,
                received_at=now,
                replay_window=lambda _kid: window,
                decode_sections=False,
            )

        def open_verify_sections(to_open: Any = to_open, lookup: Any = lookup) -> object:
            return open_and_verify(
                next(to_open),
                keyring=ring,
                credentials=lookup,
                received_at=now,
                replay_window=lambda _kid: window,
                decode_sections=True,
            )

        size = sum(len(e) for e in envelopes) // len(envelopes)
        console.print(
            f"envelope: measuring {alg_name} ({n_obs} observations, "
            f"{size} bytes per envelope on average) ..."
        )
        raw_us, open_us, full_us, seal_us = _best_us(
            [raw_primitives, open_verify, open_verify_sections, do_seal], loops, repeats
        )
        ratio = open_us / raw_us
        rows += [
            BenchRow(PART, f"{alg_name} raw primitives (HPKE open + verify)", raw_us, "µs"),
            BenchRow(
                PART,
                f"{alg_name} open + verify",
                open_us,
                "µs",
                target=f"<= {RATIO_TARGET} x raw",
                met=ratio <= RATIO_TARGET,
            ),
            BenchRow(PART, f"{alg_name} open + verify / raw primitives", ratio, "x"),
            BenchRow(PART, f"{alg_name} open + verify + parse {n_obs} obs", full_us, "µs"),
            BenchRow(PART, f"{alg_name} open + verify per core", 1e6 / open_us, "env/s"),
            BenchRow(
                PART,
                f"{alg_name} seal ({n_obs} observations)",
                seal_us,
                "µs",
                target=f"< {SEAL_TARGET_US:.0f}",
                met=seal_us < SEAL_TARGET_US,
            ),
            BenchRow(PART, f"{alg_name} seal per core", 1e6 / seal_us, "env/s"),
        ]
    return rows
