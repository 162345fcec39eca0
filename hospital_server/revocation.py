"""What a revocation does outside the database: the CA's CRLs and the broker's live sessions.

:class:`PkiBrokerRevocations` implements :class:`hospital_server.context.Revocations` with the
hospital CA (``hospital_server.pki.ca.revoke``, which also regenerates every CRL and the bundle
mosquitto reads) and the broker's dynamic-security control (``hospital_server.broker.control``:
remove the gateway's role and disable it, which kicks its live session at once), then SIGHUPs
the broker so new TLS handshakes see the fresh CRL. The database is updated first by the
caller, so ingest refuses a revoked gateway's relays even while the broker is unreachable.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hospital_server.broker.control import ControlSettings, disable_gateway, reload_broker
from hospital_server.pki.ca import revoke
from hospital_server.pki.errors import UnknownCertificateError
from hospital_server.pki.layout import PkiLayout

__all__ = ["PkiBrokerRevocations"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class PkiBrokerRevocations:
    layout: PkiLayout
    control: ControlSettings | None = None  # None: no broker to tell (e.g. API-only tests)
    broker_pid_file: Path | None = None

    def revoke_certificates(self, serials: Sequence[str], *, reason: str) -> None:
        for serial in serials:
            try:
                revoke(self.layout, serial, reason)
            except UnknownCertificateError:
                log.info("certificate %s already revoked or unknown to the CA", serial)

    def revoke_gateway(self, gateway_id: str, *, reason: str) -> None:
        try:
            revoke(self.layout, gateway_id, reason)
        except UnknownCertificateError:
            log.info("gateway %s has no unrevoked certificate at the CA", gateway_id)
        if self.control is not None:
            disable_gateway(self.control, gateway_id)
        if self.broker_pid_file is not None and self.broker_pid_file.exists():
            reload_broker(self.broker_pid_file)
