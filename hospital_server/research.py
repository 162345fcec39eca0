"""Pseudonymised exports for medical AI research (docs/export.md).

A :class:`~hospital_server.models.ResearchProject` names a purpose, an ethics approval, an
expiry, a date profile and k; it holds its own pseudonym key (32 random bytes, wrapped by the
KEK, bound to the project id). :func:`run_export` writes one CSV and one signed manifest:

- only patients who are active and whose newest ``ai_research`` consent grants it;
- each patient as ``HMAC-SHA256(project key, internal patient id)`` (32 hex digits): stable
  within a project, unlinkable across projects, and never derived from the MRN, the name or
  anything else about the person (the internal id is random);
- dates by profile: ``safe_harbor``: the year, and days since the patient's first exported
  reading; ``shifted``: the time moved by a per-patient shift of -365..+365 days derived from
  the project key (intervals kept);
- quasi-identifiers generalised: ten-year age bands at the first exported reading ("90+"
  above 89, "unknown" without a date of birth); a patient whose age band has fewer than k
  patients in the export is suppressed, whole;
- an allow-list of columns (:data:`COLUMNS`): nothing else can appear. No names, MRNs, dates
  of birth, contact, device or credential ids, serials, envelope or reading ids, no free text;
- the manifest (project, export id, profile, k, columns, counts, the CSV's SHA-256) signed with
  the hospital's export key (:data:`hospital_server.signing_keys.EXPORT_KEYS`).

Files are written 0600. :func:`destroy_export` overwrites and deletes them; :func:`expire`
destroys every export of an expired project. Each step is audited (``export.project``,
``export.created``, ``export.destroyed``) with ids and counts.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import json
import os
import re
import secrets
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from hospital_server import audit
from hospital_server.clinical import MAX_PAGE, ReadingQuery, StoredReading, read_observations
from hospital_server.db import READ_ONLY, SessionFactory
from hospital_server.export_files import (
    UnsafePathError,
    part,
    sha256_file,
    shred,
    write_csv,
    write_private,
)
from hospital_server.fieldcrypt import PatientKeys
from hospital_server.keys import KeyProvider, WrappedKey
from hospital_server.models import (
    ConsentKind,
    Device,
    Patient,
    PatientStatus,
    ResearchExport,
    ResearchProject,
    utcnow,
)
from hospital_server.models import Observation as ObservationRow
from hospital_server.patients import consent_in_force, read_patient
from hospital_server.signing_keys import EXPORT_KEYS
from phd_protocol import crypto
from phd_protocol.sfloat import SpecialValue

__all__ = [
    "COLUMNS",
    "DateProfile",
    "ExportError",
    "ExportResult",
    "create_project",
    "destroy_export",
    "expire",
    "leaks",
    "manifest_message",
    "project_key_context",
    "run_export",
    "verify_manifest",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,99}$")
_MAX_LIFETIME = timedelta(days=5 * 366)
_SHIFT_DAYS = 365


class DateProfile(enum.StrEnum):
    SAFE_HARBOR = "safe_harbor"
    SHIFTED = "shifted"


# The allow-list: every column an export may hold, per profile.
_COMMON = ("pseudonym", "age_band", "device_kind", "mdc_code", "component_mdc", "value", "unit")
COLUMNS: dict[DateProfile, tuple[str, ...]] = {
    DateProfile.SAFE_HARBOR: (*_COMMON, "quality", "year", "day_offset"),
    DateProfile.SHIFTED: (*_COMMON, "quality", "measured_at_shifted"),
}


class ExportError(Exception):
    """A refused request; ``reason`` is a public code (docs/export.md)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def project_key_context(project_id: str) -> bytes:
    """Associated data of a project's wrapped pseudonym key."""
    return b"research-project\x00" + project_id.encode()


def create_project(
    session: Session,
    keys: KeyProvider,
    *,
    name: str,
    purpose: str,
    approval_ref: str,
    date_profile: DateProfile,
    k: int,
    expires_at: datetime,
    actor: str,
    now: datetime | None = None,
) -> ResearchProject:
    """Add a project (flushed; the caller commits)."""
    now = now or utcnow()
    if not _NAME.match(name):
        raise ExportError("bad_name")
    if not 1 <= len(purpose) <= 500 or not 1 <= len(approval_ref) <= 100:
        raise ExportError("bad_purpose_or_approval")
    if not 2 <= k <= 100:
        raise ExportError("bad_k")
    if expires_at.tzinfo is None or not now < expires_at <= now + _MAX_LIFETIME:
        raise ExportError("bad_expiry")
    if session.exec(select(ResearchProject.id).where(ResearchProject.name == name)).first():
        raise ExportError("duplicate_name")
    project_id = str(uuid.uuid4())
    wrapped = keys.wrap(secrets.token_bytes(32), context=project_key_context(project_id))
    project = ResearchProject(
        id=project_id,
        name=name,
        purpose=purpose,
        approval_ref=approval_ref,
        date_profile=date_profile.value,
        k_anonymity=k,
        created_by=actor,
        created_at=now,
        expires_at=expires_at,
        key_wrapped=wrapped.blob,
        kek_id=wrapped.kek_id,
    )
    session.add(project)
    session.flush()
    audit.record(session, "export.project", actor=actor, subject=project_id, k=k)
    return project


@dataclass(frozen=True, slots=True)
class ExportResult:
    export_id: str
    csv_path: Path
    manifest_path: Path
    rows: int
    patients: int
    suppressed_patients: int
    sha256: str


def run_export(
    sessions: SessionFactory,
    patient_keys: PatientKeys,
    keys: KeyProvider,
    project_id: str,
    *,
    out_dir: Path,
    actor: str,
    now: datetime | None = None,
) -> ExportResult:
    """Write the project's export under ``out_dir``; record and audit it."""
    now = now or utcnow()
    with sessions() as session:
        project = session.get(ResearchProject, project_id)
        if project is None:
            raise ExportError("project_not_found")
        if project.expires_at <= now:
            raise ExportError("project_expired")
        secret = keys.unwrap(
            WrappedKey(project.kek_id, project.key_wrapped),
            context=project_key_context(project_id),
        )
        profile, k = DateProfile(project.date_profile), project.k_anonymity
        cohort = _cohort(session, patient_keys)
        firsts = _first_readings(session, [patient_id for patient_id, _ in cohort])
    # Age bands first (from the plaintext measurement times), so that k-anonymity is decided
    # before anything is decrypted, and the file can be written one patient at a time.
    bands = {
        patient_id: _age_band(born, firsts[patient_id])
        for patient_id, born in cohort
        if patient_id in firsts  # a patient without a timed reading has nothing to export
    }
    sizes = Counter(bands.values())
    kept = sorted((p for p in bands if sizes[bands[p]] >= k), key=lambda p: _pseudonym(secret, p))
    suppressed = len(bands) - len(kept)
    columns = COLUMNS[profile]
    kinds = _device_kinds(sessions)
    export_id = str(uuid.uuid4())
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    out_dir = out_dir.resolve()  # recorded as is: destroy must find it from any directory
    owner = out_dir.stat()
    if owner.st_mode & 0o022 or owner.st_uid != os.geteuid():
        raise ExportError("unsafe_directory")  # others could plant or swap files in it
    csv_path, manifest_path = out_dir / f"{export_id}.csv", out_dir / f"{export_id}.manifest.json"
    parts = [part(csv_path), part(manifest_path)]
    try:
        count, written = write_csv(
            parts[0],
            columns,
            (
                (
                    patient_id,
                    _rows(
                        sessions,
                        patient_keys,
                        patient_id,
                        band=bands[patient_id],
                        first=firsts[patient_id],
                        secret=secret,
                        profile=profile,
                        kinds=kinds,
                    ),
                )
                for patient_id in kept
            ),
        )
        # A kept patient erased or gone between the band count and the read would leave a
        # band below k: recount what was written, and refuse rather than publish it.
        written_sizes = Counter(bands[p] for p in written)
        if any(n < k for n in written_sizes.values()):
            raise ExportError("cohort_changed")
        digest = sha256_file(parts[0])
        manifest = {
            "format": "phd-research-export-v1",
            "project_id": project_id,
            "export_id": export_id,
            "created_at": now.isoformat(),
            "date_profile": profile.value,
            "k_anonymity": k,
            "columns": list(columns),
            "rows": count,
            "patients": len(written),
            "suppressed_patients": suppressed,
            "csv_sha256": digest,
        }
        with sessions() as session:
            kid, signature = EXPORT_KEYS.sign(
                session, keys, lambda kid: manifest_message(manifest, kid), now=now
            )
            signed = {
                "manifest": manifest,
                "kid": kid,
                "signature": base64.b64encode(signature).decode(),
            }
            write_private(parts[1], json.dumps(signed, indent=2, sort_keys=True).encode())
            session.add(
                ResearchExport(
                    id=export_id,
                    project_id=project_id,
                    created_by=actor,
                    created_at=now,
                    rows=count,
                    patients=len(written),
                    suppressed_patients=suppressed,
                    path=str(csv_path),
                    sha256=digest,
                )
            )
            session.flush()
            audit.record(
                session,
                "export.created",
                actor=actor,
                subject=export_id,
                project=project_id,
                rows=count,
                patients=len(written),
                suppressed=suppressed,
            )
            session.commit()
    except BaseException:
        for path in parts:  # nothing recorded, so nothing may stay on disk
            shred(path)
        raise
    # Recorded: now the files take their names (a crash in between leaves .part files, which
    # destroy_export also removes).
    parts[0].rename(csv_path)
    parts[1].rename(manifest_path)
    return ExportResult(export_id, csv_path, manifest_path, count, len(written), suppressed, digest)


def manifest_message(manifest: dict[str, Any], kid: str) -> bytes:
    """The bytes a manifest signature covers: domain label, kid, canonical JSON."""
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    return b"phd-research-manifest-v1\x00" + kid.encode() + b"\x00" + canonical.encode()


def verify_manifest(sessions: SessionFactory, keys: KeyProvider, path: Path) -> str | None:
    """None if the manifest at ``path`` is signed by an export key the KEK vouches for and
    the CSV beside it has its digest; else what is wrong (a short phrase, no content)."""
    try:
        signed = json.loads(path.read_bytes())
        manifest, kid = signed["manifest"], signed["kid"]
        signature = base64.b64decode(signed["signature"], validate=True)
        csv_path = path.with_name(f"{manifest['export_id']}.csv")
    except (OSError, ValueError, KeyError, TypeError):
        return "not a readable manifest"
    with sessions() as session:
        public = EXPORT_KEYS.vouched(session, keys).get(kid)
    if public is None:
        return "signed by a key this hospital does not vouch for"
    try:
        crypto.verify(public, signature, manifest_message(manifest, kid))
    except crypto.CryptoError:
        return "signature does not verify"
    try:
        digest = hashlib.sha256(csv_path.read_bytes()).hexdigest()
    except OSError:
        return "CSV missing"
    return None if digest == manifest.get("csv_sha256") else "CSV differs from the manifest"


def destroy_export(session: Session, export_id: str, *, actor: str) -> bool:
    """Overwrite and delete an export's files; False if already destroyed. Flushes."""
    export = session.get(ResearchExport, export_id)
    if export is None:
        raise ExportError("export_not_found")
    if export.destroyed_at is not None:
        return False
    csv_path = Path(export.path)
    if csv_path.name != f"{export_id}.csv" or not csv_path.is_absolute():
        raise ExportError("export_path_changed")  # the row was edited: touch nothing
    manifest_path = csv_path.with_name(f"{export_id}.manifest.json")
    try:
        shred(csv_path, sha256=export.sha256)
        for path in (manifest_path, part(csv_path), part(manifest_path)):
            shred(path)
    except UnsafePathError as exc:
        raise ExportError("export_path_unsafe") from exc
    export.destroyed_at = utcnow()
    session.add(export)
    session.flush()
    audit.record(
        session, "export.destroyed", actor=actor, subject=export_id, project=export.project_id
    )
    return True


def expire(sessions: SessionFactory, *, actor: str, now: datetime | None = None) -> int:
    """Destroy every export of every expired project; the number destroyed."""
    now = now or utcnow()
    with sessions() as session:
        due = list(
            session.exec(
                select(ResearchExport.id)
                .join(ResearchProject, col(ResearchProject.id) == col(ResearchExport.project_id))
                .where(
                    col(ResearchExport.destroyed_at).is_(None),
                    col(ResearchProject.expires_at) <= now,
                )
            )
        )
    done = 0
    for export_id in due:
        with sessions() as session:
            done += destroy_export(session, export_id, actor=actor)
            session.commit()
    return done


# --------------------------------------------------------------------------- building rows


def _cohort(session: Session, keys: PatientKeys) -> list[tuple[str, date | None]]:
    """(patient id, date of birth) of active patients whose newest ai_research consent
    grants it, in id order."""
    out = []
    for patient_id in session.exec(
        select(Patient.id).where(Patient.status == PatientStatus.ACTIVE).order_by(Patient.id)
    ):
        if consent_in_force(session, patient_id, ConsentKind.AI_RESEARCH):
            out.append((patient_id, read_patient(session, keys, patient_id).date_of_birth))
    return out


def _device_kinds(sessions: SessionFactory) -> dict[str, str]:
    with sessions() as session:
        return dict(session.exec(select(Device.id, Device.kind)).all())


def _readings(
    sessions: SessionFactory, keys: PatientKeys, patient_id: str
) -> Iterator[StoredReading]:
    """Every reading of the patient, page by page in one snapshot (REPEATABLE READ on
    PostgreSQL, one read transaction on SQLite): readings committed meanwhile cannot shift
    the pages and be read twice or skipped."""
    with sessions() as session:
        postgres = session.get_bind().dialect.name == "postgresql"
        session.connection(execution_options=_SNAPSHOT if postgres else READ_ONLY)
        offset = 0
        while True:
            page, more = read_observations(
                session, keys, patient_id, ReadingQuery(limit=MAX_PAGE, offset=offset)
            )
            yield from page
            if not more:
                return
            offset += MAX_PAGE


_SNAPSHOT: dict[str, Any] = {"isolation_level": "REPEATABLE READ"}


def _rows(
    sessions: SessionFactory,
    keys: PatientKeys,
    patient_id: str,
    *,
    band: str,
    first: datetime,
    secret: bytes,
    profile: DateProfile,
    kinds: dict[str, str],
) -> list[dict[str, str]]:
    """One patient's export rows: every reading with a measurement time."""
    pseudonym = _pseudonym(secret, patient_id)
    shift_seed = hmac.new(secret, b"shift\x00" + patient_id.encode(), "sha256").digest()
    shift = timedelta(days=int.from_bytes(shift_seed[:4], "big") % (2 * _SHIFT_DAYS + 1))
    shift -= timedelta(days=_SHIFT_DAYS)
    rows = []
    for reading in _readings(sessions, keys, patient_id):
        obs = reading.observation
        at = obs.time
        if at is None:
            continue  # no time: nothing to place it by
        if profile is DateProfile.SAFE_HARBOR:
            when = {"year": str(at.year), "day_offset": str((at - first).days)}
        else:
            when = {"measured_at_shifted": (at + shift).astimezone(UTC).isoformat()}
        parts: list[tuple[int | None, object]] = [
            (c.mdc_code, c.value) for c in obs.components
        ] or [(None, obs.value)]
        for component, value in parts:
            rows.append(
                {
                    "pseudonym": pseudonym,
                    "age_band": band,
                    "device_kind": kinds.get(reading.device_id, "unknown"),
                    "mdc_code": str(obs.mdc_code),
                    "component_mdc": "" if component is None else str(component),
                    "value": _number(value),
                    "unit": obs.unit,
                    "quality": reading.quality,
                    **when,
                }
            )
    return rows


def _pseudonym(secret: bytes, patient_id: str) -> str:
    """128 bits of HMAC-SHA256(project key, internal id), hex."""
    return hmac.new(secret, b"pseudonym\x00" + patient_id.encode(), "sha256").hexdigest()[:32]


def _first_readings(session: Session, patient_ids: list[str]) -> dict[str, datetime]:
    """Each patient's earliest measurement time (the plaintext query column), if any."""
    out: dict[str, datetime] = {}
    for at in range(0, len(patient_ids), 500):
        chunk = patient_ids[at : at + 500]
        found = session.exec(
            select(ObservationRow.patient_id, func.min(ObservationRow.measured_at))
            .where(
                col(ObservationRow.patient_id).in_(chunk),
                col(ObservationRow.measured_at).is_not(None),
            )
            .group_by(col(ObservationRow.patient_id))
        ).all()
        out.update((patient_id, first) for patient_id, first in found if first is not None)
    return out


def _age_band(born: date | None, at: datetime) -> str:
    if born is None:
        return "unknown"
    on = at.date()
    age = on.year - born.year - ((on.month, on.day) < (born.month, born.day))
    if age >= 90:
        return "90+"
    low = max(age, 0) // 10 * 10
    return f"{low}-{low + 9}"


def _number(value: object) -> str:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, SpecialValue) or value is None:
        return ""
    return str(value)


def leaks(data: bytes, identifiers: Mapping[str, Iterable[str]]) -> list[str]:
    """The kinds of identifier (``{"name": [...], "mrn": [...]}``) of which some value occurs
    in ``data``, case-insensitively, as text or as a date in another common spelling: the
    export validator's check (docs/export.md). Values shorter than 4 characters are refused:
    they would match by chance."""
    text = data.decode("utf-8", "replace").casefold()
    found = []
    for kind, values in identifiers.items():
        for value in values:
            if len(value) < 4:
                raise ValueError(f"{kind} value too short to search for")
            if any(form.casefold() in text for form in _spellings(value)):
                found.append(kind)
                break
    return found


def _spellings(value: str) -> list[str]:
    try:
        day = date.fromisoformat(value)
    except ValueError:
        return [value]
    return [value, day.strftime("%d/%m/%Y"), day.strftime("%m/%d/%Y"), day.strftime("%Y%m%d")]
