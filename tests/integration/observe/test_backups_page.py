"""backups_page.collect against real catalog rows (the session cluster's ``catalog`` database) and real objects
in moto S3: the exact newest backups, ages, sizes, drills, alerts, PITR window, retention plan and restore
values; an unreachable catalog and an empty one.

The targets are named per test run (``page_<hex>``), so rows other tests leave in the shared catalog are not
theirs; the rows seeded here are deleted afterwards.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
import zoneinfo

import devstack
import psycopg
import pytest
from pg_dataops.catalog import monitor_alerts
from pg_dataops.common import pg as pgtools
from pg_dataops.common.config import Standby, Target, load_config
from pg_dataops.common.pg import PgConn
from pg_dataops.observe import backups_page
from pg_dataops.observe.backups_page import collect, read_replication, render

from tests.support.catalog import add_backup, add_drill, fresh_catalog
from tests.support.pitr_basebackup import plant_base_backup, plant_wal
from tests.support.retention import expected_survivors, recent_history, upload

pytestmark = pytest.mark.integration

UTC = dt.UTC
SEOUL = zoneinfo.ZoneInfo("Asia/Seoul")
MiB = 1024**2
RUN = uuid.uuid4().hex[:8]
T, T2 = f"page_{RUN}", f"page_{RUN}_b"  # T: PITR and a standby; T2: neither
SLOT = f"page_slot_{RUN}"
SEG = "0000000100000000000000{:02X}".format


def config(bucket: str):
    base = load_config(environ={"PGBACKUP_BUCKET": bucket})
    return dataclasses.replace(
        base, targets=(Target(T, "glimpse_db"), Target(T2, "glimpse_db")),
        pitr=dataclasses.replace(base.pitr, targets=(T,)),
        dr=dataclasses.replace(base.dr, standbys=(Standby(target=T, name="page-standby", conn_id="standby_db",
                                                          slot=SLOT),)))


def iso(moment: dt.datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment is not None else None


@pytest.fixture
def catalog(cluster):
    """The session catalog, its rows of T and T2 removed afterwards (the page itself never writes)."""
    conn = pgtools.connect(cluster.conn("catalog"), autocommit=True)
    yield conn
    for table, column in (("backup_logs", "target"), ("restore_drills", "target"), ("pitr_recoveries", "target"),
                          ("restore_logs", "target")):
        conn.execute(f"DELETE FROM {table} WHERE {column} IN (%s, %s)", (T, T2))
    conn.execute("DELETE FROM monitor_alerts WHERE dedup_key LIKE %s", (f"%page_{RUN}%",))
    conn.close()


def add_recovery(pg, table: str, **row) -> None:
    columns = ", ".join(row)
    values = ", ".join(f"%({c})s" for c in row)
    pg.execute(f"INSERT INTO {table} ({columns}) VALUES ({values})", row)


def seed_catalog(pg, now: dt.datetime) -> dict:
    """Backups, drills and alerts of T and T2 around ``now``; returns what the test needs to expect."""
    daily = [(now - dt.timedelta(hours=12), 150 * MiB, 60.0)]
    daily += [(now - dt.timedelta(days=d), (100 + 10 * d) * MiB, 60.0 + d) for d in range(2, 10)]
    daily.append((now - dt.timedelta(days=40), 90 * MiB, 50.0))  # before the 30 days
    for when, size, seconds in daily:
        run_id = "scheduled__newest" if when == daily[0][0] else None
        add_backup(pg, when, tier="daily", target=T, size=size, duration=seconds, run_id=run_id)
    add_backup(pg, now + dt.timedelta(hours=1), tier="daily", target=T, size=999 * MiB, run_id="future")
    add_backup(pg, now - dt.timedelta(hours=1), tier="daily", target=T, status="FAILED", step="upload",
               error="upload: bucket <glimpse-backups> missing", run_id="manual__fail")
    add_backup(pg, now - dt.timedelta(days=3), tier="weekly", target=T, size=700 * MiB, duration=180,
               verified=False)
    add_backup(pg, now - dt.timedelta(days=5), tier="monthly", target=T, status="FAILED", step="dump",
               error="dump: cannot reach PostgreSQL")
    add_backup(pg, now - dt.timedelta(days=1), tier="daily", target=T2, size=5 * MiB, duration=7.5)

    for days, status, seconds, error in ((200, "SUCCESS", 100.0, None), (20, "SUCCESS", 3600.0, None),
                                         (13, "SUCCESS", 3720.0, None),
                                         (6, "FAILED", None, "pg_restore: error: out of memory")):
        add_drill(pg, now - dt.timedelta(days=days), status, target=T, total_seconds=seconds, error=error)
    for kind, days, seconds in (("drill", 10, 5400.0), ("restore", 9, 60.0)):
        add_recovery(pg, "pitr_recoveries", recorded_at=now - dt.timedelta(days=days), kind=kind, target=T,
                     base_backup_id="b1", total_seconds=seconds, rto_objective_seconds=14400, status="SUCCESS",
                     dag_id="pg_pitr_drill", run_id=f"scheduled__{kind}")
    for kind, status, days in (("rehearsal", "SUCCESS", 25), ("rehearsal", "DRY_RUN", 2), ("full", "SUCCESS", 1)):
        add_recovery(pg, "restore_logs", recorded_at=now - dt.timedelta(days=days), kind=kind, target=T,
                     backup_key="database/daily/x.dump", status=status, rto_seconds=16200.0,
                     dag_id="pg_recovery_rehearsal", run_id=f"scheduled__{kind}_{status}")

    alerts = (  # key, failing, severity, message, changed
        (f"pg_backup_monitor/last_daily_backup_age/{T}", True, "page", f"last successful backup of {T} is old", 2),
        (f"pg_wal_archive_check/{T}/rpo_at_risk", True, "page", "RPO at risk", 1),
        (f"pg_backup_monitor/verification_missing/{T}", False, "warn", "cleared", 1),
        (f"pg_backup_monitor/encryption/{T}", True, "warn", "not encrypted", 5),
        (f"pg_replication_check/{T2}/standby_gone", True, "page", "standby gone", 3),
        (f"pg_backup_monitor/local_free_space//tmp/page_{RUN}", True, "warn", "free space low", 4),
    )
    for key, failing, severity, message, hours in alerts:
        monitor_alerts.record(pg, key, failing=failing, message=message, severity=severity,
                              now=now - dt.timedelta(hours=hours))
    return {"daily": daily, "alerts": alerts}


def seed_s3(client, cfg, now: dt.datetime) -> dict:
    """pg_backup's objects of both targets (for retention and the restore values) and T's PITR archive."""
    specs, _ = recent_history(40, target=T)
    specs2, _ = recent_history(3, target=T2)
    upload(client, cfg.bucket, specs + specs2)
    # Two base backups before the 7-day window (the newer of them covers its start), one in it, one folder a
    # run left without its manifest three days ago.
    bases = [plant_base_backup(client, cfg, T, now - dt.timedelta(days=days), SEG(seg))
             for days, seg in ((12, 1), (9, 2), (1, 5))]
    died = plant_base_backup(client, cfg, T, now - dt.timedelta(days=3), SEG(5), manifest=False)
    for n in (1, 2, 3, 5, 6):  # 4 is missing: a gap after the oldest base backup
        newest_key = plant_wal(client, cfg, T, SEG(n))
    newest_at = client.head_object(Bucket=cfg.bucket, Key=newest_key)["LastModified"]
    return {"specs": specs, "specs2": specs2, "bases": bases, "died": died, "newest_wal_at": newest_at}


def expected_trend(rows, now: dt.datetime) -> tuple[list, list]:
    """Sizes and durations per day (Seoul), the later success of a day winning: the report's rule, restated."""
    today = now.astimezone(SEOUL).date()
    sizes, seconds = [None] * 30, [None] * 30
    for when, size, duration in sorted(rows):
        i = 29 - (today - when.astimezone(SEOUL).date()).days
        if 0 <= i < 30:
            sizes[i], seconds[i] = size, duration
    return sizes, seconds


def test_collect_reads_exactly_what_the_catalog_and_s3_hold(cluster, s3, bucket, catalog):
    cfg = config(bucket)
    client = s3.client()
    # The page is looked at two minutes after the newest WAL segment was archived.
    now = dt.datetime.now(UTC).replace(microsecond=0) + dt.timedelta(minutes=2)
    seeded = seed_catalog(catalog, now)
    stored = seed_s3(client, cfg, now)
    asked = []
    dead_standby = PgConn("127.0.0.1", devstack.free_port(), "postgres", "postgres", password="standby-secret")

    def replication(target):
        asked.append(target)
        return read_replication(cfg, target, cluster.conn("postgres"), dead_standby)

    data = collect(cfg, catalog=cluster.conn("catalog"), s3_client=client, now=now, replication=replication)
    assert json.loads(json.dumps(data)) == data
    assert set(data) == {"generated_at", "timezone", "rto_objective_seconds", "location", "prefill_supported",
                         "retention", "other_alerts", "targets"}
    assert (data["generated_at"], data["timezone"], data["rto_objective_seconds"], data["location"]) == (
        iso(now), "Asia/Seoul", 14400.0, f"s3://{bucket}/database")
    t, t2 = data["targets"]
    assert [t["name"], t2["name"]] == [T, T2]
    assert asked == [T]  # T2 has no standby

    # The newest backup of each tier, the newer failed attempt beside it; the future row is not "newest".
    newest = now - dt.timedelta(hours=12)
    file_name = f"{T}_daily_{newest:%Y%m%d_%H%M%S}.dump.age"
    failed_at, monthly_at = now - dt.timedelta(hours=1), now - dt.timedelta(days=5)
    weekly_at = now - dt.timedelta(days=3)
    assert t["newest"] == {"tiers": [
        {"tier": "daily", "backup": {
            "backup_date": iso(newest), "age_seconds": 43200.0, "file_name": file_name, "size_bytes": 150 * MiB,
            "duration_seconds": 60.0, "verified": True, "verified_at": iso(newest + dt.timedelta(minutes=3)),
            "s3_uploaded": True, "s3_key": f"database/daily/{file_name}", "dag_id": "pg_backup",
            "run_id": "scheduled__newest", "run_url": "/dags/pg_backup/runs/scheduled__newest"},
         "failed_after": {"at": iso(failed_at), "failed_step": "upload",
                          "error": "upload: bucket <glimpse-backups> missing", "dag_id": "pg_backup",
                          "run_id": "manual__fail", "run_url": "/dags/pg_backup/runs/manual__fail"}},
        {"tier": "weekly", "backup": {
            "backup_date": iso(weekly_at), "age_seconds": 259200.0,
            "file_name": f"{T}_weekly_{weekly_at:%Y%m%d_%H%M%S}.dump.age", "size_bytes": 700 * MiB,
            "duration_seconds": 180.0, "verified": False, "verified_at": None, "s3_uploaded": True,
            "s3_key": f"database/weekly/{T}_weekly_{weekly_at:%Y%m%d_%H%M%S}.dump.age", "dag_id": "pg_backup",
            "run_id": f"seed__weekly__{weekly_at.isoformat()}",
            "run_url": f"/dags/pg_backup/runs/seed__weekly__{weekly_at.isoformat()}"},
         "failed_after": None},
        {"tier": "monthly", "backup": None, "failed_after": {
            "at": iso(monthly_at), "failed_step": "dump", "error": "dump: cannot reach PostgreSQL",
            "dag_id": "pg_backup", "run_id": f"seed__monthly__{monthly_at.isoformat()}",
            "run_url": f"/dags/pg_backup/runs/seed__monthly__{monthly_at.isoformat()}"}},
    ]}
    assert [e["backup"] and e["backup"]["size_bytes"] for e in t2["newest"]["tiers"]] == [5 * MiB, None, None]

    # 30 days of sizes and durations, per Seoul day.
    days = [(now.astimezone(SEOUL).date() - dt.timedelta(days=29 - i)).isoformat() for i in range(30)]
    sizes, seconds = expected_trend(seeded["daily"], now)
    assert t["trend"]["days"] == days
    assert t["trend"]["tiers"]["daily"] == {"size_bytes": sizes, "duration_seconds": seconds}
    assert sum(v is not None for v in sizes) == 9  # 12 h ago and 2..9 days ago; not 40 days ago, not the future
    weekly_sizes, weekly_seconds = expected_trend([(weekly_at, 700 * MiB, 180.0)], now)
    assert t["trend"]["tiers"]["weekly"] == {"size_bytes": weekly_sizes, "duration_seconds": weekly_seconds}
    assert t["trend"]["tiers"]["monthly"] == {"size_bytes": [None] * 30, "duration_seconds": [None] * 30}

    # Drills, PITR drills and rehearsals of the last 180 days, each judged against the 4 h objective.
    def drill(days, status, seconds, error):
        when = now - dt.timedelta(days=days)
        return {"at": iso(when), "status": status, "seconds": seconds, "error": error,
                "backup": f"{T}_daily_{when - dt.timedelta(hours=1):%Y%m%d_%H%M%S}.dump",
                "run_url": f"/dags/pg_restore_drill/runs/seed__{T}__{when.isoformat()}"}

    drills = [drill(20, "SUCCESS", 3600.0, None), drill(13, "SUCCESS", 3720.0, None),
              drill(6, "FAILED", None, "pg_restore: error: out of memory")]
    pitr_drill = {"at": iso(now - dt.timedelta(days=10)), "status": "SUCCESS", "seconds": 5400.0, "error": None,
                  "backup": "b1", "run_url": "/dags/pg_pitr_drill/runs/scheduled__drill"}
    rehearsal = {"at": iso(now - dt.timedelta(days=25)), "status": "SUCCESS", "seconds": 16200.0, "error": None,
                 "backup": "database/daily/x.dump",
                 "run_url": "/dags/pg_recovery_rehearsal/runs/scheduled__rehearsal_SUCCESS"}
    assert t["drills"] == {
        "objective_seconds": 14400.0, "since": iso(now - dt.timedelta(days=180)), "until": iso(now), "kinds": {
            "restore_drill": {"label": "restore drill", "points": drills, "latest": drills[-1], "verdict": {
                "status": "ok", "message": "measured RTO 1 h 2 min is within the objective 4 h (25.8%)",
                "measured_seconds": 3720.0, "measured_at": drills[1]["at"]}},
            "pitr_drill": {"label": "PITR drill", "points": [pitr_drill], "latest": pitr_drill, "verdict": {
                "status": "ok", "message": "measured RTO 1 h 30 min is within the objective 4 h (37.5%)",
                "measured_seconds": 5400.0, "measured_at": pitr_drill["at"]}},
            "rehearsal": {"label": "full recovery rehearsal", "points": [rehearsal], "latest": rehearsal, "verdict": {
                "status": "exceeded", "message": "measured RTO 4 h 30 min exceeds the objective 4 h (112%)",
                "measured_seconds": 16200.0, "measured_at": rehearsal["at"]}}}}
    assert all(k["points"] == [] for k in t2["drills"]["kinds"].values())

    # The failing alerts, each with its target (pages first, then oldest first); the cleared one is gone.
    def alert(key, check, severity, message, hours):
        changed = iso(now - dt.timedelta(hours=hours))
        return {"dedup_key": key, "source": key.split("/")[0], "check": check, "severity": severity,
                "message": message, "since": changed, "last_seen": changed}

    keys = [a[0] for a in seeded["alerts"]]
    assert t["alerts"] == {"open": [
        alert(keys[0], "last_daily_backup_age", "page", f"last successful backup of {T} is old", 2),
        alert(keys[1], "rpo_at_risk", "page", "RPO at risk", 1),
        alert(keys[3], "encryption", "warn", "not encrypted", 5)]}
    assert t2["alerts"] == {"open": [alert(keys[4], "standby_gone", "page", "standby gone", 3)]}
    assert alert(keys[5], "local_free_space", "warn", "free space low", 4) in data["other_alerts"]["open"]

    # PITR: oldest base backup to the newest archived segment, the gap after it, the RPO now, and what the
    # PITR retention of the next pg_base_backup run (03:30 Seoul) deletes: the oldest base backup, the dead
    # folder, and the WAL before the covering backup's start.
    rpo = round((now - stored["newest_wal_at"]).total_seconds(), 1)
    local = now.astimezone(SEOUL)
    next_run = local.replace(hour=3, minute=30, second=0)
    next_run += dt.timedelta(days=1) if next_run <= local else dt.timedelta(0)
    oldest, covering, newest_base = stored["bases"]
    assert t["pitr"] == {
        "configured": True, "window_days": 7, "window_start": iso(now - dt.timedelta(days=12)),
        "window_end": iso(stored["newest_wal_at"]), "recoverable": True, "base_backups": 3,
        "oldest_base_backup": {"backup_id": oldest, "stop_time": iso(now - dt.timedelta(days=12)),
                               "encrypted": False},
        "newest_base_backup": {"backup_id": newest_base, "stop_time": iso(now - dt.timedelta(days=1)),
                               "encrypted": False},
        "incomplete_base_backups": 1, "problems": [], "archived_segments": 5, "newest_segment": SEG(6),
        "newest_segment_at": iso(stored["newest_wal_at"]), "rpo_seconds": rpo, "rpo_objective_seconds": 3600,
        "within_rpo": True, "gaps": [SEG(4)], "missing_segments": 1,
        "retention": {"at": iso(next_run), "refused": None, "planned": True, "delete_base_backups": [oldest],
                      "delete_folders": [f"database/base/{T}/{stored['died']}/"], "delete_wal": 1,
                      "wal_keep_from": SEG(2)}}
    assert covering not in t["pitr"]["retention"]["delete_base_backups"]
    assert 60 < rpo <= 120
    assert t2["pitr"] == {"configured": False}

    # Replication, read for real: the session cluster as the primary (no such slot), a standby nobody runs.
    facts = dict(t["replication"]["facts"])
    assert {k: v for k, v in t["replication"].items() if k != "facts"} == {
        "configured": True, "standby": "page-standby", "slot": SLOT, "warn_seconds": 60, "page_seconds": 300,
        "page_bytes": 1024 * MiB, "slot_page_bytes": 20 * 1024 * MiB}
    errors = facts.pop("errors")
    assert facts == {"state": "standby unreachable", "lag_seconds": None, "lag_bytes": None, "slot_exists": False,
                     "slot_active": None, "slot_retained_bytes": None, "wal_status": None, "replay_paused": None}
    assert len(errors) == 1 and errors[0].startswith(f"cannot reach PostgreSQL at 127.0.0.1:{dead_standby.port}")
    assert t2["replication"] == {"configured": False}

    # What a retention run now would delete: the daily tier's backups past 30 days (the policy, restated).
    survivors = expected_survivors(stored["specs"], now)
    gone = sorted((s for s in stored["specs"] if s.file not in survivors), key=lambda s: s.snapshot)
    assert len(gone) > 5  # 9 or 10 days are past the 30, a few of them weekly or monthly
    assert t["retention"] == {
        "refused": [], "planned": True, "delete": {tier: sum(s.tier == tier for s in gone) for tier in
                                                   ("daily", "weekly", "monthly")},
        "delete_total": len(gone), "keep": len(stored["specs"]) - len(gone), "attention": 0,
        "first_keys": [s.key for s in gone[:5]], "more": len(gone) - 5}
    assert t2["retention"] == {"refused": [], "planned": True, "delete": {"daily": 0, "weekly": 0, "monthly": 0},
                               "delete_total": 0, "keep": len(stored["specs2"]), "attention": 0, "first_keys": [], "more": 0}
    assert data["retention"] == {"as_of": iso(now), "source": f"s3://{bucket}/database",
                                 "policy": {"daily": "30 days", "weekly": "12 weeks", "monthly": "12 months"},
                                 "max_delete_fraction": 0.5, "refused": []}

    # The restore forms get the newest verified backup as the restores find it in S3.
    newest_spec = stored["specs"][-1]
    assert t["restore"] == {
        "backup": {"key": newest_spec.key, "tier": newest_spec.tier, "taken_at": iso(newest_spec.snapshot),
                   "verified": True}, "backup_source": "s3", "forms": [
            {"dag_id": "pg_full_recovery", "params": {"target": T, "backup_key": newest_spec.key},
             "label": "Full recovery", "url": "/dags/pg_full_recovery"},
            {"dag_id": "pg_table_restore", "params": {"target": T, "backup_key": newest_spec.key},
             "label": "Table restore", "url": "/dags/pg_table_restore"},
            {"dag_id": "pg_pitr_restore", "params": {"target": T}, "label": "Point-in-time restore",
             "url": "/dags/pg_pitr_restore"}]}
    assert [f["dag_id"] for f in t2["restore"]["forms"]] == ["pg_full_recovery", "pg_table_restore"]
    assert t2["restore"]["backup"]["key"] == stored["specs2"][-1].key

    # An open connection gives the same catalog sections; nothing secret reaches the page.
    with psycopg.connect(**_params(cluster), autocommit=True) as conn:
        again = collect(cfg, catalog=conn, s3_client=client, now=now)
    assert again["targets"][0]["newest"] == data["targets"][0]["newest"]
    assert again["targets"][0]["drills"] == data["targets"][0]["drills"]
    page = render(data)
    for secret in (cluster.password, "standby-secret", s3.secret_key):
        assert secret not in json.dumps(data) and secret not in page
    assert f'id="target-{T}"' in page and f'id="tier-{T}-daily"' in page and page.count("<svg ") == 14


def _params(cluster) -> dict:
    c = cluster.conn("catalog")
    return {"host": c.host, "port": c.port, "user": c.user, "password": c.password, "dbname": c.dbname}


def test_an_unreachable_catalog_is_shown_in_its_sections(s3, bucket):
    cfg = config(bucket)
    port = devstack.free_port()
    now = dt.datetime.now(UTC).replace(microsecond=0)

    def replication(target):
        raise RuntimeError(f"cannot reach the standby of {target}")

    data = collect(cfg, catalog=PgConn("127.0.0.1", port, "postgres", "catalog", password="catalog-secret"),
                   s3_client=s3.client(), now=now, replication=replication)
    error = data["other_alerts"]["error"]
    assert error.startswith(f"catalog: cannot reach PostgreSQL at 127.0.0.1:{port} ")
    for t in data["targets"]:
        assert {t[k]["error"] for k in ("newest", "trend", "drills", "alerts")} == {error}
    t, t2 = data["targets"]
    # S3's sections are read all the same: an empty bucket says so.
    pitr_retention = t["pitr"].pop("retention")
    assert t["pitr"] == {
        "configured": True, "window_days": 7, "window_start": None, "window_end": None, "recoverable": False,
        "base_backups": 0, "oldest_base_backup": None, "newest_base_backup": None, "incomplete_base_backups": 0,
        "problems": [], "archived_segments": 0, "newest_segment": None, "newest_segment_at": None,
        "rpo_seconds": None, "rpo_objective_seconds": 3600, "within_rpo": False, "gaps": [], "missing_segments": 0}
    assert pitr_retention["planned"] is False and pitr_retention["refused"].startswith(
        f"PITR retention refused: no complete base backup of {T} listed in s3://{bucket}/database/base/{T}/;")
    t["pitr"]["retention"] = pitr_retention
    assert t["replication"]["error"] == f"replication: cannot reach the standby of {T}"
    refused = t["retention"]["refused"]
    assert t["retention"]["planned"] is False and refused == t2["retention"]["refused"] and len(refused) == 2
    assert refused[0].startswith(f"retention refused: no backups found in s3://{bucket}/database for target(s) "
                                 f"{T}, {T2};")
    assert refused[1].startswith(f"retention refused: {T} has no verified backup in s3://{bucket}/database; "
                                 f"{T2} has no verified backup in s3://{bucket}/database.")
    assert t["restore"]["backup"] is None and t["restore"]["forms"][0]["params"] == {"target": T, "backup_key": ""}
    page = render(data)
    assert "catalog-secret" not in json.dumps(data) and "catalog-secret" not in page
    assert page.count(f"could not read: catalog: cannot reach PostgreSQL at 127.0.0.1:{port}") == 9  # 4 x 2 + other


def test_an_empty_catalog_stays_empty(cluster, s3, bucket):
    """The page never creates the catalog's tables (no ensure_schema): it says nothing is recorded yet."""
    dbname = fresh_catalog(cluster, "page_empty")
    now = dt.datetime.now(UTC).replace(microsecond=0)
    data = collect(config(bucket), catalog=cluster.conn(dbname), s3_client=s3.client(), now=now)
    t = data["targets"][0]
    assert t["newest"] == {"note": "no backup recorded yet (the catalog has no backup_logs table)", "tiers": [
        {"tier": tier, "backup": None, "failed_after": None} for tier in ("daily", "weekly", "monthly")]}
    assert t["trend"]["tiers"]["daily"] == {"size_bytes": [None] * 30, "duration_seconds": [None] * 30}
    assert [k["points"] for k in t["drills"]["kinds"].values()] == [[], [], []]
    assert t["alerts"] == {"open": []} and data["other_alerts"] == {"open": []}
    with pgtools.connect(cluster.conn(dbname)) as pg:
        tables = pg.execute("SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace").fetchone()
    assert tables == (0,)
    # And the session it opens could not have written: the server refuses.
    pg = backups_page._open_catalog(cluster.conn(dbname))
    try:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction), pg.transaction():
            pg.execute("CREATE TABLE backup_logs (id int)")
    finally:
        pg.close()
