"""The restore forms' params, checked before anything is touched. Airflow-free.

Every value a person types reaches SQL only as a bound parameter or a quoted identifier, and only after
these checks: a hostile or mistyped value (``users; DROP TABLE x``, ``"; --``, a non-UUID user id, a date
with no backup, a wrong ``confirm``) is refused here with a message naming the cause, before any download,
database or schema is created.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from typing import Any

from pg_dataops.common.errors import PermanentError


class RequestRefused(PermanentError):
    """A restore param is invalid or does not match what exists: nothing was changed."""


_DATE_RE = re.compile(r"^\d{8}$")
_KEY_RE = re.compile(r"^[A-Za-z0-9_./-]+$")
# A database name as our forms accept it: what CREATE DATABASE accepts unquoted, lower case.
DATABASE_RE = re.compile(r"^[a-z_][a-z0-9_$]{0,62}$")


def text_param(params: Mapping[str, Any], name: str) -> str:
    """A param as stripped text ('' for None)."""
    value = params.get(name)
    return "" if value is None else str(value).strip()


def parse_backup_date(value: str) -> dt.date | None:
    """``YYYYMMDD`` (a date in the config's time zone) or '' for none."""
    if not value:
        return None
    if not _DATE_RE.match(value):
        raise RequestRefused(f"backup_date {value!r} is not a date as YYYYMMDD (e.g. 20261130)")
    try:
        return dt.datetime.strptime(value, "%Y%m%d").date()
    except ValueError:
        raise RequestRefused(f"backup_date {value!r} is not a calendar date") from None


def parse_backup_choice(params: Mapping[str, Any], *, allow_from_database: bool) -> dict[str, Any]:
    """Which backup the form asks for: ``{"backup_date", "backup_key", "from_database"}``.

    Exactly one source: a ``backup_date`` (with ``backup_key`` when the date has several backups), a
    ``backup_key`` alone, or (table and user restores) ``from_database``."""
    date = parse_backup_date(text_param(params, "backup_date"))
    key = text_param(params, "backup_key")
    if key and (not _KEY_RE.match(key) or ".." in key.split("/")):
        raise RequestRefused(f"backup_key {key!r} is not an S3 key of a backup (letters, digits, _ . / -)")
    source_db = text_param(params, "from_database") if allow_from_database else ""
    if source_db and (date or key):
        raise RequestRefused("give either from_database or backup_date/backup_key, not both")
    if not (date or key or source_db):
        what = "backup_date (YYYYMMDD), backup_key" + (" or from_database" if allow_from_database else "")
        raise RequestRefused(f"no backup chosen: set {what}")
    if source_db and not DATABASE_RE.match(source_db):
        raise RequestRefused(f"from_database {source_db!r} is not a database name (lower-case letters, digits, _)")
    return {"backup_date": date.isoformat() if date else None, "backup_key": key or None,
            "from_database": source_db or None}


def check_from_database(name: str, *, target_database: str, exists: Callable[[str], bool]) -> None:
    """``from_database`` must exist on the target's server and must not be the target database itself."""
    if name == target_database:
        raise RequestRefused(f"from_database {name!r} is the target database itself: restore from a recovered copy "
                             "(e.g. glimpse_recovery from pg_pitr_restore) or from a backup")
    if not exists(name):
        raise RequestRefused(f"from_database {name!r} does not exist on the target's server (pg_pitr_restore "
                             "creates one; or choose backup_date/backup_key)")


def check_confirm(confirm: str, expected: str) -> None:
    """An early check of the form's ``confirm``: empty (approve in the UI) or exactly the database's name.

    The approval gate checks it again; refusing here means a typo stops the run before any work."""
    if confirm and confirm != expected:
        raise RequestRefused(f"confirm {confirm!r} does not match the target database {expected!r}: leave it empty "
                             "to approve in the Airflow UI, or type the database's name")


def parse_jobs(value: Any, default: int) -> int:
    if value in (None, ""):
        return default
    try:
        jobs = int(str(value).strip())
    except ValueError:
        raise RequestRefused(f"parallel_jobs {value!r} is not a whole number") from None
    if not 1 <= jobs <= 32:
        raise RequestRefused(f"parallel_jobs {jobs} is outside 1..32")
    return jobs


SECTIONS = ("pre-data", "data", "post-data")


def parse_sections(value: Any) -> list[str]:
    """pg_restore ``--section``s in their order; empty or all three: the whole backup."""
    if value in (None, "", []):
        return list(SECTIONS)
    items = value if isinstance(value, list) else [p.strip() for p in str(value).split(",") if p.strip()]
    unknown = [s for s in items if s not in SECTIONS]
    if unknown:
        raise RequestRefused(f"sections: {', '.join(map(repr, unknown))} not one of {', '.join(SECTIONS)}")
    return [s for s in SECTIONS if s in items]
