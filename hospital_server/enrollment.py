"""Server side of enrollment and renewal: redeem a one-time code, certify a CSR, store it.

The agent proves it holds the code (phd_protocol.enrollment: handle lookup, peppered HMAC,
attempt counting and locking) and the key (CSR proof of possession, checked by the PKI). The
certificate names only the device id; the patient binding stays in this database. A renewal
is signed by the current credential, which must be neither revoked nor expired here; the old
credential stays valid until it expires (envelopes sealed before the switch still verify).

The service commits its own transactions because a failed code attempt must be persisted
(the attempt counter) even though the request is refused. Errors are
:class:`phd_protocol.enrollment.EnrollmentError` with a public reason; nothing is logged but
ids.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import datetime

from sqlmodel import Session, col, select

from hospital_server import audit
from hospital_server.fieldcrypt import PatientKeys, encrypt_field
from hospital_server.ingest.keyring import recipient_keys
from hospital_server.models import (
    Credential,
    Device,
    DeviceStatus,
    EnrollmentCode,
    Patient,
    PatientStatus,
    utcnow,
)
from hospital_server.pki.ca import issue_device_certificate
from hospital_server.pki.layout import PkiLayout
from hospital_server.security import certificate_der_to_pem
from phd_protocol.enrollment import (
    CodeRecord,
    CodeState,
    EnrollmentError,
    EnrollmentReason,
    EnrollmentRequest,
    EnrollmentResponse,
    IngestKey,
    PhdInfo,
    RenewalRequest,
    ReplayWindow,
    attempt_code,
    code_handle,
    verify_renewal,
)
from phd_protocol.pki import (
    CertificateError,
    certificate_der,
    certificate_kid,
    load_certificate,
    serial_hex,
)

__all__ = ["EnrollmentService"]

_E = EnrollmentReason


class EnrollmentService:
    def __init__(
        self,
        *,
        layout: PkiLayout,
        keys: PatientKeys,
        pepper: bytes,
        clock: Callable[[], datetime] = utcnow,
        replay: ReplayWindow | None = None,
    ) -> None:
        self.layout = layout
        self.keys = keys
        self.pepper = pepper
        self.clock = clock
        # Renewal nonces seen in the last few minutes. Per process: a replay to another
        # server process within the skew window is still refused by that process's own
        # window only if it saw the nonce; the short skew bounds the exposure.
        self.replay = replay or ReplayWindow()

    # ------------------------------------------------------------------ enroll

    def enroll(self, session: Session, request: EnrollmentRequest) -> EnrollmentResponse:
        now = self.clock()
        handle = code_handle(request.code)
        rows = list(
            session.exec(
                select(EnrollmentCode)
                .where(EnrollmentCode.handle == handle)
                .order_by(col(EnrollmentCode.id).desc())
            )
        )
        if not rows:
            raise EnrollmentError(_E.CODE_INVALID)
        # Live codes have unique handles; otherwise the newest dead one gives the reason.
        row = next((r for r in rows if r.state == CodeState.ISSUED.value), rows[0])
        attempt = attempt_code(_record(row), request.code, pepper=self.pepper, now=now)
        row.state = attempt.record.state.value
        row.failed_attempts = attempt.record.failed_attempts
        session.add(row)
        if attempt.error is not None:
            session.commit()  # the attempt counts even though the request is refused
            raise EnrollmentError(attempt.error)
        device = session.get(Device, row.device_id)
        patient = session.get(Patient, device.patient_id) if device else None
        if (
            device is None
            or patient is None
            or device.status != DeviceStatus.PENDING
            or patient.status != PatientStatus.ACTIVE
        ):
            session.rollback()
            raise EnrollmentError(_E.CODE_CANCELLED)
        response = self._issue(session, device, request.csr_pem, now)
        device.status = DeviceStatus.ENROLLED
        device.enrolled_at = now
        device.info_ct = self._seal_info(session, device, request.phd)
        session.add(device)
        audit.record(session, "device.enrolled", actor=device.id, subject=device.id)
        session.commit()
        return response

    # ------------------------------------------------------------------ renew

    def renew(self, session: Session, request: RenewalRequest) -> EnrollmentResponse:
        now = self.clock()
        current = session.get(Credential, request.cert_kid.hex())
        if current is None or current.device_id != str(request.device_id):
            raise EnrollmentError(_E.WRONG_CREDENTIAL, "unknown credential")
        device = session.get(Device, current.device_id)
        if (
            device is None
            or device.status != DeviceStatus.ENROLLED
            or current.revoked_at is not None
            or not current.not_before <= now <= current.not_after
        ):
            # A revoked or expired credential cannot renew: it must enroll with a new code.
            raise EnrollmentError(_E.WRONG_CREDENTIAL, "credential not in good standing")
        certificate = load_certificate(certificate_der_to_pem(current.cert_der))
        verify_renewal(request, certificate, now=now, replay=self.replay)
        response = self._issue(session, device, request.csr_pem, now)
        audit.record(session, "device.enrolled", actor=device.id, subject=device.id, renewal=True)
        session.commit()
        return response

    # ------------------------------------------------------------------ helpers

    def _issue(
        self, session: Session, device: Device, csr_pem: bytes, now: datetime
    ) -> EnrollmentResponse:
        try:
            cert_pem, chain_pem = issue_device_certificate(
                self.layout, csr_pem, uuid.UUID(device.id), now=now
            )
        except CertificateError as exc:
            session.rollback()
            raise EnrollmentError(_E.BAD_CSR) from exc
        cert = load_certificate(cert_pem)
        session.add(
            Credential(
                kid=certificate_kid(cert).hex(),
                device_id=device.id,
                serial=serial_hex(cert),
                cert_der=certificate_der(cert),
                not_before=cert.not_valid_before_utc,
                not_after=cert.not_valid_after_utc,
                issued_at=now,
            )
        )
        keys = tuple(IngestKey(kid=k, public_key=p) for k, p in recipient_keys(self.layout))
        return EnrollmentResponse(
            device_id=uuid.UUID(device.id),
            certificate_pem=cert_pem,
            chain_pem=chain_pem,
            root_pem=self.layout.root_ca_cert.read_bytes(),
            ingest_keys=keys,
        )

    def _seal_info(self, session: Session, device: Device, info: PhdInfo) -> bytes:
        dek = self.keys.get(session, device.patient_id)
        return encrypt_field(
            dek,
            json.dumps(info.to_dict(), sort_keys=True).encode(),
            table="device",
            column="info",
            row_id=device.id,
            patient_id=device.patient_id,
        )


def _record(row: EnrollmentCode) -> CodeRecord:
    return CodeRecord(
        handle=row.handle,
        code_hash=bytes.fromhex(row.code_hash),
        issued_at=row.issued_at,
        expires_at=row.expires_at,
        state=CodeState(row.state),
        failed_attempts=row.failed_attempts,
        max_attempts=row.max_attempts,
    )
