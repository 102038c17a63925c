"""Benchmark of point-in-time recovery (issue 10, item 7): part of ``make bench``, alone with ``BENCH_PITR_ONLY=1``.

On a Glimpse demo database of about BENCH_SIZE_MB (default 1000) in a throwaway PostgreSQL 15 cluster whose
WAL barman-cloud-wal-archive ships to a moto S3 server (the database host's setup, include/config/
postgresql-pitr.conf), it measures:

(a) **Base backup**: ``take_base_backup`` to moto, unencrypted and age-encrypted, against raw
    ``pg_basebackup -D DIR -Ft -X fetch -c fast`` followed by ``zstd -L -TW base.tar`` (the pipeline's level
    and workers, ``pitr.base_compression_level/workers``), and against raw ``pg_basebackup ...
    --compress=client-zstd:level=L,workers=W``. Target: within 1.10x raw. Runs interleaved, medians of 3
    after a warm-up (BENCH_QUICK=1: one run each), repeated when other workloads shared the vCPUs
    (scripts/bench.py's ``Runs``).
(b) **Physical recovery**: an age-encrypted base backup, then BENCH_PITR_WAL_MINUTES (default 10;
    BENCH_QUICK=1: 2) of a steady write load (pgbench with a custom script at BENCH_PITR_TPS, default 100,
    transactions per second: a message inserted, a user updated) at archive_timeout 60, then pg_pitr_restore's
    core timed step by step, from trigger to ``glimpse_recovery`` ready: validate (S3 listings, plan),
    restore (download + SHA-256 + age -d + zstd -d + tar -x), replay (pg_pitr_restore's restore_command:
    barman-cloud-wal-restore prefetching in parallel, to the end of the load), checks (every table counted), copy (pg_dump | pg_restore into the target
    server); the segments restored from S3. Target: restore + replay under 60 s. One run.
(c) **RPO**: tests/support/pitr_drill.py's crash scenario (one row committed every 50 ms, SIGKILL of the
    postmaster, data directory deleted, recovery to the end of the archive from S3 alone) at archive_timeout
    60 and 10 s, each crash on its own small cluster; the commits lost and the time they cover, against
    archive_timeout. The loss depends on where the kill falls between two forced segment switches: per
    setting one kill a quarter of archive_timeout after a switch and one at nine tenths.

BENCH_PITR_PARTS (default ``base,recovery,rpo``) picks parts, e.g. ``rpo`` alone needs no big database.

Loading the database with the real archive_command would ship every segment of the load for nothing (no
recovery starts before the base backup): the cluster loads with ``archive_command = '/bin/true'``, then the
Barman command is set (ALTER SYSTEM, reload) and a segment switch archived before anything is timed.

Run alone: ``.venv/bin/python scripts/bench_pitr.py`` (what BENCH_PITR_ONLY=1 make bench does). Nothing here
is used in production.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for _p in (REPO, REPO / "tools", REPO / "plugins", REPO / "scripts"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import bench  # noqa: E402 - the shared machinery: Runs, _timed, calibrate, log, ...
import devstack  # noqa: E402
from bench import MB, log, med  # noqa: E402
from psycopg import sql  # noqa: E402

TARGET = "glimpse"
WAL_TOOLS_BIN = "/opt/pg-dataops/wal-tools/bin"
BASE_BACKUP_TARGET = 1.10  # take_base_backup within 1.10x raw pg_basebackup at the same settings
RECOVERY_TARGET_SECONDS = 60.0  # restore + replay of ~1 GB with 10 minutes of WAL
RPO_TIMEOUTS = (60, 10)
# The loss depends on where the kill falls between two forced segment switches (every archive_timeout after the
# base backup's own switch, while there is activity): one kill a quarter of the interval after a switch, one
# shortly before the next, so the two bracket what a crash can cost.
RPO_KILL_PHASES = (0.25, 0.9)
LOAD_SCRIPT = """\
\\set mid random(1, :max_match)
INSERT INTO messages (match_id, sender_id, receiver_id, body, sent_at)
  SELECT id, user1_id, user2_id, md5(random()::text) || ' ' || md5(random()::text), now() FROM matches WHERE id = :mid;
UPDATE users SET last_login_at = now() WHERE id = (SELECT user2_id FROM matches WHERE id = :mid);
"""


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip() not in ("", "0")


# ---------------------------------------------------------------------------------------------
# The archiving cluster
# ---------------------------------------------------------------------------------------------

def pitr_config(bucket: str, scratch_root: Path):
    from pg_dataops.common.config import load_config

    return load_config(environ={"PGBACKUP_BUCKET": bucket, "PGBACKUP_PITR_WAL_TOOLS_BIN": WAL_TOOLS_BIN,
                                "PGBACKUP_PITR_SCRATCH_ROOT": str(scratch_root),
                                "PGBACKUP_PITR_ARCHIVE_TIMEOUT_SECONDS": "60"})


def start_cluster(s3) -> devstack.LocalCluster:
    from tests.support.pitr import aws_server_env

    settings = {**bench.CLUSTER_SETTINGS, "wal_level": "replica", "archive_mode": "on",
                "archive_command": "'/bin/true'", "archive_timeout": "60", "max_wal_senders": "5",
                "checkpoint_timeout": "'5min'"}
    return devstack.LocalCluster(settings=settings, env=aws_server_env(s3)).start()


def alter_system(cluster, name: str, value: str) -> None:
    from tests.support.pitr import connect

    with connect(cluster, "postgres", autocommit=True) as pg:
        pg.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
        pg.execute("SELECT pg_reload_conf()")


def start_archiving(cluster, cfg, s3) -> str:
    """The real archive_command from now on; the first segment switch archived through it."""
    from pg_dataops.common import wal

    from tests.support.pitr import switch_and_wait

    alter_system(cluster, "archive_command",
                 wal.command_line(wal.archive_command_argv(cfg, TARGET, endpoint_url=s3.endpoint)))
    time.sleep(1)  # the reload reaches the archiver
    return switch_and_wait(cluster, timeout=120)


def delete_prefix(client, bucket: str, prefix: str) -> None:
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=obj["Key"])


# ---------------------------------------------------------------------------------------------
# (a) base backups
# ---------------------------------------------------------------------------------------------

def _pg_basebackup(cluster, out: Path, extra: list[str]) -> float:
    argv = [str(devstack.PG_BIN / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres",
            "--no-password", "-D", str(out), "-Ft", "-X", "fetch", "-c", "fast", *extra]
    started = time.monotonic()
    subprocess.run(argv, env=cluster.conn().libpq_env(), check=True, capture_output=True)
    return time.monotonic() - started


def raw_then_zstd(cluster, work: Path, level: int, workers: int) -> dict:
    """pg_basebackup -D DIR -Ft -X fetch -c fast, then zstd -L -TW of base.tar (the pipeline's settings)."""
    out = work / "raw-bb"
    shutil.rmtree(out, ignore_errors=True)

    def run() -> dict:
        bb = _pg_basebackup(cluster, out, [])
        started = time.monotonic()
        subprocess.run(["zstd", "-q", f"-{level}", f"-T{workers}", str(out / "base.tar"), "-o",
                        str(out / "base.tar.zst")], check=True, capture_output=True)
        return {"pg_basebackup": bb, "zstd": time.monotonic() - started, "tar_size": (out / "base.tar").stat().st_size,
                "size": (out / "base.tar.zst").stat().st_size}

    try:
        return bench._timed(cluster, run)[1]
    finally:
        shutil.rmtree(out, ignore_errors=True)


def raw_client_zstd(cluster, work: Path, level: int, workers: int) -> dict:
    """pg_basebackup ... --compress=client-zstd:level=L,workers=W: pg_basebackup compressing as it writes."""
    out = work / "raw-bbz"
    shutil.rmtree(out, ignore_errors=True)

    def run() -> dict:
        bb = _pg_basebackup(cluster, out, [f"--compress=client-zstd:level={level},workers={workers}"])
        return {"pg_basebackup": bb, "size": (out / "base.tar.zst").stat().st_size}

    try:
        return bench._timed(cluster, run)[1]
    finally:
        shutil.rmtree(out, ignore_errors=True)


def pipeline(cluster, s3, cfg, work: Path, moment: dt.datetime, recipients: tuple[str, ...] = (),
             keep: bool = False) -> dict:
    """take_base_backup into moto (pg_basebackup | zstd [| age] -> spool + multipart upload, manifest.json); the
    backup is deleted afterwards unless ``keep``."""
    from pg_dataops.pitr import inventory
    from pg_dataops.pitr.basebackup import take_base_backup

    client = s3.client()
    got: dict = {}

    def run() -> dict:
        doc = take_base_backup(cfg, TARGET, cluster.conn(TARGET), client, recipients=recipients,
                               spool_dir=str(work / "base-spool"), now=moment)
        got["doc"] = doc
        t = doc["timings"]
        return {"size": doc["archive"]["size"], "tar_size": doc["archive"]["tar_size"],
                "pg_basebackup": t["pg_basebackup_seconds"], "stream": t["stream_seconds"],
                "upload_tail": t["upload_tail_seconds"], "preflight": t["preflight_seconds"],
                "duration": t["duration_seconds"], "encrypted": bool(doc.get("encryption"))}

    result = bench._timed(cluster, run)[1]
    # Without the work after pg_basebackup's output ended (moto assembling the object, the proof): real S3
    # assembles on its own servers.
    result["but_tail"] = result["wall"] - result["upload_tail"]
    if not keep:
        delete_prefix(client, cfg.bucket, inventory.backup_folder(cfg, TARGET, got["doc"]["backup_id"]))
    else:
        result["doc"] = got["doc"]
    return result


def bench_base_backups(cluster, s3, cfg, work: Path, runs, recipient: str) -> dict:
    level, workers = cfg.pitr.base_compression_level, cfg.pitr.base_compression_workers
    moments = bench.moments_from(bench.FIRST_MOMENT)
    log(f"base backups: raw pg_basebackup + zstd -{level} -T{workers}, raw client-zstd, take_base_backup plain and "
        "encrypted, interleaved")
    samples = runs.interleaved(
        raw=lambda: raw_then_zstd(cluster, work, level, workers),
        raw_client_zstd=lambda: raw_client_zstd(cluster, work, level, workers),
        pipe=lambda: pipeline(cluster, s3, cfg, work, next(moments)),
        pipe_age=lambda: pipeline(cluster, s3, cfg, work, next(moments), (recipient,)),
    )
    if any(r["encrypted"] for r in samples["pipe"]) or not all(r["encrypted"] for r in samples["pipe_age"]):
        raise RuntimeError("the plain/encrypted base backups did not come out as asked")
    return {"level": level, "workers": workers, **samples}


# ---------------------------------------------------------------------------------------------
# (b) physical recovery
# ---------------------------------------------------------------------------------------------

def current_lsn(cluster) -> str:
    from tests.support.pitr import connect

    with connect(cluster, "postgres") as pg:
        return str(pg.execute("SELECT pg_current_wal_lsn()").fetchone()[0])


def write_load(cluster, work: Path, seconds: float, tps: int) -> dict:
    """pgbench with LOAD_SCRIPT at ``tps`` transactions per second for ``seconds``; its summary."""
    from pg_dataops.common import wal

    from tests.support.pitr import connect

    with connect(cluster) as pg:
        max_match = pg.execute("SELECT max(id) FROM matches").fetchone()[0]
    script = work / "pitr-load.sql"
    script.write_text(LOAD_SCRIPT)
    before = current_lsn(cluster)
    argv = [str(devstack.PG_BIN / "pgbench"), "-n", "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres",
            "-c", "2", "-j", "2", "-R", str(tps), "-T", str(int(seconds)), "-D", f"max_match={max_match}",
            "-f", str(script), TARGET]
    started = time.monotonic()
    done = subprocess.run(argv, env=cluster.conn(TARGET).libpq_env(), check=True, capture_output=True, text=True)
    wall = time.monotonic() - started
    after = current_lsn(cluster)
    txns = next((int(line.split(":")[1].split()[0]) for line in done.stdout.splitlines()
                 if line.startswith("number of transactions actually processed")), None)
    return {"seconds": round(wall, 1), "tps_asked": tps, "transactions": txns,
            "wal_bytes": wal.parse_lsn(after) - wal.parse_lsn(before), "start_lsn": before, "end_lsn": after}


def archived_segments(client, cfg) -> list:
    from pg_dataops.common import wal

    return wal.segments(wal.list_archive(client, cfg.bucket, wal.archive_prefix(cfg, TARGET)))


def bench_recovery(cluster, s3, cfg, work: Path, *, wal_minutes: float, tps: int, recipient: str,
                   identity: str) -> dict:
    """An encrypted base backup, ``wal_minutes`` of load, then pg_pitr_restore's core to the end of the load."""
    from pg_dataops.common import wal
    from pg_dataops.pitr import copy, drill, inventory, recover, request, scratch
    from pg_dataops.pitr.basebackup import take_base_backup

    from tests.support.pitr import connect, switch_and_wait

    client = s3.client()
    admin = cluster.conn("postgres")
    log("recovery: encrypted base backup, then the write load")
    base = take_base_backup(cfg, TARGET, cluster.conn(TARGET), client, recipients=(recipient,),
                            spool_dir=str(work / "base-spool"))
    segments_before = {w.segment for w in archived_segments(client, cfg)}
    log(f"recovery: {wal_minutes:g} min of pgbench at {tps} tps, archive_timeout 60")
    load = write_load(cluster, work, wal_minutes * 60, tps)
    time.sleep(1.2)
    with connect(cluster, autocommit=True) as pg:
        moment = pg.execute("SELECT clock_timestamp()").fetchone()[0]
        time.sleep(1.2)
        # A commit after the moment, as the damage would be: replay stops right before it.
        pg.execute("CREATE TABLE bench_after_target AS SELECT clock_timestamp() AS at")
    switch_and_wait(cluster, timeout=180)
    archived = [w for w in archived_segments(client, cfg) if w.segment not in segments_before]
    log(f"recovery: {load['wal_bytes'] / MB:,.0f} MB of WAL, {len(archived)} segments archived during the load; "
        f"recovering to {moment.isoformat()}")
    timings: dict[str, float] = {}
    trigger = time.monotonic()

    started = time.monotonic()
    window = inventory.recoverable_window(client, cfg, TARGET)
    req = request.parse_request(cfg, {"target": TARGET, "target_time": moment})
    plan = request.plan_recovery(cfg, req, window=window, source_database=TARGET,
                                 database_exists=lambda name: copy.database_exists(admin, name),
                                 identity=lambda: identity, run_id=f"bench_{uuid.uuid4().hex[:6]}",
                                 conn_id="glimpse_db")
    timings["validate"] = time.monotonic() - started
    layout = scratch.ScratchLayout.from_dict(plan["scratch"])
    try:
        restored = scratch.restore_base_backup(client, cfg.bucket, plan["base_backup_doc"], layout,
                                               identity=identity, timeout=3600, bin_dir=plan["bin_dir"])
        timings["restore"] = restored["restore_seconds"]
        # What pg_pitr_drill adds before replay (pg_pitr_restore does not): not counted in trigger to ready.
        verified = drill.verify_restored(layout, plan["bin_dir"], timeout=3600, doc=plan["base_backup_doc"])
        timings["verify_drill_only"] = verified["verify_seconds"]
        creds = {"access_key": s3.access_key, "secret_key": s3.secret_key, "region": s3.region}
        recovered = recover.replay(
            layout, bin_dir=plan["bin_dir"],
            restore_command_line=recover.restore_command(cfg, TARGET, layout, endpoint_url=s3.endpoint),
            target_time=moment, target_action="promote", env=wal.aws_env(creds), timeout_seconds=3600,
            list_archive=lambda: wal.list_archive(client, cfg.bucket, wal.archive_prefix(cfg, TARGET)))
        timings["replay"] = recovered["replay_seconds"]
        inst = recover.instance(layout, plan["bin_dir"], recovered["port"])
        fetched = drill.restored_segments(inst.log_text())
        checked = copy.check_recovered(inst.conn(TARGET))
        timings["check"] = checked["check_seconds"]
        copied = copy.copy_database(inst.conn(TARGET), admin, cfg.pitr.recovery_database,
                                    expected=checked["counts"], marker="pg_dataops bench", protected=(TARGET,),
                                    pg_bin_root=cfg.pg_bin_root, timeout=3600)
        timings["copy"] = copied["copy_seconds"]
        timings["trigger_to_ready"] = time.monotonic() - trigger - timings["verify_drill_only"]
    finally:
        scratch.remove_scratch(layout, plan["bin_dir"])
        cluster.dropdb(cfg.pitr.recovery_database)
    return {"db_size": bench.database_size(cluster, TARGET), "base_size": base["archive"]["size"],
            "base_tar_size": base["archive"]["tar_size"], "load": load, "archived_during_load": len(archived),
            "segments_fetched": len(fetched), "first_fetched": fetched[0] if fetched else None,
            "last_fetched": fetched[-1] if fetched else None, "stop_message": recovered["stop_message"],
            "reached": recovered["reached_time"], "target": moment.isoformat(), "tables": checked["tables"],
            "rows": checked["rows"], "copied_rows": copied["rows"], "prefetch": recover.PREFETCH,
            "verified_files": verified["files"], "timings": {k: round(v, 2) for k, v in timings.items()}}


# ---------------------------------------------------------------------------------------------
# (c) RPO after a crash
# ---------------------------------------------------------------------------------------------

def bench_rpo(s3, work: Path, timeouts=RPO_TIMEOUTS) -> list:
    from tests.support.pitr_drill import crash_and_recover

    out = []
    for timeout in timeouts:
        for phase in RPO_KILL_PHASES:
            bucket = f"bench-rpo-{timeout}-{uuid.uuid4().hex[:6]}"
            s3.client().create_bucket(Bucket=bucket)
            load_seconds = timeout * (1 + phase)
            log(f"RPO: SIGKILL after {load_seconds:.1f} s of load at archive_timeout {timeout} s")
            root = Path(tempfile.mkdtemp(prefix=f"rpo{timeout}-", dir="/tmp"))  # short: socket paths
            try:
                m = crash_and_recover(s3, bucket, root, archive_timeout=timeout, load_seconds=load_seconds)
            finally:
                shutil.rmtree(root, ignore_errors=True)
            log(f"  {m.summary()}")
            out.append(m)
    return out


# ---------------------------------------------------------------------------------------------
# The report section
# ---------------------------------------------------------------------------------------------

def _row(label: str, samples: list[dict], field: str, base: float, *, size: bool = True, bold: bool = False) -> str:
    values = [s[field] for s in samples]
    wall, ratio = f"{bench.median(values):.2f}", f"{bench.median(values) / base:.2f}"
    if bold:
        wall, ratio = f"**{wall}**", f"**{ratio}**"
    out = f"{med(samples, 'size') / MB:,.1f}" if size else ""
    cpu = (f"{med(samples, 'client_cpu'):.2f} | {med(samples, 'server_cpu'):.2f} | {med(samples, 'foreign_cpu'):.2f}"
           if size else " | | ")
    return f"| {label} | {wall} | {min(values):.2f}-{max(values):.2f} | {out} | {ratio} | {cpu} |"


def section(r: dict) -> str:
    """The Markdown section "Point-in-time recovery" of .bench/results.md."""
    quick = r["quick"]
    lines = ["", "## Point-in-time recovery", ""]
    if "db_size" in r:
        lines += [f"- Cluster: throwaway PG 15 (fsync off, shared_buffers 512MB, max_wal_size 4GB), WAL archived by "
                  f"barman-cloud-wal-archive --gzip to moto on 127.0.0.1; database `{TARGET}` (Glimpse demo, "
                  f"BENCH_SIZE_MB={r['target_mb']}): pg_database_size {r['db_size'] / MB:,.1f} MB, {r['users']:,} "
                  f"users (load {r['load_seconds']:.0f} s).", ""]
    b = r.get("base")
    if b:
        raw = med(b["raw"], "wall")
        lvl, w = b["level"], b["workers"]
        pipe, pipe_age = b["pipe"], b["pipe_age"]
        lines += [
            f"### Base backup vs raw `pg_basebackup` (zstd -{lvl} -T{w}; "
            + ("single run each, BENCH_QUICK=1)" if quick else "medians of 3 runs after 1 warm-up, interleaved)"),
            "",
            "| run | wall s | min-max s | output MB | vs raw | client CPU s | server CPU s | other workloads CPU s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
            _row(f"raw `pg_basebackup -D DIR -Ft -X fetch -c fast` + `zstd -{lvl} -T{w} base.tar` (baseline)",
                 b["raw"], "wall", raw),
            _row("&nbsp;&nbsp;of which pg_basebackup (writes base.tar, fsyncs it)", b["raw"], "pg_basebackup", raw,
                 size=False),
            _row(f"raw `pg_basebackup ... --compress=client-zstd:level={lvl},workers={w}`", b["raw_client_zstd"],
                 "wall", raw),
            _row("**`take_base_backup`** (pg_basebackup -D - \\| zstd -> S3 while written, manifest)", pipe, "wall",
                 raw, bold=True),
            _row("&nbsp;&nbsp;the same without what follows pg_basebackup's end (moto assembling the object, the "
                 "proof)", pipe, "but_tail", raw, size=False),
            _row("**`take_base_backup`, age-encrypted**", pipe_age, "wall", raw, bold=True),
            _row("&nbsp;&nbsp;the same without the upload tail", pipe_age, "but_tail", raw, size=False),
            "",
            "Client CPU: this process and its children (pg_basebackup, zstd, age; for take_base_backup also our "
            "Python relay, hashing and part uploads, and moto, which runs in this process). Other workloads: the "
            "host's busy CPU minus ours and the server's (other jobs on the shared vCPUs).",
            "",
            f"Uncompressed tar {med(pipe, 'tar_size') / MB:,.1f} MB. Upload tail after pg_basebackup ended (moto's "
            f"CompleteMultipartUpload in Python, then the object's proof): {med(pipe, 'upload_tail'):.2f} s plain, "
            f"{med(pipe_age, 'upload_tail'):.2f} s encrypted.",
            "",
            f"Target take_base_backup <= {BASE_BACKUP_TARGET:.2f}x raw: plain **{med(pipe, 'wall') / raw:.2f}x**"
            f" ({'met' if med(pipe, 'wall') / raw <= BASE_BACKUP_TARGET else 'NOT met'}; "
            f"{med(pipe, 'but_tail') / raw:.2f}x without moto's assembly), encrypted "
            f"**{med(pipe_age, 'wall') / raw:.2f}x** ({'met' if med(pipe_age, 'wall') / raw <= BASE_BACKUP_TARGET else 'NOT met'}; "
            f"{med(pipe_age, 'but_tail') / raw:.2f}x without it). Against client-zstd: "
            f"{med(pipe, 'wall') / med(b['raw_client_zstd'], 'wall'):.2f}x plain.",
        ]
        disturbed = sum(s["disturbed"] for k in ("raw", "raw_client_zstd", "pipe", "pipe_age") for s in b[k])
        if disturbed:
            lines.append(f"**Warning:** {disturbed} of these runs shared the vCPUs with other workloads; their "
                         "timings are inflated.")
        lines.append("")
    rec = r.get("recovery")
    if rec:
        t = rec["timings"]
        load = rec["load"]
        lines += [
            "### Physical recovery: trigger to `glimpse_recovery` ready",
            "",
            f"An age-encrypted base backup ({rec['base_size'] / MB:,.1f} MB compressed, tar "
            f"{rec['base_tar_size'] / MB:,.1f} MB), then {load['seconds'] / 60:.1f} min of pgbench at "
            f"{load['tps_asked']} tps ({load['transactions']:,} transactions: a message inserted, a user updated) at "
            f"archive_timeout 60: {load['wal_bytes'] / MB:,.0f} MB of WAL, {rec['archived_during_load']} segments "
            "archived. Recovered to the end of the load (a `target_time`), the steps of pg_pitr_restore's tasks "
            "called in one process (a DAG run adds task start-up, a few seconds per task). One run.",
            "",
            "| step | s |",
            "|---|---:|",
            f"| validate (S3 listings, window, plan, target server) | {t['validate']:.2f} |",
            f"| restore (download + SHA-256 + age -d + zstd -d + tar -x) | {t['restore']:.2f} |",
            f"| replay ({rec['segments_fetched']} segments restored: barman-cloud-wal-restore --parallel "
            f"{rec['prefetch']} into a spool, spooled ones moved into place, "
            f"{rec['first_fetched']} .. {rec['last_fetched']}) | {t['replay']:.2f} |",
            f"| checks (every table counted: {rec['tables']} tables, {rec['rows']:,} rows) | {t['check']:.2f} |",
            f"| copy (pg_dump -Fc -Z0 \\| pg_restore into `glimpse_recovery`, counts compared) | {t['copy']:.2f} |",
            f"| **trigger to ready** | **{t['trigger_to_ready']:.2f}** |",
            f"| *not in the above: pg_pitr_drill's pg_verifybackup of the restored copy ({rec['verified_files']:,} "
            f"files and the backup's WAL), before replay* | *{t['verify_drill_only']:.2f}* |",
            "",
            f"Target restore + replay < {RECOVERY_TARGET_SECONDS:.0f} s: **{t['restore'] + t['replay']:.1f} s, "
            f"{'met' if t['restore'] + t['replay'] < RECOVERY_TARGET_SECONDS else 'NOT met'}**. Stop: "
            f"{rec['stop_message'] or 'end of the archive'}.",
            "",
        ]
    rpo = r.get("rpo")
    if rpo:
        lines += [
            "### RPO: commits lost to SIGKILL of the primary plus its deleted data directory",
            "",
            "One row committed every 50 ms (each id noted when its COMMIT returned) from right after a base "
            "backup (whose end switches segments); SIGKILL of the postmaster during the load, its data directory "
            "deleted, recovery to the end of the archive from S3 alone (pg_pitr_drill's core). Per setting one "
            "kill a quarter of archive_timeout after a forced switch and one at nine tenths, each on a fresh "
            "cluster.",
            "",
            "| archive_timeout s | load s (kill) | commits before the kill | lost | lost commits span s | last recovered "
            "commit before the kill s | within archive_timeout | holes |",
            "|---:|---:|---:|---:|---:|---:|---|---:|",
        ]
        for m in rpo:
            lines.append(f"| {m.archive_timeout} | {m.load_seconds:.1f} | {m.committed_before_kill} | {m.lost} | "
                         f"{m.lost_span_seconds:.1f} | {m.loss_window_seconds:.1f} | "
                         f"{'yes' if m.loss_window_seconds <= m.archive_timeout else 'NO'} | {len(m.holes)} |")
        lines += ["",
                  "The loss is the WAL since the last segment switch: under steady light load a segment never "
                  "fills, so it switches every archive_timeout and one crash loses between 0 and archive_timeout "
                  "(plus the upload of the segment just closed), about half of it on average. Heavier writing "
                  "fills 16 MB segments sooner and loses less time.", ""]
    lines.append(f"PITR benchmark time {r['seconds']:.0f} s.")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Running it
# ---------------------------------------------------------------------------------------------

def run(*, target_mb: int, quick: bool, s3=None, parts: tuple[str, ...] = ("base", "recovery", "rpo")) -> dict:
    """Everything above on a fresh archiving cluster (and ``s3``, or a moto server of its own)."""
    started = time.monotonic()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request access log
    own_s3 = s3 is None
    if own_s3:
        s3 = devstack.MotoS3().start()
    bench.BENCH_DIR.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="pitr-", dir="/tmp"))  # short: the scratch server's socket lives here
    bucket = f"bench-pitr-{uuid.uuid4().hex[:8]}"
    s3.client().create_bucket(Bucket=bucket)
    cfg = pitr_config(bucket, work / "scratch")
    cluster = start_cluster(s3) if {"base", "recovery"} & set(parts) else None
    wal_minutes = float(os.environ.get("BENCH_PITR_WAL_MINUTES", "").strip() or (2 if quick else 10))
    tps = bench.env_int("BENCH_PITR_TPS", 100)
    result: dict = {"quick": quick, "target_mb": target_mb}
    try:
        if cluster is not None:
            result.update(prepare(cluster, s3, cfg, target_mb))
            recipient = bench.throwaway_recipient(work)
            identity = (work / "age-identity.txt").read_text()
        if "base" in parts:
            result["base"] = bench_base_backups(cluster, s3, cfg, work, bench.Runs(quick), recipient)
        if "recovery" in parts:
            result["recovery"] = bench_recovery(cluster, s3, cfg, work, wal_minutes=wal_minutes, tps=tps,
                                                recipient=recipient, identity=identity)
            log(f"PITR recovery: {result['recovery']['timings']}")
        if cluster is not None:
            cluster.stop()
        if "rpo" in parts:
            result["rpo"] = bench_rpo(s3, work)
    finally:
        if cluster is not None:
            cluster.stop()
        if own_s3:
            s3.stop()
        shutil.rmtree(work, ignore_errors=True)
    result["seconds"] = time.monotonic() - started
    return result


def prepare(cluster, s3, cfg, target_mb: int) -> dict:
    """The database of about ``target_mb``, loaded with archiving off, then the real archive_command."""
    log(f"PITR: cluster on port {cluster.port}, moto on {s3.port}")
    result: dict = {}
    fixed, per_user = bench.calibrate(cluster)
    users = bench.users_for(target_mb * MB, fixed, per_user)
    log(f"PITR: loading {users:,} users")
    result["load_seconds"] = bench.load_database(cluster, TARGET, users)
    bench.settle(cluster, TARGET)
    result.update(users=users, db_size=bench.database_size(cluster, TARGET))
    log(f"PITR: {TARGET} is {result['db_size'] / MB:,.1f} MB; starting the real archive_command")
    start_archiving(cluster, cfg, s3)
    return result


def main() -> int:
    """BENCH_PITR_ONLY=1 make bench: only this part; the report goes to .bench/results.md."""
    target_mb = bench.env_int("BENCH_SIZE_MB", 1000)
    quick = env_flag("BENCH_QUICK")
    parts = tuple(p for p in os.environ.get("BENCH_PITR_PARTS", "base,recovery,rpo").split(",") if p)
    r = run(target_mb=target_mb, quick=quick, parts=parts)
    samples = {k: v for k, v in r.items() if k != "rpo"}
    samples["rpo"] = [dataclasses.asdict(m) for m in r.get("rpo", [])]
    (bench.BENCH_DIR / "pitr-samples.json").write_text(json.dumps(samples, indent=1, default=str))
    text = (f"# PITR benchmark (BENCH_PITR_ONLY=1)\n\n- When: "
            f"{dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}"
            + ("; BENCH_QUICK=1" if quick else "") + f".\n- Machine: {bench.machine_facts()}.\n" + section(r))
    bench.RESULTS.write_text(text)
    print(text)
    log(f"wrote {bench.RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
