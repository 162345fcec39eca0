"""Fixtures for the CA tests: the shared PKI fixtures (imported so pytest registers them)."""

from __future__ import annotations

from tests.pki_fixtures import dev_pki, fresh_pki, rogue_pki

__all__ = ["dev_pki", "fresh_pki", "rogue_pki"]
