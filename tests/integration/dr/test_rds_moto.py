"""pg_rds_snapshot's core against moto in server mode (real HTTP, the RDS API): the checks before the snapshot,
reuse on a rerun, listing with tags, the pruning plan, and deletion of exactly the planned snapshots."""

from __future__ import annotations

import datetime as dt
import uuid

import boto3
import pytest
from pg_dataops.dr import rds

pytestmark = pytest.mark.integration

UTC = dt.UTC
OURS = rds.our_tags(30, "pg_rds_snapshot")


def rds_client(s3):
    return boto3.client("rds", endpoint_url=s3.endpoint, aws_access_key_id=s3.access_key,
                        aws_secret_access_key=s3.secret_key, region_name=s3.region)


def create_instance(client, name: str) -> None:
    client.create_db_instance(DBInstanceIdentifier=name, DBInstanceClass="db.t3.micro", Engine="postgres",
                              EngineVersion="15.4", MasterUsername="glimpse", MasterUserPassword="not-a-secret-1",
                              AllocatedStorage=20)


def tag_list(tags: dict) -> list[dict]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


@pytest.fixture
def instance(s3):
    """A fresh RDS instance (and another one beside it) in the session's moto server."""
    client = rds_client(s3)
    name = f"glimpse-{uuid.uuid4().hex[:8]}"
    create_instance(client, name)
    create_instance(client, name + "-other")
    return name


def test_snapshot_rerun_and_pruning_against_rds(s3, instance):
    client = rds_client(s3)
    # Snapshot identifiers are unique per account and region: named after the instance, the session's moto
    # server can hold other tests' snapshots.
    S = {k: f"{instance}-{k}" for k in ("ours-old", "ours-long", "ours-bad-retention", "untagged", "by-hand",
                                        "other-instance-ours")}
    snap = lambda name, inst, tags: client.create_db_snapshot(  # noqa: E731
        DBInstanceIdentifier=inst, DBSnapshotIdentifier=name, Tags=tag_list(tags))
    snap(S["ours-old"], instance, OURS)
    snap(S["ours-long"], instance, {**OURS, "Retention": "60days"})
    snap(S["ours-bad-retention"], instance, {**OURS, "Retention": "a month"})
    snap(S["untagged"], instance, {})
    snap(S["by-hand"], instance, {"Type": "Manual", "Retention": "30days"})  # the runbook's CLI snapshot
    snap(S["other-instance-ours"], instance + "-other", OURS)
    # moto stamps every snapshot "now": the run happens 40 days later
    moment = dt.datetime.now(UTC) + dt.timedelta(days=40)

    checked = rds.preflight(client, instance, "glimpse-manual", moment)
    name = checked["snapshot_id"]
    assert name == f"glimpse-manual-{instance}-{moment:%Y%m%d-%H%M%S}"
    assert (checked["instance_status"], checked["engine"]) == ("available", "postgres")
    assert rds.existing_snapshot(client, name, instance) is None  # first try: create it
    client.create_db_snapshot(DBInstanceIdentifier=instance, DBSnapshotIdentifier=name, Tags=tag_list(OURS))
    reused = rds.existing_snapshot(client, name, instance)  # a retry or rerun: reuse it
    assert reused["id"] == name and reused["status"] == "available" and reused["tags"] == OURS

    listed = {s.id: s for s in rds.list_snapshots(client, instance)}
    assert set(listed) == {S["ours-old"], S["ours-long"], S["ours-bad-retention"], S["untagged"], S["by-hand"], name}
    assert listed[S["ours-old"]].tags == OURS and listed[S["ours-old"]].snapshot_type == "manual"

    plan = rds.plan_for(client, instance, moment, keep_id=name)
    assert plan["delete_ids"] == [S["ours-old"]]
    assert plan["unreadable_retention"] == [S["ours-bad-retention"]]
    reasons = {k["id"]: k["reason"] for k in plan["keep"]}
    assert reasons[name] == "made by this run"
    assert reasons[S["ours-long"]].endswith("within its Retention of 60 days")
    assert reasons[S["untagged"]].startswith("not made by pg_dataops")
    assert reasons[S["by-hand"]] == "not made by pg_dataops (no CreatedBy=pg_dataops tag)"

    for snapshot_id in plan["delete_ids"]:
        client.delete_db_snapshot(DBSnapshotIdentifier=snapshot_id)
    facts = rds.outcome(client, instance, name, plan)
    assert facts["deleted"] == [S["ours-old"]] and facts["not_deleted"] == []
    assert facts["snapshot"]["status"] == "available"
    assert {s.id for s in rds.list_snapshots(client, instance)} == {
        S["ours-long"], S["ours-bad-retention"], S["untagged"], S["by-hand"], name}
    assert rds.describe_snapshot(client, S["other-instance-ours"]) is not None  # another instance: never listed


def test_refusals_name_the_cause(s3, instance):
    client = rds_client(s3)
    with pytest.raises(rds.RdsRefused, match=r"RDS instance 'glimpse-missing' \(dr.rds_instance_id\) does not exist"):
        rds.preflight(client, "glimpse-missing", "glimpse-manual", dt.datetime.now(UTC))
    # a snapshot under this run's name that someone else made is not adopted
    client.create_db_snapshot(DBInstanceIdentifier=instance, DBSnapshotIdentifier=f"{instance}-taken-name",
                              Tags=tag_list({"Type": "Manual"}))
    with pytest.raises(rds.RdsRefused, match="already exists but was not made by pg_dataops"):
        rds.existing_snapshot(client, f"{instance}-taken-name", instance)
    # nor one of ours made for another instance
    client.create_db_snapshot(DBInstanceIdentifier=instance + "-other", DBSnapshotIdentifier=f"{instance}-other-name",
                              Tags=tag_list(OURS))
    with pytest.raises(rds.RdsRefused, match="already exists but was not made by pg_dataops"):
        rds.existing_snapshot(client, f"{instance}-other-name", instance)
