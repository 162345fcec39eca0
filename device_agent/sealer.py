"""Turns a batch of readings from one PHD into one sealed envelope (phd_protocol.envelope).

Decoding: each reading goes through ``phd_protocol.gatt``; a value that does not decode is a
:class:`~device_agent.errors.DeviceDataError` for that reading only (counted and logged by
UUID, never by content); its original bytes still travel in ``raw`` so nothing read from the
device is lost, and the other readings of the batch are unaffected. Device-timed observations
are corrected by the connection's clock offset with ``apply_clock_correction`` (both times
kept, flagged) when the offset exceeds the tolerance.

Order of durable steps, which is what makes a crash harmless: the sequence number is persisted
(:meth:`Credential.next_seq`) before sealing; the envelope is in the spool (fsynced) before the
RACP cursor moves past the records it holds. This module does no BLE and no socket I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import cast

from device_agent.ble import Reading
from device_agent.errors import CredentialError, DeviceDataError
from device_agent.store import Credential
from phd_protocol import crypto
from phd_protocol.envelope import DeviceSigner, RawRecord, RecipientKey, seal
from phd_protocol.errors import ParseError, PhdProtocolError
from phd_protocol.gatt import decode, to_observations
from phd_protocol.observation import Observation, apply_clock_correction
from phd_protocol.pki.ident import certificate_kid, load_certificate

__all__ = ["CLOCK_TOLERANCE", "SealedBatch", "Sealer", "observations_for"]

logger = logging.getLogger(__name__)

# Device clocks tick in whole seconds and the connection takes a moment: offsets below this are
# noise, not a wrong clock, and are not applied.
CLOCK_TOLERANCE = timedelta(seconds=30)
# Characteristics the agent forwards but which carry no observation of their own.
_DESCRIPTIVE = frozenset({0x2A34})  # Glucose Measurement Context rides along in raw


@dataclass(frozen=True, slots=True)
class SealedBatch:
    seq: int
    envelope: bytes
    observations: int
    undecodable: int


def observations_for(
    reading: Reading, *, device_id: str, clock_offset: timedelta | None
) -> tuple[Observation, ...]:
    """Decode one reading into observations; DeviceDataError when its bytes are not to spec."""
    try:
        value = decode(reading.uuid, reading.data)
    except ParseError as exc:
        raise DeviceDataError(reading.uuid, str(exc)) from None
    observations = to_observations(value, device=device_id, received_at=reading.received_at)
    if clock_offset is not None and abs(clock_offset) >= CLOCK_TOLERANCE:
        observations = tuple(apply_clock_correction(o, clock_offset) for o in observations)
    return observations


class Sealer:
    """Seals batches for one credential; loads its key and certificate once."""

    def __init__(self, credential: Credential) -> None:
        self.credential = credential
        try:
            key = cast("crypto.SigningKey", crypto.load_private_key_pem(credential.read_key_pem()))
            crypto.signature_algorithm(key)  # refuses an X25519 (encryption-only) key
            cert = load_certificate(credential.cert_path.read_bytes())
            self.signer = DeviceSigner(
                device_id=credential.device_id, kid=certificate_kid(cert), key=key
            )
        except (OSError, ValueError, AttributeError, PhdProtocolError) as exc:
            raise CredentialError(f"{credential.dir.name}: key or certificate unusable") from exc
        keys = credential.read_ingest_keys()
        # The first key is the hospital's current one; the others remain only during rotation.
        self.recipient = RecipientKey.from_raw(keys[0].kid, keys[0].public_key)

    def seal(
        self,
        readings: Sequence[Reading],
        *,
        clock_offset: timedelta | None,
        phd: dict[str, str],
    ) -> SealedBatch:
        """Blocking (fsync of the sequence counter): run in a worker thread."""
        wire: list[dict[str, object]] = []
        undecodable = 0
        for reading in readings:
            if reading.uuid in _DESCRIPTIVE:
                continue
            try:
                observations = observations_for(
                    reading, device_id=self.credential.device_id, clock_offset=clock_offset
                )
            except DeviceDataError as exc:
                undecodable += 1
                logger.warning(
                    "device %s sent an undecodable value: %s", self.credential.device_id, exc
                )
                continue
            wire.extend(o.to_wire() for o in observations)
        raw = [
            RawRecord(
                uuid=f"{r.uuid:04X}",
                t=int(r.received_at.timestamp() * 1000),
                b=r.data[:512],
            )
            for r in readings
        ]
        seq = self.credential.next_seq()  # durable before use
        envelope = seal(
            signer=self.signer,
            recipient=self.recipient,
            seq=seq,
            observations=wire,
            raw=raw,
            phd=phd,
        )
        return SealedBatch(seq, envelope, len(wire), undecodable)
