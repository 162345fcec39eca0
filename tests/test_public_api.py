"""Pins the public API of phd_protocol: adding, removing or renaming a name fails here first.

Each public module lists its names in ``__all__``; this table is the reviewed copy. Change both
together, on purpose, and note the change in docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import importlib

import pytest

PUBLIC_API: dict[str, set[str]] = {
    "phd_protocol": {"__version__"},
    "phd_protocol.errors": {"ParseError", "PhdProtocolError", "RejectReason"},
}


@pytest.mark.parametrize("module_name", sorted(PUBLIC_API))
def test_exported_members(module_name: str) -> None:
    module = importlib.import_module(module_name)
    exported = set(getattr(module, "__all__", ()))
    assert exported == PUBLIC_API[module_name]
    for name in exported:
        assert hasattr(module, name), f"{module_name}.__all__ names missing {name}"


def test_reject_reasons_are_the_public_names() -> None:
    from phd_protocol.errors import RejectReason

    assert {r.value for r in RejectReason} == {
        "malformed",
        "too_large",
        "unknown_recipient_key",
        "decrypt_failed",
        "bad_signature",
        "unknown_credential",
        "credential_revoked",
        "credential_expired",
        "not_enrolled",
        "replay",
        "clock_skew",
        "gateway_revoked",
    }
