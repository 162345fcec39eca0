"""The demo's clinician: on every demo patient's care team, and the proof that readings
arrive where a clinician reads them.

:func:`add_clinician` creates the user through the admin API (with the admin's session
already open: a TOTP code is good once) (the TOTP secret comes back once
and goes, with the password, to two 0600 files in the run directory) and puts them on each
enrolled patient's care team. :func:`fhir_counts` logs in as them (password + TOTP at the
token endpoint) and pages through each patient's FHIR Observation search, counting what comes
back per device: the demo's verdict compares that with the rows committed.

What it must never do: print or log a password, a secret, a code, a token or a reading.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import ssl
from collections.abc import Sequence

import httpx

from phd_cli.demo import setup
from phd_cli.demo.fleet import EnrolledPhd
from phd_cli.demo.staff_login import StaffCredentials, StaffLogin

__all__ = ["add_clinician", "fhir_counts"]

PAGE = 200


async def add_clinician(
    api: str,
    admin: StaffLogin,
    enrolled: Sequence[EnrolledPhd],
    paths: setup.DemoPaths,
    *,
    verify: ssl.SSLContext | bool = True,
) -> StaffCredentials:
    password = secrets.token_urlsafe(18)
    async with httpx.AsyncClient(base_url=api, auth=admin, verify=verify, timeout=30.0) as client:
        created = await client.post(
            "/api/v1/users",
            json={"username": setup.CLINICIAN_USER, "password": password, "role": "clinician"},
        )
        created.raise_for_status()
        user = created.json()
        for patient_id in sorted({phd.patient_id for phd in enrolled}):
            joined = await client.put(f"/api/v1/patients/{patient_id}/care-team/{user['id']}")
            joined.raise_for_status()
    secret = str(user["totp_secret"])
    await asyncio.to_thread(setup.write_private, paths.clinician_password, password)
    await asyncio.to_thread(setup.write_private, paths.clinician_totp_secret, secret)
    return StaffCredentials(
        username=setup.CLINICIAN_USER,
        password=password,
        totp_secret=base64.b32decode(secret),
    )


async def fhir_counts(
    api: str,
    clinician: StaffCredentials,
    enrolled: Sequence[EnrolledPhd],
    *,
    verify: ssl.SSLContext | bool = True,
) -> dict[str, int]:
    """Observations per device id that the clinician reads back as FHIR, each counted once."""
    seen: dict[str, set[str]] = {phd.device_id: set() for phd in enrolled}
    async with httpx.AsyncClient(
        base_url=api, auth=StaffLogin(clinician), verify=verify, timeout=30.0
    ) as client:
        for patient_id in sorted({phd.patient_id for phd in enrolled}):
            url: str | None = f"/fhir/Observation?patient=Patient/{patient_id}&_count={PAGE}"
            while url is not None:
                page = await client.get(url)
                page.raise_for_status()
                bundle = page.json()
                for entry in bundle.get("entry", []):
                    resource = entry["resource"]
                    device = resource["device"]["reference"].rpartition("Device/")[2]
                    if device in seen:
                        seen[device].add(resource["id"])
                url = next(
                    (link["url"] for link in bundle["link"] if link["relation"] == "next"), None
                )
    return {device: len(ids) for device, ids in seen.items()}
