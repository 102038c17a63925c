"""pg_failover's decisions on the servers' state (``pg_dataops.dr.failover``): refusals before anything changes,
the data a failover would lose, the approval's text, the report's status and timeline."""

from __future__ import annotations

import datetime as dt

import pytest
from pg_dataops.common.config import AppStep, Failover, Route53Record
from pg_dataops.common.pg import PgConn
from pg_dataops.dr import failover
from pg_dataops.dr.failover import FailoverRefused

NOW = dt.datetime(2026, 12, 1, 3, 0, tzinfo=dt.UTC)
PRIMARY = PgConn("10.0.0.1", 5432, "postgres", "glimpse", "pw")
STANDBY = PgConn("10.0.0.2", 5432, "postgres", "glimpse", "pw")
IDENT = "7300000000000000001"


def primary(**kw):
    return {"in_recovery": False, "current_lsn": "0/5000000", "system_identifier": IDENT, "timeline": 1, **kw}


def standby(**kw):
    return {"in_recovery": True, "receive_lsn": "0/4FFF000", "replay_lsn": "0/4FFE000", "replay_backlog_bytes": 4096,
            "last_replay_at": "2026-12-01T02:59:58+00:00", "replay_paused": False, "timeline": 1,
            "system_identifier": IDENT, "receiver": None, **kw}


def assess(**kw):
    args = dict(target="glimpse", standby_name="glimpse-standby", slot="glimpse_standby", primary_conn=PRIMARY,
                standby_conn=STANDBY, primary=None, primary_error="cannot reach PostgreSQL at 10.0.0.1:5432",
                standby=standby(), standby_error=None, force=False, dry_run=False, confirm="",
                failover_cfg=Failover(), dns_value=None, now=NOW)
    args.update(kw)
    return failover.assess(**args)


def test_a_healthy_primary_is_refused_without_force():
    with pytest.raises(FailoverRefused, match=r"the primary at 10.0.0.1:5432 is healthy .* at 0/5000000.*force = true"):
        assess(primary=primary(), primary_error=None)


def test_with_force_the_loss_is_exact():
    plan = assess(primary=primary(), primary_error=None, force=True)
    assert plan["primary_state"] == "healthy"
    assert plan["loss"]["known"] is True and plan["loss"]["bytes"] == 0x5000000 - 0x4FFF000
    assert ("* **Data lost by failing over now**: **4.0 KiB** of WAL (4096 bytes): the primary is at 0/5000000, the "
            "standby received up to 0/4FFF000") in plan["markdown"]


def test_a_lost_primary_gives_an_unknown_loss_after_the_last_contact():
    plan = assess(standby=standby(receiver={"status": "waiting", "last_msg_receipt_time": "2026-12-01T02:59:59+00:00",
                                            "latest_end_lsn": "0/4FFF000"}))
    assert plan["primary_state"] == "down" and plan["loss"]["known"] is False and plan["loss"]["bytes"] is None
    assert "last message from the primary at 2026-12-01T02:59:59+00:00" in plan["loss"]["why"]
    assert "**unknown**" in plan["markdown"] and "**Primary** 10.0.0.1:5432: **down**" in plan["markdown"]
    assert plan["expected_confirm"] == "glimpse-standby" and plan["new_host"] == "10.0.0.2"
    assert plan["dns_value"] == "10.0.0.2"


def test_a_wrong_confirm_is_refused_before_any_check():
    with pytest.raises(FailoverRefused, match="confirm 'yes' is not the standby's name 'glimpse-standby'"):
        assess(confirm="yes", standby=None, standby_error="down too")


def test_an_unreachable_standby_is_refused():
    with pytest.raises(FailoverRefused, match="standby glimpse-standby at 10.0.0.2:5432 does not answer: refused"):
        assess(standby=None, standby_error="refused")


def test_a_foreign_standby_is_refused():
    with pytest.raises(FailoverRefused, match="is not a copy of the primary"):
        assess(primary=primary(), primary_error=None, force=True, standby=standby(system_identifier="42"))


def test_the_standby_connection_must_not_be_the_primary():
    with pytest.raises(FailoverRefused, match="points at the primary itself"):
        assess(standby_conn=PRIMARY)


def test_an_already_promoted_standby_is_a_rerun():
    plan = assess(standby=standby(in_recovery=False))
    assert plan["already_promoted"] is True and plan["loss"] == {
        "received_lsn": "0/4FFF000", "replayed_lsn": "0/4FFE000", "unreplayed_bytes": 4096, "known": True, "bytes": 0,
        "why": "the standby was promoted already (a rerun)"}
    promote = next(s for s in plan["steps"] if s["step"] == "promote")
    assert promote["skipped"].startswith("already promoted")


def test_steps_say_what_they_do_or_why_not():
    cfg = Failover(fence=AppStep(kind="command", argv=("fence-db", "10.0.0.1")), env_file="/opt/glimpse/.env",
                   route53=Route53Record(zone_id="Z1", record_name="db.glimpse.internal."))
    steps = {s["step"]: s for s in assess(failover_cfg=cfg)["steps"]}
    assert steps["fence"] == {"step": "fence", "does": "fence-db 10.0.0.1", "skipped": None}
    assert steps["repoint"]["does"] == "env file /opt/glimpse/.env"
    assert steps["restart_app"]["skipped"] == "no dr.failover.app_restart configured"
    assert steps["dns"]["does"] == "UPSERT CNAME db.glimpse.internal."


def test_status_and_timeline_of_the_report():
    plan = assess()
    assert failover.status_of(plan=None, error="validate: x", approval=None, done=False) == "REFUSED"
    assert failover.status_of(plan={**plan, "dry_run": True}, error=None, approval=None, done=False) == "DRY_RUN"
    assert failover.status_of(plan=plan, error=None, approval={"approved": False}, done=False) == "REJECTED"
    assert failover.status_of(plan=plan, error="restart_app: exit 1", approval={"approved": True},
                              done=False) == "FAILED"
    triggered = NOW - dt.timedelta(seconds=30)
    row = failover.report_row(
        plan=plan, results={"promote": {"writable_at": (triggered + dt.timedelta(seconds=12.5)).isoformat()},
                            "verify": {"writes": []}},
        timings={"validate": {"state": "success", "seconds": 1.0}, "promote": {"state": "success", "seconds": 2.0}},
        error=None, approval={"approved": True, "responded_by": "confirm"}, target="glimpse",
        params={"dry_run": False, "force": False}, triggered_by="manual run", triggered_at=triggered,
        dag_id="pg_failover", run_id="r1")
    assert row["status"] == "SUCCESS" and row["failover_seconds"] == 12.5 and row["total_seconds"] == 3.0
    assert [t["step"] for t in row["timeline"]] == list(failover.STEPS)
    assert row["timeline"][2] == {"step": "fence", "state": "not run"}
    text = failover.report_text(row)
    assert text.startswith(":rotating_light: Failover of glimpse done: 10.0.0.2:5432 is the primary")
    assert "Failover time (trigger to writable new primary): 12.5 s" in text and "  promote: success (2.0 s)" in text
