"""pg_rds_snapshot's decisions: the snapshot's name and tags, and which snapshots pruning may delete."""

from __future__ import annotations

import datetime as dt

import pytest
from pg_dataops.dr import rds
from pg_dataops.dr.rds import Snapshot

UTC = dt.UTC
NOW = dt.datetime(2026, 12, 1, 4, 0, tzinfo=UTC)
INSTANCE = "glimpse-production"
OURS = {"Type": "Manual", "Retention": "30days", "CreatedBy": "pg_dataops", "CreatedByDag": "pg_rds_snapshot"}


def snap(name: str, age_days: float, tags: dict | None = None, *, status: str = "available",
         instance: str = INSTANCE, snapshot_type: str = "manual") -> Snapshot:
    return Snapshot(id=name, instance=instance, status=status, snapshot_type=snapshot_type,
                    created=NOW - dt.timedelta(days=age_days), tags=dict(OURS if tags is None else tags))


def plan(*snapshots: Snapshot, keep_id: str | None = "this-run") -> dict:
    return rds.prune_plan(snapshots, NOW, instance=INSTANCE, keep_id=keep_id)


def kept(p: dict) -> dict[str, str]:
    return {k["id"]: k["reason"] for k in p["keep"]}


def test_snapshot_id_is_the_runs_moment_in_utc():
    seoul = dt.datetime(2026, 12, 1, 13, 0, 5, tzinfo=dt.timezone(dt.timedelta(hours=9)))
    assert rds.snapshot_id("glimpse-manual", INSTANCE, seoul) == "glimpse-manual-glimpse-production-20261201-040005"
    # a rerun of the same run names the same snapshot
    assert rds.snapshot_id("p", "db", seoul) == rds.snapshot_id("p", "db", seoul.astimezone(UTC))
    with pytest.raises(ValueError, match="timezone-aware"):
        rds.snapshot_id("p", "db", dt.datetime(2026, 12, 1))


def test_our_tags_are_the_runbooks_plus_ours():
    assert rds.our_tags(30, "pg_rds_snapshot") == OURS
    assert rds.our_tags(7, "d")["Retention"] == "7days"


@pytest.mark.parametrize(("value", "days"), [("30days", 30), ("1day", 1), ("7 Days", 7), ("30", None),
                                             ("0days", None), ("forever", None), (None, None), ("", None)])
def test_retention_tag(value, days):
    assert rds.parse_retention(value) == days


def test_ours_older_than_its_retention_is_deleted():
    p = plan(snap("old", 31), snap("older", 90, {**OURS, "Retention": "60days"}))
    assert p["delete_ids"] == ["old", "older"]
    assert p["delete"][0]["reason"] == "31.0 days old, past its Retention of 30 days"
    assert p["keep"] == []


def test_ours_younger_than_its_own_retention_is_kept():
    p = plan(snap("young", 29), snap("long-kept", 45, {**OURS, "Retention": "60days"}))
    assert p["delete_ids"] == []
    assert kept(p) == {"long-kept": "45.0 days old, within its Retention of 60 days",
                       "young": "29.0 days old, within its Retention of 30 days"}


def test_untagged_old_snapshot_is_never_deleted():
    p = plan(snap("untagged", 400, {}))
    assert p["delete_ids"] == []
    assert kept(p)["untagged"] == "not made by pg_dataops (no Type=Manual / CreatedBy=pg_dataops tag)"


def test_someone_elses_type_manual_without_created_by_is_kept():
    # the runbook's own CLI snapshots carry Type=Manual and Retention=30days, but not CreatedBy
    p = plan(snap("by-hand", 400, {"Type": "Manual", "Retention": "30days"}),
             snap("other-tool", 400, {"Type": "Manual", "Retention": "30days", "CreatedBy": "terraform"}))
    assert p["delete_ids"] == []
    assert kept(p)["by-hand"] == "not made by pg_dataops (no CreatedBy=pg_dataops tag)"
    assert kept(p)["other-tool"] == "not made by pg_dataops (no CreatedBy=pg_dataops tag)"


def test_created_by_without_type_manual_is_kept():
    p = plan(snap("half", 400, {"CreatedBy": "pg_dataops", "Retention": "30days"}))
    assert p["delete_ids"] == [] and kept(p)["half"] == "not made by pg_dataops (no Type=Manual tag)"


def test_unreadable_retention_is_kept_and_reported():
    p = plan(snap("bad", 400, {**OURS, "Retention": "a month"}), snap("none", 400, {"Type": "Manual",
                                                                                   "CreatedBy": "pg_dataops"}))
    assert p["delete_ids"] == []
    assert p["unreadable_retention"] == ["bad", "none"]
    assert kept(p)["bad"].startswith("Retention tag 'a month' unreadable")


def test_a_snapshot_not_available_is_kept():
    p = plan(snap("creating", 400, status="creating"), snap("failed", 400, status="failed"))
    assert p["delete_ids"] == []
    assert kept(p) == {"creating": "status creating, not available", "failed": "status failed, not available"}


def test_the_snapshot_just_created_is_never_deleted():
    p = plan(snap("this-run", 400), snap("old", 400))
    assert p["delete_ids"] == ["old"] and kept(p) == {"this-run": "made by this run"}


def test_other_instances_and_automated_snapshots_are_kept():
    p = plan(snap("other", 400, instance="glimpse-staging"), snap("rds:auto", 400, snapshot_type="automated"))
    assert p["delete_ids"] == []
    assert kept(p) == {"other": "a snapshot of another instance (glimpse-staging)",
                       "rds:auto": "automated snapshot (RDS manages those)"}


def test_a_snapshot_from_the_future_is_kept():
    p = plan(snap("future", -2))
    assert p["delete_ids"] == [] and kept(p)["future"] == "0.0 days old, within its Retention of 30 days"


def test_snapshot_from_the_api():
    s = Snapshot.from_api({"DBSnapshotIdentifier": "s", "DBInstanceIdentifier": INSTANCE, "Status": "Available",
                           "SnapshotType": "manual", "SnapshotCreateTime": dt.datetime(2026, 1, 1),
                           "TagList": [{"Key": "Type", "Value": "Manual"}]})
    assert (s.status, s.created, s.tags) == ("available", dt.datetime(2026, 1, 1, tzinfo=UTC), {"Type": "Manual"})


def test_report_text_says_what_was_made_deleted_and_kept():
    p = plan(snap("this-run", 0), snap("old", 40), snap("untagged", 40, {}), snap("bad", 40, {**OURS,
                                                                                             "Retention": "x"}))
    facts = {"instance": INSTANCE, "snapshot_id": "this-run", "deleted": ["old"], "not_deleted": [],
             "snapshot": snap("this-run", 0).summary()}
    text = rds.report_text(INSTANCE, facts, p)
    assert text.startswith(":camera: pg_rds_snapshot of RDS instance glimpse-production")
    assert "Snapshot this-run: available (tags: CreatedBy=pg_dataops, CreatedByDag=pg_rds_snapshot, " \
           "Retention=30days, Type=Manual)" in text
    assert "Deleted 1 snapshot(s) past their Retention tag:\n  - old: 40.0 days old, past its Retention of 30 days" \
        in text
    assert "  - untagged: not made by pg_dataops" in text
    assert ":warning: Retention tag unreadable, kept: bad" in text
    failed = rds.report_text(INSTANCE, None, None, failed=["create_snapshot"], error="check_rds: boom")
    assert failed.startswith(":red_circle:") and "Failed tasks: create_snapshot" in failed and "boom" in failed
