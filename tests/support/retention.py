"""Retention test data: synthetic backup histories (the runbook's tiers and names), the policy's survivors
computed independently of the planner, and writers for S3 and a local tree.

The expected survivors come from the policy's definition (dateutil for calendar months, not the
planner's own arithmetic).
"""

from __future__ import annotations

import datetime as dt
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from zoneinfo import ZoneInfo

from dateutil.relativedelta import relativedelta
from pg_dataops.common.config import Retention

SEOUL_NAME = "Asia/Seoul"
SEOUL = ZoneInfo(SEOUL_NAME)
UTC = dt.UTC
POLICY = Retention(daily_days=30, weekly_weeks=12, monthly_months=12)
NOW = dt.datetime(2027, 1, 5, 3, 0, tzinfo=SEOUL)  # a Tuesday, an hour after that day's backup
START = dt.date(2025, 11, 20)  # 412 daily backups up to and including NOW's day
PREFIX = "database"
BUCKET = "glimpse-backups"
SKEW = dt.timedelta(minutes=60)
SUFFIXES = ("", ".sha256", ".json")
# A well-formed age recipient for the manifests of synthetic encrypted backups (nothing is encrypted to it).
RECIPIENT = "age1" + "q" * 58
NOT_BACKUPS = (f"{PREFIX}/wal/000000010000000000000001", f"{PREFIX}/daily/README.txt")


@dataclass(frozen=True)
class Spec:
    """One synthetic backup, as pg_backup would have made it."""

    target: str
    tier: str
    local: dt.datetime  # the 02:00 KST in its file name
    snapshot: dt.datetime  # the manifest timestamp (UTC), a moment after the name's time
    ext: str = ".dump"

    @property
    def file(self) -> str:
        return f"{self.target}_{self.tier}_{self.local:%Y%m%d_%H%M%S}{self.ext}"

    @property
    def key(self) -> str:
        return f"{PREFIX}/{self.tier}/{self.file}"

    @property
    def local_rel(self) -> str:
        return f"{self.tier}/{self.local:%Y}/{self.local:%m}/{self.file}"

    def manifest(self, verified: bool = False) -> dict:
        # The fields pg_dataops.backup.manifest.build_manifest writes that retention reads, plus the runbook's.
        return {
            "timestamp": self.snapshot.isoformat().replace("+00:00", "Z"),
            "type": self.tier,
            "file": self.file,
            "size": len(self.data_body),
            "checksum": "0" * 64,
            "db_version": "PostgreSQL 15.19 on x86_64-pc-linux-gnu",
            "manifest_version": 1,
            "target": self.target,
            "verified": verified,
            # An encrypted (.age) backup's manifest says for whom; retention reads only the name.
            **({"encryption": {"format": "age", "recipients": [RECIPIENT]}} if self.encrypted else {}),
        }

    @property
    def encrypted(self) -> bool:
        return self.ext.endswith(".age")

    @property
    def data_body(self) -> bytes:
        """A stand-in dump: an age header for an encrypted one, pg_dump's magic otherwise."""
        return b"age-encryption.org/v1\n" if self.encrypted else b"PGDMP\x00"

    def parts(self, verified: bool = False) -> dict[str, bytes]:
        """The three objects: suffix -> body."""
        return {
            "": self.data_body,
            ".sha256": f"{'0' * 64}  {self.file}\n".encode(),
            ".json": json.dumps(self.manifest(verified), indent=2).encode(),
        }


def runbook_tier(day: dt.date) -> str:
    """The runbook's rule, restated: the 1st is monthly (even on a Sunday), Sunday weekly, else daily."""
    if day.day == 1:
        return "monthly"
    return "weekly" if day.isoweekday() == 7 else "daily"


def history(start: dt.date = START, end: dt.date | None = None, target: str = "glimpse",
            encrypted_from: dt.date | None = None) -> list[Spec]:
    """One backup a day; from ``encrypted_from`` on they are age-encrypted (``.dump.age``), as after
    encryption.recipients was set."""
    end = end or NOW.date()
    specs = []
    day = start
    while day <= end:
        local = dt.datetime(day.year, day.month, day.day, 2, 0, tzinfo=SEOUL)
        snapshot = (local + dt.timedelta(seconds=1, microseconds=123456)).astimezone(UTC)
        ext = ".dump.age" if encrypted_from is not None and day >= encrypted_from else ".dump"
        specs.append(Spec(target, runbook_tier(day), local, snapshot, ext))
        day += dt.timedelta(days=1)
    return specs


def recent_history(days: int, target: str = "glimpse", ending_days_ago: int = 0) -> tuple[list[Spec], dt.datetime]:
    """``days`` days of pg_backup's tiers up to now (or up to ``ending_days_ago``), each at (now's hour + 12)
    Seoul time: for runs that plan against the wall clock, no cutoff falls near a backup while they run."""
    now = dt.datetime.now(SEOUL)
    hour = (now.hour + 12) % 24
    specs = []
    for s in history(start=now.date() - dt.timedelta(days=days - 1), end=now.date(), target=target):
        local = s.local.replace(hour=hour)
        specs.append(replace(s, local=local, snapshot=(local + dt.timedelta(seconds=1, microseconds=123456))
                             .astimezone(UTC)))
    return [s for s in specs if s.snapshot <= now - dt.timedelta(days=ending_days_ago)], now


def expected_survivors(specs: list[Spec], now: dt.datetime) -> set[str]:
    """The policy's definition: kept while the snapshot is after now minus the tier's window."""
    window_start = {
        "daily": now - dt.timedelta(days=POLICY.daily_days),
        "weekly": now - dt.timedelta(weeks=POLICY.weekly_weeks),
        "monthly": now - relativedelta(months=POLICY.monthly_months),
    }
    return {s.file for s in specs if s.snapshot > window_start[s.tier]}


def write_local(root, spec: Spec, *, parts=SUFFIXES, manifest: bytes | None = None, verified: bool = False) -> str:
    """The backup's parts under ``root`` in the {tier}/{YYYY}/{MM} layout; returns the dump's path."""
    path = root / spec.local_rel
    path.parent.mkdir(parents=True, exist_ok=True)
    bodies = spec.parts(verified)
    if manifest is not None:
        bodies[".json"] = manifest
    for suffix in parts:
        path.with_name(path.name + suffix).write_bytes(bodies[suffix])
    return str(path)


def write_tree(root: Path, specs: list[Spec], manifests: dict[str, bytes] | None = None) -> None:
    """Every spec as a verified backup in the local tree (``manifests``: file -> other .json)."""
    for s in specs:
        write_local(root, s, verified=True, manifest=(manifests or {}).get(s.file))


def upload(client, bucket: str, specs: list[Spec], manifests: dict[str, bytes] | None = None) -> None:
    """Every spec's three parts, as pg_backup writes a verified backup (``manifests``: file -> other .json),
    and the NOT_BACKUPS objects beside them."""
    objects = []
    for s in specs:
        bodies = s.parts(verified=True)
        bodies[".json"] = (manifests or {}).get(s.file, bodies[".json"])
        objects += [(s.key + suffix, body) for suffix, body in bodies.items()]
    objects += [(key, b"not a backup") for key in NOT_BACKUPS]
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda kb: client.put_object(Bucket=bucket, Key=kb[0], Body=kb[1]), objects))


def all_keys(client, bucket: str) -> set[str]:
    keys = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys.update(o["Key"] for o in page.get("Contents", []))
    return keys
