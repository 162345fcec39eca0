"""Test helpers for ingest: a hospital PKI, an enrolled device with a real credential, sealing.

Everything is real: the PKI is made by ``hospital_server.pki.ca.init_pki``, the device key is
generated here, the CSR goes through :class:`hospital_server.enrollment.EnrollmentService`,
and envelopes are sealed with ``phd_protocol.envelope.seal`` to the hospital ingest key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from hospital_server.context import ServerContext
from hospital_server.devices import register_device
from hospital_server.enrollment import EnrollmentService
from hospital_server.ingest.keyring import load_keyring
from hospital_server.ingest.process import Ingestor
from hospital_server.models import ConsentKind, PatientCreate
from hospital_server.patients import create_patient, record_consent
from hospital_server.pki.layout import PkiLayout
from phd_protocol import crypto, mdc
from phd_protocol.enrollment import EnrollmentRequest, PhdInfo
from phd_protocol.envelope import DeviceSigner, KeyRing, RawRecord, RecipientKey, seal
from phd_protocol.observation import Component, Observation, TimeSource
from phd_protocol.pki import build_device_csr, certificate_kid, load_certificate

RAW_BP = bytes.fromhex("1e780050005a00")  # a Blood Pressure Measurement value, as received


@dataclass
class EnrolledDevice:
    device_id: str
    patient_id: str
    signer: DeviceSigner
    serial: str
    seq: int = 0

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq


@dataclass
class World:
    ctx: ServerContext
    layout: PkiLayout
    keyring: KeyRing
    recipient: RecipientKey
    enrollment: EnrollmentService
    ingestor: Ingestor
    devices: list[EnrolledDevice] = field(default_factory=list)

    def enroll(
        self,
        *,
        mrn: str,
        consent: bool = True,
        name: str = "Test Patient",
        born: date | None = None,
        contact: str | None = None,
        serial: str = "SN-12345",
    ) -> EnrolledDevice:
        with self.ctx.sessions() as s:
            patient = create_patient(
                s,
                self.ctx.keys,
                PatientCreate(name=name, mrn=mrn, date_of_birth=born, contact=contact),
                actor="admin",
            )
            if consent:
                record_consent(s, patient.id, ConsentKind.COLLECTION, granted=True, actor="admin")
            reg = register_device(
                s,
                patient.id,
                "blood_pressure",
                actor="admin",
                ttl=timedelta(minutes=15),
                pepper=self.ctx.code_pepper,
                max_attempts=5,
            )
            s.commit()
            pid = patient.id
        key = crypto.generate_signing_key()
        request = EnrollmentRequest(
            code=reg.code,
            csr_pem=build_device_csr(key),
            phd=PhdInfo(model="BP-1", serial=serial, manufacturer="Acme"),
        )
        with self.ctx.sessions() as s:
            response = self.enrollment.enroll(s, request)
        cert = load_certificate(response.certificate_pem)
        signer = DeviceSigner(device_id=str(response.device_id), kid=certificate_kid(cert), key=key)
        device = EnrolledDevice(
            device_id=str(response.device_id),
            patient_id=pid,
            signer=signer,
            serial=format(cert.serial_number, "x"),
        )
        self.devices.append(device)
        return device

    def seal(
        self,
        device: EnrolledDevice,
        observations: list[dict[str, Any]] | None = None,
        *,
        seq: int | None = None,
        ts: datetime | None = None,
        recipient: RecipientKey | None = None,
    ) -> bytes:
        moment = ts or datetime.now(UTC)
        return seal(
            signer=device.signer,
            recipient=recipient or self.recipient,
            seq=device.next_seq() if seq is None else seq,
            observations=observations if observations is not None else [bp(device)],
            raw=[RawRecord(uuid="2A35", t=int(moment.timestamp() * 1000), b=RAW_BP)],
            phd={"model": "BP-1"},
            clock=lambda: int(moment.timestamp() * 1000),
        )


def bp(
    device: EnrolledDevice,
    systolic: str = "120",
    diastolic: str = "80",
    *,
    at: datetime | None = None,
) -> dict[str, Any]:
    """A blood pressure observation wire dict (compound: systolic/diastolic)."""
    obs = Observation.create(
        device=device.device_id,
        mdc_code=mdc.PRESS_BLD_NONINV.code,
        value=None,
        components=(
            Component(mdc_code=mdc.PRESS_BLD_NONINV_SYS.code, value=Decimal(systolic)),
            Component(mdc_code=mdc.PRESS_BLD_NONINV_DIA.code, value=Decimal(diastolic)),
        ),
        unit="mm[Hg]",
        unit_mdc=mdc.DIM_MMHG.code,
        time=at or datetime(2026, 11, 1, 8, 30, tzinfo=UTC),
        time_source=TimeSource.DEVICE,
    )
    return obs.to_wire()


def temperature(device: EnrolledDevice, value: Any, *, minute: int = 0) -> dict[str, Any]:
    obs = Observation.create(
        device=device.device_id,
        mdc_code=mdc.TEMP_BODY.code,
        value=value,
        unit="Cel",
        unit_mdc=mdc.DIM_DEGC.code,
        time=datetime(2026, 11, 1, 9, minute, tzinfo=UTC),
        time_source=TimeSource.DEVICE,
    )
    return obs.to_wire()


def build_world(ctx: ServerContext, layout: PkiLayout) -> World:
    keyring = load_keyring(layout)
    recipient = keyring.keys[0].recipient
    enrollment = EnrollmentService(layout=layout, keys=ctx.keys, pepper=ctx.code_pepper)
    ingestor = Ingestor(keyring=keyring, keys=ctx.keys, metrics=ctx.metrics)
    return World(
        ctx=ctx,
        layout=layout,
        keyring=keyring,
        recipient=recipient,
        enrollment=enrollment,
        ingestor=ingestor,
    )
