"""Benchmark of the full recovery (issue 11, item 8): part of ``make bench``, alone with ``BENCH_RESTORE_ONLY=1``.

On a Glimpse demo database of about BENCH_SIZE_MB (default 1000) in a throwaway PostgreSQL 15 cluster, backed up
to a moto S3 server with pg_backup's own steps (dump_step streaming to S3 age-encrypted, checksum, upload,
manifest), it times:

(a) **raw** ``pg_restore -j2 --no-owner --no-privileges --exit-on-error`` of the same (plaintext) archive into an
    empty database: the floor;
(b) **the full recovery** through ``pg_dataops.restore.full``'s core functions, step by step, in
    pg_full_recovery's order: validate (``plan_recovery``: S3 listing, manifest, identity, names), download
    (``download``: S3 GET + SHA-256 against .sha256 and manifest + ``age -d``), restore (``restore_new``: CREATE
    DATABASE + ``pg_restore -j2`` into ``glimpse_recovering_<stamp>``), check (``check_restored``: pg_backup's
    verification against the manifest: counts, amcheck), safety dump (``safety_dump``: pg_dump of the current
    ``glimpse`` streamed to S3, encrypted), swap (``swap``), ANALYZE (``analyze``), cleanup (``cleanup``). No
    application steps and no approval wait (configured per deployment / a person); the RTO here is the sum of the
    machine's steps, from validate to ANALYZE done.

Targets: recovery RTO under 300 s for 1 GB; the restore step (``restore_new``, wall) within 1.10x raw
``pg_restore -j2``. Runs interleaved (raw, recovery, raw, ...), medians of 3 after a warm-up (BENCH_QUICK=1: one
run each), repeated when other workloads shared the vCPUs (scripts/bench.py's ``Runs``). After each recovery the
kept ``glimpse_before_recovery_<stamp>`` and the safety dump are removed, so every run starts alike.

Run alone: ``.venv/bin/python scripts/bench_restore.py`` (what BENCH_RESTORE_ONLY=1 make bench does). Nothing here
is used in production.
"""

from __future__ import annotations

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

TARGET = "glimpse"
JOBS = 2  # the recovery's parallel_jobs, and raw pg_restore -j2
RTO_TARGET_SECONDS = 300.0  # full recovery of ~1 GB from S3
RESTORE_RATIO_TARGET = 1.10  # the restore step within 1.10x raw pg_restore -j2
MOMENT = dt.datetime(2026, 11, 24, 17, 0, tzinfo=dt.UTC)  # the backup: 25 Nov 02:00 in Seoul
STEPS = ("validate", "download", "restore", "check", "safety_dump", "swap", "analyze", "cleanup")


def restore_config(bucket: str, local_root: Path, recipient: str):
    from pg_dataops.common.config import load_config

    return load_config(environ={"PGBACKUP_BUCKET": bucket, "PGBACKUP_LOCAL_ROOT": str(local_root),
                                "PGBACKUP_ENCRYPTION_RECIPIENTS": recipient})


def take_backup(cluster, s3, cfg) -> dict:
    """pg_backup's steps without Airflow (as tests/dags/test_restore_drill_runs.py seeds S3); the manifest."""
    from pg_dataops.backup import steps as backup

    client = s3.client()
    started = time.monotonic()
    dump = backup.dump_step(cfg, cfg.target(TARGET), cluster.conn(TARGET), "daily", MOMENT, client)
    checksum = backup.checksum_step(dump)
    upload = backup.upload_step(client, cfg, dump, checksum)
    doc = backup.manifest_step(client, cfg, dump, upload, {"verified": True, "note": "bench: not restore-tested"},
                               "bench", "bench_restore")
    log(f"restore bench: backup {doc['s3']['key']} {doc['size'] / MB:,.1f} MB in {time.monotonic() - started:.1f} s")
    return {"doc": doc, "local_path": dump["path"]}


def plaintext_copy(encrypted: Path, identity_file: Path, out: Path) -> Path:
    """The archive raw pg_restore reads: the same backup, decrypted once (untimed)."""
    subprocess.run(["age", "-d", "-i", str(identity_file), "-o", str(out), str(encrypted)], check=True,
                   capture_output=True)
    return out


def raw_restore(cluster, archive: Path) -> dict:
    """pg_restore -j2 into an empty database (template0, like the recovery's), timed; dropped afterwards."""
    from pg_dataops.backup import verify

    cluster.psql("-c", "CHECKPOINT")  # untimed: no run pays for the dirty pages of the one before
    db = verify.temp_database_name("bench", "raw")
    verify.create_database(cluster.conn(), db)
    argv = [str(devstack.PG_BIN / "pg_restore"), "--exit-on-error", "--no-owner", "--no-privileges",
            f"--jobs={JOBS}", "--no-password", "--dbname", db, str(archive)]
    try:
        _, out = bench._timed(cluster, lambda: (subprocess.run(argv, env=cluster.conn(db).libpq_env(), check=True,
                                                               capture_output=True), {})[1])
    finally:
        verify.drop_database(cluster.conn(), db)
    return out


class Recovery:
    """pg_full_recovery's steps through ``pg_dataops.restore.full``, one call each, timed; what is left behind
    (the kept database, the safety dump) removed afterwards, untimed."""

    def __init__(self, cluster, s3, cfg, identity: str):
        self.cluster, self.s3, self.cfg, self.identity = cluster, s3, cfg, identity
        self.count = 0

    def __call__(self) -> dict:
        self.count += 1
        self.cluster.psql("-c", "CHECKPOINT")
        time.sleep(1.1)  # the names' stamp has one-second resolution: a new one per run
        phases: dict[str, float] = {}
        facts: dict = {}
        _, out = bench._timed(self.cluster, lambda: self._recover(phases, facts))
        self._remove_leftovers(facts["plan"])
        out.update(phases=phases, restore_seconds=facts["restore"]["restore_seconds"],
                   rto=sum(v for k, v in phases.items() if k != "cleanup"),
                   download_seconds=facts["download"]["download_seconds"],
                   decrypt_seconds=facts["download"].get("decrypt_seconds") or 0.0,
                   rows_checked=facts["check"]["rows_checked"], tables=facts["check"]["tables_found"],
                   safety_size=facts["safety"]["size"], swapped=facts["swap"]["swapped"])
        return out

    def _step(self, phases: dict, name: str, fn):
        started = time.monotonic()
        result = fn()
        phases[name] = time.monotonic() - started
        return result

    def _recover(self, phases: dict, facts: dict) -> dict:
        from pg_dataops.common import databases
        from pg_dataops.restore import full, source

        cfg, client, admin = self.cfg, self.s3.client(), self.cluster.conn()
        params = {"backup_date": "20261125", "parallel_jobs": JOBS, "confirm": TARGET}
        plan = facts["plan"] = self._step(phases, "validate", lambda: full.plan_recovery(
            cfg, params, target=TARGET, database=TARGET, conn_id=cfg.target(TARGET).conn_id,
            find_backup=lambda date, key: source.find_backup(client, cfg, TARGET, backup_date=date, backup_key=key),
            identity=lambda: self.identity, database_exists=lambda name: databases.database_exists(admin, name),
            run_id=f"bench_{self.count}", dag_id="bench_restore", started_at=dt.datetime.now(dt.UTC)))
        timeout = cfg.task_timeout_minutes * 60
        got = facts["download"] = self._step(phases, "download", lambda: full.download(
            client, cfg, plan, identity=lambda: self.identity, timeout=timeout))
        facts["restore"] = self._step(phases, "restore", lambda: full.restore_new(
            admin, plan, got["path"], pg_bin_root=cfg.pg_bin_root, timeout=timeout))
        facts["check"] = self._step(phases, "check", lambda: full.check_restored(
            self.cluster.conn(plan["new_database"]), plan, required_tables=cfg.verify_required_tables))
        facts["safety"] = self._step(phases, "safety_dump", lambda: full.safety_dump(
            self.cluster.conn(TARGET), client, cfg, plan, keep=True, timeout=timeout))
        facts["swap"] = self._step(phases, "swap", lambda: full.swap(
            admin, plan, {"approved": True, "responded_by": "bench"}))
        self._step(phases, "analyze", lambda: full.analyze(self.cluster.conn(TARGET)))
        facts["cleanup"] = self._step(phases, "cleanup", lambda: full.cleanup(admin, plan))
        return {}

    def _remove_leftovers(self, plan: dict) -> None:
        """The kept database and the safety dump: a real recovery keeps them; the next run must not pay for them."""
        client = self.s3.client()
        for key in (plan["safety_key"], plan["safety_key"] + ".sha256"):
            client.delete_object(Bucket=self.cfg.bucket, Key=key)
        self.cluster.dropdb(plan["kept_database"])


def bench_recovery(cluster, s3, cfg, work: Path, runs, identity: str, identity_file: Path, backup: dict) -> dict:
    archive = plaintext_copy(Path(backup["local_path"]), identity_file, work / "raw.dump")
    recovery = Recovery(cluster, s3, cfg, identity)
    log(f"restore bench: raw pg_restore -j{JOBS} vs the full recovery, interleaved")
    samples = runs.interleaved(raw=lambda: raw_restore(cluster, archive), recovery=recovery)
    archive.unlink()
    return samples


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------

def section(r: dict) -> str:
    raw, rec = r["samples"]["raw"], r["samples"]["recovery"]
    raw_s = med(raw, "wall")
    restore_step = bench.median([s["phases"]["restore"] for s in rec])
    ratio = restore_step / raw_s
    rto = med(rec, "rto")
    scale = 1000 * MB / r["db_size"]
    runs = "Single run each (BENCH_QUICK=1)" if r["quick"] else "Medians of 3 runs after 1 warm-up, interleaved"
    lines = [
        "",
        "## Full recovery from S3 (pg_full_recovery's steps) vs raw pg_restore -j2",
        "",
        f"Database `{TARGET}`: {r['users']:,} users, {r['db_size'] / MB:,.1f} MB (BENCH_SIZE_MB={r['target_mb']}); "
        f"backup {r['backup_size'] / MB:,.1f} MB ({r['format']}, -Z{r['compression']}, age-encrypted) in moto S3. "
        f"{runs}. No application steps, no wait for the approval (answered at once).",
        "",
        "| step | seconds | share |",
        "|---|---:|---:|",
    ]
    for name in STEPS:
        seconds = bench.median([s["phases"][name] for s in rec])
        note = ""
        if name == "download":
            note = (f" (incl. age -d {bench.median([s['decrypt_seconds'] for s in rec]):.1f} s)")
        if name == "restore":
            note = f" (pg_restore {bench.median([s['restore_seconds'] for s in rec]):.1f} s)"
        share = f"{seconds / rto:.0%}" if name != "cleanup" else "not in RTO"
        lines.append(f"| {name}{note} | {seconds:.1f} | {share} |")
    rto_verdict = "met" if rto * scale < RTO_TARGET_SECONDS else "**missed**"
    ratio_verdict = "met" if ratio <= RESTORE_RATIO_TARGET else "**missed**"
    lines += [
        f"| **recovery RTO** (validate to ANALYZE) | **{rto:.1f}** | |",
        "",
        f"- Raw `pg_restore -j{JOBS}` of the same archive (plaintext) into an empty database: {raw_s:.1f} s.",
        f"- Restore step (`restore_new`: CREATE DATABASE + pg_restore -j{JOBS}) {restore_step:.1f} s = "
        f"**{ratio:.2f}x raw**; target <= {RESTORE_RATIO_TARGET:.2f}x: {ratio_verdict}.",
        f"- Recovery RTO {rto:.1f} s"
        + (f" (about {rto * scale:.0f} s scaled linearly to 1000 MB)" if abs(scale - 1) > 0.1 else "")
        + f"; target < {RTO_TARGET_SECONDS:.0f} s for 1 GB: {rto_verdict}.",
        f"- Checked: {rec[0]['tables']} tables, {rec[0]['rows_checked']:,} rows against the manifest, amcheck; "
        f"safety dump {rec[0]['safety_size'] / MB:,.1f} MB streamed to S3.",
    ]
    disturbed = sum(s.get("disturbed", False) for s in raw + rec)
    if disturbed:
        lines.append(f"- {disturbed} run(s) shared the vCPUs with other workloads (kept after repeats).")
    lines.append(f"\nRestore benchmark time {r['seconds']:.0f} s.")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Running it
# ---------------------------------------------------------------------------------------------

def run(*, target_mb: int, quick: bool, s3=None) -> dict:
    """Everything above on a fresh cluster (and ``s3``, or a moto server of its own)."""
    started = time.monotonic()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request access log
    if shutil.which("age") is None or shutil.which("age-keygen") is None:
        raise RuntimeError("age is not installed: `make deps` installs Debian's package 'age'")
    own_s3 = s3 is None
    if own_s3:
        s3 = devstack.MotoS3().start()
    bench.BENCH_DIR.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="restore-", dir=bench.BENCH_DIR))
    bucket = f"bench-restore-{uuid.uuid4().hex[:8]}"
    s3.client().create_bucket(Bucket=bucket)
    cluster = devstack.LocalCluster(settings=bench.CLUSTER_SETTINGS)
    result: dict = {"quick": quick, "target_mb": target_mb}
    try:
        cluster.start()
        recipient = bench.throwaway_recipient(work)
        identity_file = work / "age-identity.txt"
        cfg = restore_config(bucket, work / "root", recipient)
        log(f"restore bench: cluster on port {cluster.port}, moto on {s3.port}")
        fixed, per_user = bench.calibrate(cluster)
        users = bench.users_for(target_mb * MB, fixed, per_user)
        log(f"restore bench: loading {users:,} users")
        result["load_seconds"] = bench.load_database(cluster, TARGET, users)
        bench.settle(cluster, TARGET)
        result.update(users=users, db_size=bench.database_size(cluster, TARGET))
        backup = take_backup(cluster, s3, cfg)
        doc = backup["doc"]
        result.update(backup_size=doc["size"], format=doc["format"], compression=doc["compression"]["level"])
        result["samples"] = bench_recovery(cluster, s3, cfg, work, bench.Runs(quick), identity_file.read_text(),
                                           identity_file, backup)
        for s in result["samples"]["recovery"]:
            log(f"restore bench: recovery steps {', '.join(f'{k} {v:.1f}' for k, v in s['phases'].items())}")
    finally:
        cluster.stop()
        if own_s3:
            s3.stop()
        shutil.rmtree(work, ignore_errors=True)
    result["seconds"] = time.monotonic() - started
    return result


def main() -> int:
    """BENCH_RESTORE_ONLY=1 make bench: only this part; the report goes to .bench/results.md."""
    target_mb = bench.env_int("BENCH_SIZE_MB", 1000)
    quick = os.environ.get("BENCH_QUICK", "").strip() not in ("", "0")
    r = run(target_mb=target_mb, quick=quick)
    (bench.BENCH_DIR / "restore-samples.json").write_text(json.dumps(r, indent=1, default=str))
    text = (f"# Full recovery benchmark (BENCH_RESTORE_ONLY=1)\n\n- When: "
            f"{dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}"
            + ("; BENCH_QUICK=1" if quick else "") + f".\n- Machine: {bench.machine_facts()}.\n" + section(r))
    bench.RESULTS.write_text(text)
    print(text)
    log(f"wrote {bench.RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
