"""pg_failover end to end with `airflow dags test` on two real clusters: a primary and a streaming standby built by
the provisioning code. One sequence, as a DBA would live it: a failover while the primary is healthy is refused
(nothing changes); rows are committed, the standby catches up, the primary is killed (SIGKILL); a dry run shows
the plan and changes nothing; a failover whose application restart fails midway leaves a red run with the standby
promoted and the env file repointed; the same params again finish the job (DNS record, verification). The standby
then holds every row committed before the kill, and the failover time (trigger to writable new primary) and the
data lost are printed."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import boto3
import psycopg
import pytest
import yaml

from tests.support.dr import kill_primary, query, streaming_pair, wait_caught_up
from tests.support.pg import table_digests

from .conftest import json_posts

pytestmark = pytest.mark.dagrun

REPO = Path(__file__).resolve().parents[2]
DAG_ID = "pg_failover"
STANDBY = "glimpse-standby"


@pytest.fixture
def pair():
    with streaming_pair("glimpse_standby", demo_users=200) as servers:
        yield servers


def route53(s3):
    return boto3.client("route53", endpoint_url=s3.endpoint, aws_access_key_id=s3.access_key,
                        aws_secret_access_key=s3.secret_key, region_name=s3.region)


def record_value(client, zone: str, name: str) -> str:
    sets = client.list_resource_record_sets(HostedZoneId=zone, StartRecordName=name, StartRecordType="CNAME",
                                            MaxItems="1")["ResourceRecordSets"]
    return sets[0]["ResourceRecords"][0]["Value"]


def failovers(cluster, run_id: str) -> list[dict]:
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                         dbname="catalog", row_factory=psycopg.rows.dict_row) as pg:
        if not pg.execute("SELECT to_regclass('public.failovers') IS NOT NULL AS e").fetchone()["e"]:
            return []
        return pg.execute("SELECT * FROM failovers WHERE run_id = %s ORDER BY id", (run_id,)).fetchall()


def test_failover_refused_dry_run_then_finished_by_a_rerun(run_dag, cluster, s3, bucket, receiver, tmp_path, pair,
                                                           measured):
    primary, standby = pair
    client = route53(s3)
    zone_name = f"glimpse-{uuid.uuid4().hex[:8]}.internal."
    zone = client.create_hosted_zone(Name=zone_name, CallerReference=uuid.uuid4().hex)["HostedZone"]["Id"]
    record = f"db.{zone_name}"
    client.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": [{"Action": "CREATE",
        "ResourceRecordSet": {"Name": record, "Type": "CNAME", "TTL": 60,
                              "ResourceRecords": [{"Value": "primary.glimpse.test"}]}}]})
    env_file = tmp_path / "env.production"
    original_env = (f"# Glimpse API\nNODE_ENV=production\nDB_HOST=127.0.0.1\nDB_PORT={primary.port}\n"
                    "DB_NAME=glimpse\n")
    env_file.write_text(original_env)
    marker, fail_once = tmp_path / "restarts.txt", tmp_path / "fail-once"
    fail_once.touch()
    restart = (f"import os, sys; open({str(marker)!r}, 'a').write('restart\\n'); f = {str(fail_once)!r}; "
               "failing = os.path.exists(f); failing and os.remove(f); "
               "print('glimpse-api: unit failed to start' if failing else 'restarted'); sys.exit(3 if failing else 0)")
    raw = yaml.safe_load((REPO / "include" / "config" / "pgbackup.yaml").read_text())
    raw["dr"]["standbys"] = {"glimpse": {"name": STANDBY, "conn_id": "glimpse_standby_db", "slot": "glimpse_standby",
                                         "dns_value": "localhost"}}
    raw["dr"]["failover"].update(
        env_file=str(env_file), app_restart={"command": [sys.executable, "-c", restart], "timeout_seconds": 30},
        route53={"zone_id": zone, "record_name": record, "record_type": "CNAME", "ttl": 60, "conn_id": "aws_route53"})
    config = tmp_path / "pgbackup.yaml"
    config.write_text(yaml.safe_dump(raw))
    conns = {"glimpse_db": primary.airflow_conn("glimpse"), "glimpse_standby_db": standby.airflow_conn("glimpse"),
             "aws_route53": json.dumps({"conn_type": "aws", "login": s3.access_key, "password": s3.secret_key,
                                        "extra": {"region_name": s3.region, "endpoint_url": s3.endpoint}})}

    def run(conf: dict):
        return run_dag(DAG_ID, bucket=bucket, conns=conns, env={"PGBACKUP_CONFIG": str(config)}, conf=conf)

    go = {"dry_run": False, "confirm": STANDBY}

    # --- 1. the primary is healthy: refused, nothing changed ------------------------------------------------
    refused = run(go)
    assert refused.state == "failed", refused.output[-4000:]
    states = refused.task_states
    assert states["validate"] == "failed" and states["approve_failover"] == "upstream_failed", states
    assert states["promote"] == "upstream_failed" and states["report"] == "success", states
    (row,) = failovers(cluster, refused.run_id)
    assert row["status"] == "REFUSED" and f"the primary at 127.0.0.1:{primary.port} is healthy" in row["error_message"]
    assert standby.in_recovery() and env_file.read_text() == original_env
    assert record_value(client, zone, record) == "primary.glimpse.test"
    pd = json_posts(receiver, "/pagerduty")
    assert len(pd) == 1 and "is healthy" in pd[0]["payload"]["summary"], pd

    # --- committed rows, a caught-up standby, then the primary crashes ----------------------------------------
    query(primary, "CREATE TABLE failover_marker (id int PRIMARY KEY, note text NOT NULL)", dbname="glimpse")
    query(primary, "INSERT INTO failover_marker SELECT g, 'committed before the crash ' || g "
                   "FROM generate_series(1, 5000) g", dbname="glimpse")
    wait_caught_up(primary, standby)
    before_crash = table_digests(primary, "glimpse")
    kill_primary(primary)

    # --- 2. the default dry run: the plan, nothing changed -------------------------------------------------
    dry = run({"confirm": STANDBY})
    assert dry.state == "success", dry.output[-4000:]
    states = dry.task_states
    assert states["validate"] == "success" and states["approve_failover"] == "skipped", states
    assert all(states[t] == "skipped" for t in ("fence", "promote", "repoint", "restart_app", "update_dns", "verify"))
    (row,) = failovers(cluster, dry.run_id)
    assert (row["status"], row["dry_run"], row["primary_state"]) == ("DRY_RUN", True, "down"), row
    assert row["loss"]["known"] is False and row["new_primary"] == f"127.0.0.1:{standby.port}"
    assert standby.in_recovery() and env_file.read_text() == original_env and not marker.exists()
    slack = [p["text"] for p in json_posts(receiver, "/slack")]
    assert any(t.startswith(":mag: Failover of glimpse dry run: nothing was changed") for t in slack), slack

    # --- 3. the failover; the application's restart fails midway -------------------------------------------
    midway = run(go)
    assert midway.state == "failed", midway.output[-4000:]
    states = midway.task_states
    assert states["approve_failover"] == "success" and states["fence"] == "success", states
    assert states["promote"] == "success" and states["repoint"] == "success", states
    assert states["restart_app"] == "failed" and states["update_dns"] == "upstream_failed", states
    assert states["verify"] == "upstream_failed" and states["report"] == "success", states
    (row,) = failovers(cluster, midway.run_id)
    assert row["status"] == "FAILED" and "dr.failover.app_restart failed" in row["error_message"], row
    assert "glimpse-api: unit failed to start" in row["error_message"]
    failover_seconds = float(row["failover_seconds"])
    assert not standby.in_recovery()  # promoted: it takes writes now
    repointed = original_env.replace(f"DB_PORT={primary.port}", f"DB_PORT={standby.port}")
    assert env_file.read_text() == repointed
    backups = list(tmp_path.glob("env.production.before_failover_*"))
    assert len(backups) == 1 and backups[0].read_text() == original_env
    assert record_value(client, zone, record) == "primary.glimpse.test"  # not reached yet

    # --- 4. the same params again finish the job --------------------------------------------------------------
    rerun = run(go)
    assert rerun.state == "success", rerun.output[-4000:]
    assert all(s == "success" for t, s in rerun.task_states.items() if t != "run_outcome"), rerun.task_states
    (row,) = failovers(cluster, rerun.run_id)
    assert row["status"] == "SUCCESS" and row["approved_by"] == "confirm param", row
    assert row["results"]["promote"]["already_promoted"] is True
    assert row["results"]["repoint"]["env_file"]["changed"] is False
    assert row["results"]["dns"]["changed"] is True and row["results"]["dns"]["after"] == "localhost"
    vias = [w["via"] for w in row["results"]["verify"]["writes"]]
    assert vias == [f"the new primary 127.0.0.1:{standby.port}", f"the DNS record {record} (localhost)"], vias
    assert record_value(client, zone, record) == "localhost"
    assert env_file.read_text() == repointed and backups[0].read_text() == original_env
    assert marker.read_text() == "restart\nrestart\n"
    assert [t["step"] for t in row["timeline"]] == ["validate", "approve", "fence", "promote", "repoint",
                                                     "restart_app", "dns", "verify"]
    # every row committed before the crash is on the new primary
    after = table_digests(standby, "glimpse")
    lost = {t: (before_crash[t], after.get(t)) for t in before_crash if after.get(t) != before_crash[t]}
    assert lost == {}, lost
    slack = [p["text"] for p in json_posts(receiver, "/slack")]
    done = [t for t in slack if t.startswith(":rotating_light: Failover of glimpse done: ")]
    assert len(done) == 1 and "  dns: success" in done[0] and "  verify: success" in done[0], slack
    pd = json_posts(receiver, "/pagerduty")
    assert [p["dedup_key"] for p in pd] == [f"pg_failover/glimpse/{rerun.run_id}"], pd
    assert pd[0]["payload"]["custom_details"]["timeline"][3]["step"] == "promote"
    measured(f"pg_failover drill (airflow dags test): trigger to writable new primary {failover_seconds:.1f} s (target < 30 s); "
          f"committed rows lost: 0 of {before_crash['public.failover_marker'][0]} (caught-up standby, SIGKILL)")
