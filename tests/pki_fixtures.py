"""Shared pytest fixtures: a real, freshly initialised dev PKI for any test suite.

Usage, in a package's ``conftest.py`` (pytest finds fixtures imported into a conftest)::

    from tests.pki_fixtures import dev_pki, rogue_pki  # noqa: F401  (fixtures, used by name)

    def test_gateway_connects(dev_pki: PkiLayout) -> None:
        cert = dev_pki.gateway_cert("gw-1")      # also gateway_key / gateway_chain
        ca = dev_pki.client_ca_bundle             # or ca_bundle, root_ca_cert, crl_bundle

``dev_pki`` (session scope) is a :class:`hospital_server.pki.layout.PkiLayout` of a PKI made
by :func:`hospital_server.pki.ca.init_pki` with the default hosts (localhost, 127.0.0.1, ::1),
ingest workers ``ingest-1`` and ``ingest-2`` and gateways ``gw-1`` and ``gw-2``. It is shared
by the whole session: **do not revoke or re-issue in it**; for that use ``fresh_pki``
(function scope, its own directory, about 50 ms) and call ``issue_gateway``/``revoke`` on it.

``rogue_pki`` (session scope) is a second, independent PKI with *the same names* (same CA
subjects, a gateway ``gw-1``): what an attacker who copied our naming would hold. Its
certificates must be refused everywhere ours are trusted.

Odd certificates for refusal tests come from
:func:`hospital_server.pki.ca.issue_client_certificate` on ``fresh_pki``::

    issue_client_certificate(pki, "old", not_before=t - 2 * day, not_after=t - day)  # expired
    issue_gateway(pki, "later", not_before=t + day, not_after=t + 2 * day)           # future
    issue_client_certificate(pki, "svc", ca="service", purpose=Purpose.INGEST_CLIENT)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hospital_server.pki.ca import init_pki, issue_gateway
from hospital_server.pki.layout import PkiLayout

__all__ = ["dev_pki", "fresh_pki", "make_pki", "rogue_pki"]


def make_pki(root: Path, *, gateways: tuple[str, ...] = ("gw-1", "gw-2")) -> PkiLayout:
    """Initialise a PKI in ``root`` and issue ``gateways``; returns its layout."""
    layout = PkiLayout(root)
    init_pki(layout)
    for name in gateways:
        issue_gateway(layout, name)
    return layout


@pytest.fixture(scope="session")
def dev_pki(tmp_path_factory: pytest.TempPathFactory) -> PkiLayout:
    return make_pki(tmp_path_factory.mktemp("dev-pki"))


@pytest.fixture(scope="session")
def rogue_pki(tmp_path_factory: pytest.TempPathFactory) -> PkiLayout:
    return make_pki(tmp_path_factory.mktemp("rogue-pki"), gateways=("gw-1",))


@pytest.fixture
def fresh_pki(tmp_path: Path) -> PkiLayout:
    return make_pki(tmp_path / "pki")
