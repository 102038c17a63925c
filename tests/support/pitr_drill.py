"""The RPO crash scenario and the drill's recovery path, shared by tests/integration/pitr/test_rpo_crash.py and
scripts/bench_pitr.py.

:func:`crash_and_recover`: an archiving cluster (barman-cloud-wal-archive to moto, ``archive_timeout`` as
given), a base backup by ``take_base_backup``, a steady write load (one numbered row committed every
``interval`` seconds, each id noted with the moment its COMMIT returned), SIGKILL of the postmaster while
the load runs, its data directory deleted, then recovery to the end of the archive from S3 alone with
pg_pitr_drill's core (plan, restore, pg_verifybackup, replay), and the committed rows counted on the
recovered copy. Nothing of the old server is read after the kill.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pg_dataops.common import pg as pgtools
from pg_dataops.common import wal
from pg_dataops.pitr import drill, inventory, recover, scratch
from pg_dataops.pitr.basebackup import take_base_backup

from tests.support.pitr import TARGET, archiving_cluster, connect, pitr_config

PROBE_TABLE = "rpo_probe"


class CommitLoad(threading.Thread):
    """Commits ``INSERT INTO rpo_probe (id) VALUES (n)`` for n = 1, 2, ... every ``interval`` seconds (autocommit:
    the statement returns after its COMMIT), noting ``(n, the UTC moment it returned)``. Stops at
    :meth:`stop` or at the first error (the server gone); the error is kept."""

    def __init__(self, cluster, interval: float = 0.05):
        super().__init__(daemon=True, name="commit-load")
        self.cluster, self.interval = cluster, interval
        self.committed: list[tuple[int, dt.datetime]] = []
        self.error: BaseException | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            with connect(self.cluster, autocommit=True) as pg:
                n = 0
                next_at = time.monotonic()
                while not self._stop_event.is_set():
                    n += 1
                    pg.execute("INSERT INTO rpo_probe (id) VALUES (%s)", (n,))
                    self.committed.append((n, dt.datetime.now(dt.UTC)))
                    next_at += self.interval
                    self._stop_event.wait(max(0.0, next_at - time.monotonic()))
        except BaseException as exc:  # noqa: BLE001 - the kill ends the load with a connection error
            self.error = exc

    def stop(self, timeout: float = 15) -> None:
        self._stop_event.set()
        self.join(timeout)


def postmaster_pid(data: Path) -> int:
    return int((data / "postmaster.pid").read_text().split("\n", 1)[0])


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (ProcessLookupError, OSError, IndexError):
        return False


def kill_postmaster(cluster, grace: float = 5.0) -> tuple[dt.datetime, dict[str, Any]]:
    """SIGKILL the postmaster (postmaster.pid's first line), as a host crash would; returns the moment and what
    happened to its children: they exit on their own when they see it gone (the archiver starts no new
    archive_command then); any still there after ``grace`` seconds are killed too, so the data directory
    can go."""
    pid = postmaster_pid(cluster.data)
    children = _children(pid)
    moment = dt.datetime.now(dt.UTC)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for p in [pid, *children]):
        time.sleep(0.05)
    lingering = [p for p in children if _alive(p)]
    for p in lingering:
        os.kill(p, signal.SIGKILL)
    return moment, {"postmaster": pid, "children": len(children), "killed_after_grace": len(lingering)}


def recover_to_end(cfg, s3, client, *, run_id: str, identity: str | None = None,
                   timeout: float = 600) -> dict[str, Any]:
    """pg_pitr_drill's path, from S3 alone: plan (newest base backup, WAL to the end of the archive), restore,
    pg_verifybackup, replay (promoted). The scratch server keeps running; remove it with
    ``scratch.remove_scratch(layout, plan["bin_dir"])``. Returns the steps' results and ``layout``."""
    window = inventory.recoverable_window(client, cfg, TARGET)
    plan = drill.plan_drill(cfg, TARGET, window, source_database="glimpse", target_time=None,
                            identity=lambda: identity or "", run_id=run_id)
    layout = scratch.ScratchLayout.from_dict(plan["scratch"])
    restored = scratch.restore_base_backup(client, cfg.bucket, plan["base_backup_doc"], layout,
                                           identity=identity if plan["encrypted"] else None, timeout=timeout,
                                           bin_dir=plan["bin_dir"])
    verified = drill.verify_restored(layout, plan["bin_dir"], timeout=timeout, doc=plan["base_backup_doc"])
    creds = {"access_key": s3.access_key, "secret_key": s3.secret_key, "region": s3.region}
    recovered = drill.replay(cfg, plan, env=wal.aws_env(creds), endpoint_url=s3.endpoint,
                             list_archive=lambda: wal.list_archive(client, cfg.bucket, wal.archive_prefix(cfg, TARGET)),
                             timeout_seconds=timeout)
    return {"plan": plan, "layout": layout, "restored": restored, "verified": verified, "recovered": recovered}


def recovered_conn(result: dict[str, Any], dbname: str = "glimpse") -> pgtools.PgConn:
    plan = result["plan"]
    return recover.instance(result["layout"], plan["bin_dir"], result["recovered"]["port"]).conn(dbname)


@dataclass
class RpoMeasurement:
    """What a crash lost: the committed rows (COMMIT returned before the kill) absent from the recovered copy."""

    archive_timeout: int
    load_seconds: float
    kill_time: dt.datetime
    committed_before_kill: int
    recovered: int
    lost_ids: list[int]
    lost_span_seconds: float  # from the first lost commit to the kill
    loss_window_seconds: float  # from the last commit recovered to the kill: the RPO this crash achieved
    committed_after_kill: int  # COMMITs that returned after the kill (in flight at it); not counted as lost
    recovered_unconfirmed: int  # rows recovered whose COMMIT never returned to the client (in flight)
    holes: list[int]  # lost ids below the newest recovered one (recovery must be a prefix: must be empty)
    kill: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    segments_restored: int = 0
    last_restored_segment: str | None = None

    @property
    def lost(self) -> int:
        return len(self.lost_ids)

    def summary(self) -> str:
        return (f"archive_timeout {self.archive_timeout} s: SIGKILL after {self.load_seconds:.0f} s of load; "
                f"{self.committed_before_kill} commits before the kill, {self.recovered} recovered, {self.lost} lost "
                f"(the last {self.lost_span_seconds:.1f} s of commits; last recovered commit "
                f"{self.loss_window_seconds:.1f} s before the kill); {self.segments_restored} segments restored "
                f"from S3 up to {self.last_restored_segment}")


def measure_loss(committed: list[tuple[int, dt.datetime]], recovered_ids: set[int], kill_time: dt.datetime,
                 *, start_time: dt.datetime) -> dict[str, Any]:
    """The loss of one crash from the load's notes and the ids found after recovery (pure; unit-tested)."""
    before = [(n, t) for n, t in committed if t <= kill_time]
    after = [(n, t) for n, t in committed if t > kill_time]
    confirmed = {n for n, _ in committed}
    lost = [(n, t) for n, t in before if n not in recovered_ids]
    kept = [(n, t) for n, t in before if n in recovered_ids]
    newest_kept = max((n for n, _ in kept), default=0)
    last_kept_time = max((t for _, t in kept), default=start_time)
    return {
        "committed_before_kill": len(before),
        "recovered": len(kept),
        "lost_ids": [n for n, _ in lost],
        "lost_span_seconds": round((kill_time - lost[0][1]).total_seconds(), 3) if lost else 0.0,
        "loss_window_seconds": round((kill_time - last_kept_time).total_seconds(), 3),
        "committed_after_kill": len(after),
        "recovered_unconfirmed": len(recovered_ids - confirmed),
        "holes": [n for n, _ in lost if n < newest_kept],
    }


def crash_and_recover(s3, bucket: str, root: Path, *, archive_timeout: int, load_seconds: float,
                      interval: float = 0.05, users: int = 64) -> RpoMeasurement:
    """The whole scenario (see the module's docstring); the scratch copy and the cluster are removed after."""
    client = s3.client()
    cfg = pitr_config(bucket, PGBACKUP_PITR_SCRATCH_ROOT=str(root / "scratch"),
                      PGBACKUP_PITR_ARCHIVE_TIMEOUT_SECONDS=str(archive_timeout), PGBACKUP_MULTIPART_CHUNK_MB="5")
    cluster = archiving_cluster(s3, bucket, archive_timeout=archive_timeout, users=users)
    run_id = f"rpo_{archive_timeout}s"
    layout = scratch.layout_for(cfg.pitr.scratch_root, run_id, TARGET)  # known before it exists: always removed
    try:
        with connect(cluster, autocommit=True) as pg:
            pg.execute("CREATE TABLE rpo_probe (id bigint PRIMARY KEY, committed_at timestamptz NOT NULL "
                       "DEFAULT clock_timestamp())")
        take_base_backup(cfg, TARGET, cluster.conn("glimpse"), client, recipients=(), spool_dir=str(root / "spool"))
        load = CommitLoad(cluster, interval)
        start_time = dt.datetime.now(dt.UTC)
        load.start()
        time.sleep(load_seconds)
        if not load.is_alive():
            raise AssertionError(f"the write load stopped before the kill: {load.error!r}")
        kill_time, kill = kill_postmaster(cluster)
        load.stop()
        shutil.rmtree(cluster.data)  # the host is lost: nothing of the old server is read from here on
        started = time.monotonic()
        result = recover_to_end(cfg, s3, client, run_id=run_id)
        ready = time.monotonic() - started
        pg = pgtools.connect(recovered_conn(result), autocommit=True)
        try:
            ids = {r[0] for r in pg.execute("SELECT id FROM rpo_probe").fetchall()}
        finally:
            pg.close()
        loss = measure_loss(load.committed, ids, kill_time, start_time=start_time)
        recovered = result["recovered"]
        timings = {"restore": result["restored"]["restore_seconds"], "verify": result["verified"]["verify_seconds"],
                   "replay": recovered["replay_seconds"], "recovery_total": round(ready, 3)}
        return RpoMeasurement(archive_timeout=archive_timeout, load_seconds=load_seconds, kill_time=kill_time,
                              kill=kill, timings=timings, segments_restored=recovered["segments_restored"],
                              last_restored_segment=recovered["last_restored_segment"], **loss)
    finally:
        scratch.remove_scratch(layout, scratch.server_bin_dir(cfg.pg_bin_root, 150000))
        cluster.stop()

