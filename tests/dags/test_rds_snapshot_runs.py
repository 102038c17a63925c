"""pg_rds_snapshot end to end with `airflow dags test` against moto in server mode (the RDS API over real HTTP):
a snapshot with the runbook's tags, our expired snapshots pruned by their own Retention tag, everything else
untouched, the Slack summary; and a deployment not on RDS, where the run does nothing and says why."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import boto3
import pytest
from pg_dataops.dr import rds

from .conftest import json_posts

pytestmark = pytest.mark.dagrun

DAG_ID = "pg_rds_snapshot"
OURS = rds.our_tags(30, DAG_ID)


def rds_client(s3):
    return boto3.client("rds", endpoint_url=s3.endpoint, aws_access_key_id=s3.access_key,
                        aws_secret_access_key=s3.secret_key, region_name=s3.region)


def aws_conn(s3) -> str:
    return json.dumps({"conn_type": "aws", "login": s3.access_key, "password": s3.secret_key,
                       "extra": {"region_name": s3.region, "endpoint_url": s3.endpoint}})


def snapshots(client, instance: str) -> dict[str, dict]:
    items = client.describe_db_snapshots(DBInstanceIdentifier=instance, SnapshotType="manual")["DBSnapshots"]
    return {s["DBSnapshotIdentifier"]: {"status": s["Status"], "tags": {t["Key"]: t["Value"] for t in s["TagList"]}}
            for s in items}


def test_snapshot_tagged_and_ours_pruned_by_tag(run_dag, s3, bucket, receiver):
    client = rds_client(s3)
    instance = f"glimpse-{uuid.uuid4().hex[:8]}"
    client.create_db_instance(DBInstanceIdentifier=instance, DBInstanceClass="db.t3.micro", Engine="postgres",
                              MasterUsername="glimpse", MasterUserPassword="not-a-secret-1", AllocatedStorage=20)
    before = {
        "ours-old": OURS,
        "ours-long": {**OURS, "Retention": "60days"},
        "untagged": {},
        "by-hand": {"Type": "Manual", "Retention": "30days"},  # the runbook's CLI snapshot: no CreatedBy
    }
    # Snapshot identifiers are unique per account and region: named after the instance, the session's moto
    # server can hold other tests' snapshots.
    sid = f"{instance}-{{}}".format
    for name, tags in before.items():
        client.create_db_snapshot(DBInstanceIdentifier=instance, DBSnapshotIdentifier=sid(name),
                                  Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
    # moto stamps snapshots "now"; the run's logical date, by which ages are judged, is 40 days later
    moment = (dt.datetime.now(dt.UTC) + dt.timedelta(days=40)).replace(microsecond=0)
    run = run_dag(DAG_ID, moment.isoformat(), bucket=bucket,
                  env={"PGBACKUP_DR_RDS_INSTANCE_ID": instance, "PGBACKUP_DR_RDS_CONN_ID": "aws_rds"},
                  conns={"aws_rds": aws_conn(s3)})
    assert run.state == "success", run.output[-4000:]
    assert run.task_states == {
        "check_rds": "success", "create_snapshot": "success", "wait_available": "success", "plan_prune": "success",
        "delete_snapshot[0]": "success", "report": "success", "run_outcome": "skipped"}, run.output[-4000:]

    name = f"glimpse-manual-{instance}-{moment:%Y%m%d-%H%M%S}"
    after = snapshots(client, instance)
    assert after[name] == {"status": "available", "tags": {"Type": "Manual", "Retention": "30days",
                                                           "CreatedBy": "pg_dataops", "CreatedByDag": DAG_ID}}
    assert sid("ours-old") not in after
    assert {k: v["tags"] for k, v in after.items() if k != name} == {
        sid(k): v for k, v in before.items() if k != "ours-old"}

    (slack,) = json_posts(receiver, "/slack")
    text = slack["text"]
    assert text.startswith(f":camera: pg_rds_snapshot of RDS instance {instance}")
    assert f"Snapshot {name}: available (tags: CreatedBy=pg_dataops" in text
    assert (f"Deleted 1 snapshot(s) past their Retention tag:\n  - {sid('ours-old')}: 40.0 days old, past its "
            "Retention of 30 days") in text
    assert f"  - {sid('untagged')}: not made by pg_dataops (no Type=Manual / CreatedBy=pg_dataops tag)" in text
    assert f"  - {sid('by-hand')}: not made by pg_dataops (no CreatedBy=pg_dataops tag)" in text
    assert f"  - {sid('ours-long')}: 40.0 days old, within its Retention of 60 days" in text
    assert f"  - {name}: made by this run" in text
    assert json_posts(receiver, "/pagerduty") == []


def test_not_on_rds_the_run_does_nothing(run_dag, bucket, receiver):
    run = run_dag(DAG_ID, bucket=bucket, conns={"aws_rds": None})
    assert run.state == "success", run.output[-4000:]
    states = run.task_states
    assert states["check_rds"] == "skipped" and states["report"] == "skipped", states
    assert {states[t] for t in ("create_snapshot", "wait_available", "plan_prune")} == {"skipped"}
    assert "RDS is not configured: dr.rds_instance_id is null" in run.output
    assert receiver.requests == []
