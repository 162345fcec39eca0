"""Everything a running server holds, built once from settings: the composition root.

``ServerContext.build(settings)`` opens the engine and loads the key file; the app factory and
the ingest workers receive a context instead of reaching for globals. Side effects outside the
database (certificate revocation, CRLs, the broker) sit behind :class:`Revocations`, so the
API route commits first and tells the PKI and the broker after.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy.engine import Engine

from hospital_server.db import SessionFactory, make_engine, make_session_factory
from hospital_server.fieldcrypt import PatientKeys
from hospital_server.keys import KeyProvider, LocalKeyFileProvider, derive_subkey
from hospital_server.metrics import ServerMetrics
from hospital_server.pki.layout import PkiLayout
from hospital_server.settings import Settings

__all__ = ["BrokerProbe", "Revocations", "ServerContext", "tcp_probe"]

BrokerProbe = Callable[[], bool]


class Revocations(Protocol):
    """Out-of-database effects of a revocation (hospital_server.pki, hospital_server.broker)."""

    def revoke_certificates(self, serials: Sequence[str], *, reason: str) -> None:
        """Revoke these certificate serials (hex) and publish fresh CRLs."""

    def revoke_gateway(self, gateway_id: str, *, reason: str) -> None:
        """Revoke the gateway's certificate, publish CRLs, and cut it off at the broker."""


def tcp_probe(host: str, port: int, timeout: float = 1.0) -> BrokerProbe:
    """A readiness probe: can we open a TCP connection to the broker's TLS port?"""

    def probe() -> bool:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return True
        except OSError:
            return False

    return probe


@dataclass(frozen=True)
class ServerContext:
    settings: Settings
    engine: Engine
    sessions: SessionFactory
    key_provider: KeyProvider
    keys: PatientKeys
    metrics: ServerMetrics
    broker_probe: BrokerProbe
    revocations: Revocations | None = field(default=None)
    # Set when ingest workers run in this process (``phd server run --worker``): whether every
    # one of them holds a subscribed broker session, so /readyz is not ready before they can
    # take envelopes (a TCP connection to the broker says nothing about that).
    ingest_probe: Callable[[], bool] | None = field(default=None)

    @property
    def pki(self) -> PkiLayout:
        return PkiLayout(self.settings.pki_dir)

    @property
    def code_pepper(self) -> bytes:
        """Pepper of enrollment-code hashes: a secret that lives outside the database."""
        return derive_subkey(self.key_provider, "enrollment-code-pepper")

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        key_provider: KeyProvider | None = None,
        broker_probe: BrokerProbe | None = None,
        revocations: Revocations | None = None,
        metrics: ServerMetrics | None = None,
    ) -> ServerContext:
        engine = make_engine(settings.effective_database_url, pool_size=settings.db_pool_size)
        provider = key_provider or LocalKeyFileProvider.load(settings.effective_key_file)
        return cls(
            settings=settings,
            engine=engine,
            sessions=make_session_factory(engine),
            key_provider=provider,
            keys=PatientKeys(provider),
            metrics=metrics or ServerMetrics(),
            broker_probe=broker_probe or tcp_probe(settings.mqtt_host, settings.mqtt_port),
            revocations=revocations,
        )

    def close(self) -> None:
        self.engine.dispose()
