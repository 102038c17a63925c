"""RDS manual snapshots (pg_rds_snapshot): the snapshot's name and tags, the checks before it, the pruning plan.

Airflow-free; the RDS client is a boto3 ``rds`` client handed in by the operators. The runbook (1.3) tagged its
snapshots ``Type=Manual``, ``Retention=30days``; we add ``CreatedBy=pg_dataops``, and pruning only ever deletes a
manual snapshot of the configured instance carrying both ``Type=Manual`` and ``CreatedBy=pg_dataops``, once it is
older than its own ``Retention`` tag. Everything else is kept, with the reason, for the report.

Times are the run's moment (logical date, or run_after for manual runs): a rerun of a run names the same snapshot
and reuses it, and decides the same ages.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pg_dataops.common.errors import AuthenticationFailed, BackupError, PermanentError

TYPE_TAG = ("Type", "Manual")
OWNER_TAG = ("CreatedBy", "pg_dataops")
RETENTION_TAG = "Retention"
_RETENTION_RE = re.compile(r"^\s*(\d{1,5})\s*days?\s*$", re.IGNORECASE)
# RDS snapshot identifiers: a letter first, letters/digits/single hyphens, not ending in a hyphen, at most 255.
_SNAPSHOT_ID_RE = re.compile(r"^[A-Za-z](?:-?[A-Za-z0-9])*$")
# Instance states in which RDS accepts CreateDBSnapshot.
SNAPSHOT_READY_STATES = ("available", "storage-optimization")
_AUTH_CODES = {"AccessDenied", "AccessDeniedException", "InvalidClientTokenId", "SignatureDoesNotMatch",
               "UnrecognizedClientException", "AuthFailure", "ExpiredToken", "ExpiredTokenException"}


class RdsRefused(PermanentError):
    """RDS is not in a state this run may act on (no such instance, a foreign snapshot under our name)."""


def snapshot_id(prefix: str, instance: str, moment: dt.datetime) -> str:
    """``{prefix}-{instance}-{YYYYmmdd-HHMMSS}`` of the run's moment in UTC: the same run always names the same
    snapshot (the runbook's ``glimpse-snapshot-$(date +%Y%m%d-%H%M%S)``, made deterministic)."""
    if moment.tzinfo is None:
        raise ValueError("snapshot_id: the moment must be timezone-aware")
    name = f"{prefix}-{instance}-{moment.astimezone(dt.UTC):%Y%m%d-%H%M%S}"
    if len(name) > 255 or not _SNAPSHOT_ID_RE.match(name):
        raise RdsRefused(f"{name!r} is not a valid RDS snapshot identifier (check dr.rds_snapshot_prefix and "
                         "dr.rds_instance_id)")
    return name


def our_tags(retention_days: int, dag_id: str) -> dict[str, str]:
    """The runbook's tags (``Type=Manual``, ``Retention=<n>days``) plus ours, which pruning requires."""
    return {TYPE_TAG[0]: TYPE_TAG[1], RETENTION_TAG: f"{retention_days}days", OWNER_TAG[0]: OWNER_TAG[1],
            "CreatedByDag": dag_id}


def parse_retention(value: str | None) -> int | None:
    """Days of a ``Retention`` tag ("30days", "1 day"), or None when it cannot be read (or is 0)."""
    match = _RETENTION_RE.match(value or "")
    days = int(match.group(1)) if match else 0
    return days or None


def is_ours(tags: Mapping[str, str]) -> bool:
    return tags.get(TYPE_TAG[0]) == TYPE_TAG[1] and tags.get(OWNER_TAG[0]) == OWNER_TAG[1]


@dataclass(frozen=True)
class Snapshot:
    """What pruning needs of one ``describe_db_snapshots`` entry."""

    id: str
    instance: str
    status: str
    snapshot_type: str
    created: dt.datetime | None
    tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_api(cls, item: Mapping[str, Any]) -> Snapshot:
        created = item.get("SnapshotCreateTime")
        if isinstance(created, dt.datetime) and created.tzinfo is None:
            created = created.replace(tzinfo=dt.UTC)  # botocore gives aware datetimes; be safe anyway
        return cls(id=item["DBSnapshotIdentifier"], instance=item.get("DBInstanceIdentifier", ""),
                   status=str(item.get("Status", "")).lower(), snapshot_type=str(item.get("SnapshotType", "")),
                   created=created if isinstance(created, dt.datetime) else None,
                   tags={t["Key"]: t.get("Value", "") for t in item.get("TagList") or []})

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "instance": self.instance, "status": self.status, "type": self.snapshot_type,
                "created": self.created.isoformat() if self.created else None, "tags": dict(self.tags)}


def prune_plan(snapshots: Iterable[Snapshot], now: dt.datetime, *, instance: str, keep_id: str | None) -> dict:
    """Which snapshots to delete, and why each other one is kept.

    Deleted: a manual, available snapshot of ``instance`` with both ``Type=Manual`` and ``CreatedBy=pg_dataops``
    whose age at ``now`` exceeds its own ``Retention`` tag. Never ``keep_id`` (this run's snapshot). A snapshot
    of ours whose ``Retention`` cannot be read is kept and listed under ``unreadable_retention``."""
    delete: list[dict] = []
    keep: list[dict] = []
    unreadable: list[str] = []
    for snap in sorted(snapshots, key=lambda s: s.id):
        reason = _keep_reason(snap, instance=instance, keep_id=keep_id)
        if reason is None:
            days = parse_retention(snap.tags.get(RETENTION_TAG))
            if days is None:
                unreadable.append(snap.id)
                reason = (f"Retention tag {snap.tags.get(RETENTION_TAG)!r} unreadable (expected e.g. '30days'): "
                          "kept until someone fixes or removes it")
            elif snap.created is None:
                reason = "no creation time reported"
            else:
                age = (now - snap.created).total_seconds() / 86400
                if age > days:
                    delete.append({"id": snap.id, "age_days": round(age, 2), "retention_days": days,
                                   "reason": f"{age:.1f} days old, past its Retention of {days} days"})
                    continue
                reason = f"{max(age, 0):.1f} days old, within its Retention of {days} days"
        keep.append({"id": snap.id, "reason": reason})
    return {"instance": instance, "now": now.isoformat(), "keep_id": keep_id, "delete": delete, "keep": keep,
            "delete_ids": [d["id"] for d in delete], "unreadable_retention": unreadable}


def _keep_reason(snap: Snapshot, *, instance: str, keep_id: str | None) -> str | None:
    """Why ``snap`` is kept whatever its age, or None when its age decides."""
    if keep_id is not None and snap.id == keep_id:
        return "made by this run"
    if snap.instance != instance:
        return f"a snapshot of another instance ({snap.instance})"
    if snap.snapshot_type != "manual":
        return f"{snap.snapshot_type or 'unknown'} snapshot (RDS manages those)"
    if not is_ours(snap.tags):
        missing = [f"{k}={v}" for k, v in (TYPE_TAG, OWNER_TAG) if snap.tags.get(k) != v]
        return f"not made by pg_dataops (no {' / '.join(missing)} tag)"
    if snap.status != "available":
        return f"status {snap.status or 'unknown'}, not available"
    return None


# ---- what the operators call with a boto3 rds client ------------------------------------------------------


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str((response.get("Error") or {}).get("Code", ""))


def _translate(exc: Exception, what: str) -> Exception:
    """A botocore error as ours: credentials problems are permanent; anything else may pass (retries)."""
    code = _error_code(exc)
    if code in _AUTH_CODES:
        return AuthenticationFailed(f"{what}: AWS refused the credentials of the RDS connection ({code})")
    return BackupError(f"{what}: {code or type(exc).__name__}: {exc}")


def preflight(client, instance: str, prefix: str, moment: dt.datetime) -> dict:
    """Before the snapshot: the instance exists and can be snapshotted now; the snapshot's name for this run."""
    from botocore.exceptions import BotoCoreError, ClientError

    name = snapshot_id(prefix, instance, moment)
    try:
        found = client.describe_db_instances(DBInstanceIdentifier=instance)["DBInstances"]
    except ClientError as exc:
        if _error_code(exc) in ("DBInstanceNotFound", "DBInstanceNotFoundFault"):
            raise RdsRefused(f"RDS instance {instance!r} (dr.rds_instance_id) does not exist in this account and "
                             "region (the RDS connection's region_name)") from None
        raise _translate(exc, f"describing RDS instance {instance!r}") from None
    except BotoCoreError as exc:
        raise BackupError(f"describing RDS instance {instance!r}: {exc}") from None
    status = str(found[0].get("DBInstanceStatus", "")).lower() if found else ""
    if status not in SNAPSHOT_READY_STATES:
        # e.g. backing-up, modifying, rebooting: transient, the retries wait for it
        raise BackupError(f"RDS instance {instance!r} is {status or 'in an unknown state'}; a snapshot needs one of "
                          f"{', '.join(SNAPSHOT_READY_STATES)}")
    return {"instance": instance, "snapshot_id": name, "instance_status": status,
            "engine": found[0].get("Engine"), "engine_version": found[0].get("EngineVersion"),
            "moment": moment.isoformat()}


def describe_snapshot(client, name: str) -> Snapshot | None:
    """The snapshot named ``name``, or None when there is none."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        items = client.describe_db_snapshots(DBSnapshotIdentifier=name)["DBSnapshots"]
    except ClientError as exc:
        if _error_code(exc) in ("DBSnapshotNotFound", "DBSnapshotNotFoundFault"):
            return None
        raise _translate(exc, f"describing RDS snapshot {name!r}") from None
    except BotoCoreError as exc:
        raise BackupError(f"describing RDS snapshot {name!r}: {exc}") from None
    return Snapshot.from_api(items[0]) if items else None


def existing_snapshot(client, name: str, instance: str) -> dict | None:
    """A rerun's snapshot: None when ``name`` does not exist yet (create it); its summary when it exists and is
    ours (reuse it); refused when a snapshot of that name exists but is not ours or not of ``instance``."""
    snap = describe_snapshot(client, name)
    if snap is None:
        return None
    if snap.instance != instance or not is_ours(snap.tags):
        raise RdsRefused(f"RDS snapshot {name!r} already exists but was not made by pg_dataops for {instance!r} "
                         f"(instance {snap.instance!r}, tags {snap.tags}); not touching it")
    if snap.status in ("failed", "incompatible-restore", "incompatible-parameters"):
        raise RdsRefused(f"RDS snapshot {name!r} of an earlier try is {snap.status}; delete it in the RDS console "
                         "and clear the task to take it again")
    return snap.summary()


def list_snapshots(client, instance: str) -> list[Snapshot]:
    """Every manual snapshot of ``instance`` (all pages), with its tags."""
    from botocore.exceptions import BotoCoreError, ClientError

    out: list[Snapshot] = []
    try:
        for page in client.get_paginator("describe_db_snapshots").paginate(
                DBInstanceIdentifier=instance, SnapshotType="manual"):
            out += [Snapshot.from_api(item) for item in page["DBSnapshots"]]
    except ClientError as exc:
        raise _translate(exc, f"listing the snapshots of RDS instance {instance!r}") from None
    except BotoCoreError as exc:
        raise BackupError(f"listing the snapshots of RDS instance {instance!r}: {exc}") from None
    return out


def plan_for(client, instance: str, now: dt.datetime, *, keep_id: str | None) -> dict:
    """List the instance's manual snapshots and plan their pruning (:func:`prune_plan`)."""
    return prune_plan(list_snapshots(client, instance), now, instance=instance, keep_id=keep_id)


def outcome(client, instance: str, name: str | None, plan: Mapping | None) -> dict:
    """What RDS says after the run: this run's snapshot and its state, which planned deletions are gone."""
    created = describe_snapshot(client, name) if name else None
    planned = list((plan or {}).get("delete_ids") or [])
    present = {s.id for s in list_snapshots(client, instance)} if planned else set()
    return {"instance": instance, "snapshot_id": name,
            "snapshot": created.summary() if created else None,
            "deleted": [i for i in planned if i not in present],
            "not_deleted": [i for i in planned if i in present]}


def report_text(instance: str | None, facts: Mapping | None, plan: Mapping | None, *,
                failed: Iterable[str] = (), error: str | None = None, max_kept_lines: int = 15) -> str:
    """The Slack summary: the snapshot, what was deleted, what was kept and why, what failed."""
    failed = list(failed)
    head = ":red_circle:" if failed or error else ":camera:"
    lines = [f"{head} pg_rds_snapshot of RDS instance {instance or '?'}"]
    snap = (facts or {}).get("snapshot")
    name = (facts or {}).get("snapshot_id")
    if snap:
        lines.append(f"Snapshot {snap['id']}: {snap['status']} (tags: "
                     + ", ".join(f"{k}={v}" for k, v in sorted(snap["tags"].items())) + ")")
    elif name:
        lines.append(f"Snapshot {name}: NOT FOUND in RDS")
    if facts is not None and plan is not None:
        deleted = set(facts.get("deleted") or [])
        gone = [d for d in plan.get("delete") or [] if d["id"] in deleted]
        lines.append(f"Deleted {len(gone)} snapshot(s) past their Retention tag"
                     + (":" if gone else "."))
        lines += [f"  - {d['id']}: {d['reason']}" for d in gone]
        if facts.get("not_deleted"):
            lines.append("Planned for deletion but still there: " + ", ".join(facts["not_deleted"]))
    elif plan is not None:
        lines.append("Planned for deletion: " + (", ".join(plan.get("delete_ids") or []) or "none"))
    if plan is not None:
        kept = list(plan.get("keep") or [])
        lines.append(f"Kept {len(kept)} snapshot(s)" + (":" if kept else "."))
        lines += [f"  - {k['id']}: {k['reason']}" for k in kept[:max_kept_lines]]
        if len(kept) > max_kept_lines:
            lines.append(f"  ... and {len(kept) - max_kept_lines} more (see the plan_prune task's XCom)")
        if plan.get("unreadable_retention"):
            lines.append(":warning: Retention tag unreadable, kept: " + ", ".join(plan["unreadable_retention"]))
    if error:
        lines.append(f"Error: {error}")
    if failed:
        lines.append("Failed tasks: " + ", ".join(failed))
    return "\n".join(lines)
