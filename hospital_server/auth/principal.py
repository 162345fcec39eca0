"""The authenticated caller of the clinician API, as the routes see it.

A ``Principal`` is built only after a bearer token has been verified and the user re-checked
in the database (active, same role). It carries ids and the role, never a name of a patient
or any secret; ``username`` is the staff login name, used for display, never logged.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Principal"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """Who is calling: staff user id, login name, role (one of ``staff.ROLES``), token id."""

    user_id: str
    username: str
    role: str
    token_id: str
