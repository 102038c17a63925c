"""Full recovery of a database from a backup in S3, and its monthly rehearsal (runbook 1.2). Airflow-free.

The runbook's ``full-recovery.sh`` asked for a file name with ``read -p`` and never used it (``$BACKUP_FILE``
was never set), stopped the application, dumped the database to a local file, then ``dropdb`` and
``createdb`` *before* restoring: a failed restore left no database at all. Here:

- :func:`plan_recovery` checks every param, the backup (by date or key, naming what exists), its format,
  the identity of an encrypted one, the disk, the target server and the new names, before anything is made;
- the backup is restored into a NEW database ``<db>_recovering_<stamp>`` (:func:`restore_new`) and checked
  against its manifest (:func:`check_restored`) while production keeps serving;
- only after an approval: the application is stopped, a safety dump of the current database goes to S3
  (:func:`safety_dump`, encrypted like every dump), and the names are swapped in one transaction
  (:func:`swap`): production becomes the recovered copy, the old one is kept as ``<db>_before_recovery_<stamp>``;
- :func:`cleanup` drops the new database when it was not swapped in (it is ours: marked with the run), never
  production nor the kept one; :func:`report_row` is the ``restore_logs`` row with the measured RTO.

Stopping the application and the safety dump come after the restore and its checks (not first, as in the
runbook): the downtime is only the swap, and the safety dump is the freshest possible copy of what the swap
replaces. The rehearsal (:func:`plan_rehearsal`) runs download, restore, checks, ANALYZE and a timed safety
dump (deleted afterwards) into a scratch database, and judges the measured time against the RTO objective.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from psycopg import sql

from pg_dataops.backup import manifest as manifests
from pg_dataops.backup import verify
from pg_dataops.common import databases, fetch, s3, sqlfiles
from pg_dataops.common import pg as pgtools
from pg_dataops.common.config import Config
from pg_dataops.common.errors import ObjectExists, PermanentError, VerificationFailed
from pg_dataops.common.formatting import fmt_duration
from pg_dataops.common.rto import RtoVerdict, assess_rto
from pg_dataops.restore import audit, request, source

RESTORABLE_FORMATS = ("custom", "directory")
RECOVERING = "_recovering_"
KEPT = "_before_recovery_"
REHEARSAL_PREFIX = "pgdataops_rehearsal_"
MAX_NAME = 63  # PostgreSQL truncates longer identifiers: a truncated name could collide
RUN_METADATA = "pgdataops-run"  # S3 metadata on a safety dump: the run that wrote it
HISTORY_WINDOW = dt.timedelta(days=400)  # the earlier rehearsals the trend is drawn through


class DatabaseNotOurs(PermanentError):
    """A database with the name this run would create exists and was not made by this run."""


# ---- names -----------------------------------------------------------------------------------------


def recovery_names(database: str, stamp: str) -> dict[str, str]:
    """The new database and the kept one: ``<db>_recovering_<stamp>``, ``<db>_before_recovery_<stamp>``."""
    names = {"new_database": f"{database}{RECOVERING}{stamp}", "kept_database": f"{database}{KEPT}{stamp}"}
    too_long = [n for n in names.values() if len(n.encode()) > MAX_NAME]
    if too_long:
        raise request.RequestRefused(f"database {database!r} is too long a name for {too_long[0]!r} (PostgreSQL "
                                     f"names have at most {MAX_NAME} bytes): rename it or recover by hand")
    return names


def rehearsal_name(target: str, stamp: str) -> str:
    return f"{REHEARSAL_PREFIX}{target[:63 - len(REHEARSAL_PREFIX) - len(stamp) - 1]}_{stamp}"


def safety_key(cfg: Config, target: str, database: str, stamp: str, *, encrypted: bool) -> str:
    """``{prefix}/{safety_prefix}/{target}/{db}_before_recovery_{stamp}.dump[.age]``."""
    name = f"{database}{KEPT}{stamp}.dump" + (".age" if encrypted else "")
    return f"{cfg.prefix}/{cfg.restore.safety_prefix}/{target}/{name}"


def run_marker(dag_id: str, run_id: str, target: str, kind: str) -> str:
    """The comment on the database a run creates: what it is, and which run may drop it."""
    return f"pg_dataops {dag_id} run {run_id}: {kind} of {target}"


def _iso(moment: dt.datetime | None = None) -> str:
    return (moment or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).isoformat()


# ---- validate -------------------------------------------------------------------------------------


def _backup_facts(backup: Mapping[str, Any], identity: Callable[[], str], identity_conn_id: str) -> dict[str, Any]:
    """Format and encryption of the chosen backup, refused when pg_restore cannot restore it in parallel or the
    identity does not open it (checked before any download)."""
    doc = backup["manifest"]
    fmt = doc.get("format", "custom")
    if fmt not in RESTORABLE_FORMATS:
        raise request.RequestRefused(
            f"{backup['key']} is a {fmt} dump: a full recovery restores custom or directory archives with "
            "pg_restore --jobs; a plain SQL script cannot go through pg_restore (restore it with psql by hand)")
    encrypted = fetch.prove_identity(doc, identity, identity_conn_id) is not None
    return {"format": fmt, "encrypted": encrypted}


def _space_needed(backup: Mapping[str, Any], fmt: str, encrypted: bool, *, safety: bool) -> int:
    """The download, its plaintext when encrypted, a directory archive's extraction, and the safety dump's
    local file (about a backup's size), with 10% to spare."""
    size = int(backup["size"])
    copies = 1 + int(encrypted) + int(fmt == "directory") + int(safety)
    return int(size * copies * 1.1)


def plan_recovery(cfg: Config, params: Mapping[str, Any], *, target: str, database: str, conn_id: str,
                  find_backup: Callable[[str | None, str | None], dict[str, Any]], identity: Callable[[], str],
                  database_exists: Callable[[str], bool], run_id: str, dag_id: str, started_at: dt.datetime,
                  check_space: Callable[[str, int], None] = source.check_free_space) -> dict[str, Any]:
    """pg_full_recovery's plan from the form, or RequestRefused naming the cause; nothing is created.

    ``find_backup(backup_date, backup_key)``: :func:`pg_dataops.restore.source.find_backup` on S3;
    ``database_exists(name)``: on the target server (also proves it reachable); ``started_at``: the run's
    start (the names' stamp)."""
    choice = request.parse_backup_choice(params, allow_from_database=False)
    jobs = request.parse_jobs(params.get("parallel_jobs"), cfg.restore_jobs)
    sections = request.parse_sections(params.get("sections"))
    if "pre-data" not in sections:
        raise request.RequestRefused(
            f"sections {', '.join(sections)} without pre-data: the recovery restores into a new, empty database, "
            "which needs the tables (pre-data) before data or indexes (post-data) can go in")
    owners = params.get("owners_and_privileges") in (True, "true", "True")
    confirm = request.text_param(params, "confirm")
    request.check_confirm(confirm, database)
    stamp = source.stamp(started_at)
    names = recovery_names(database, stamp)
    backup = find_backup(choice["backup_date"], choice["backup_key"])
    facts = _backup_facts(backup, identity, cfg.encryption.identity_conn_id)
    work = source.work_dir(cfg.local_root, run_id, target)
    check_space(work, _space_needed(backup, facts["format"], facts["encrypted"], safety=True))
    for what, name in (("new database", names["new_database"]), ("kept database", names["kept_database"])):
        if database_exists(name):
            raise request.RequestRefused(f"the {what} {name!r} exists already on the target server: drop or rename "
                                         "it (an earlier recovery's?) and run again")
    production_exists = database_exists(database)
    key = safety_key(cfg, target, database, stamp, encrypted=bool(cfg.encryption.recipients))
    steps = {name: (step.describe() if step else None) for name, step in (
        ("app_stop", cfg.restore.app_stop), ("app_start", cfg.restore.app_start),
        ("health_check", cfg.restore.health_check))}
    return {
        "kind": "full", "target": target, "database": database, "conn_id": conn_id,
        "production_exists": production_exists, "expected_confirm": database, "confirmed_in_advance": bool(confirm),
        **names, "stamp": stamp, "started_at": _iso(started_at),
        "backup": backup, "backup_key": backup["key"], **facts, "jobs": jobs, "sections": sections, "owners": owners,
        "all_sections": sections == list(request.SECTIONS), "work_dir": work,
        "safety_key": key, "safety_location": f"s3://{cfg.bucket}/{key}" if production_exists else None,
        "app_steps": steps, "marker": run_marker(dag_id, run_id, target, "full recovery"),
        "rollback": databases.rollback_commands(database, names["new_database"], names["kept_database"])
        if production_exists else [],
    }


def latest_backup(client, cfg: Config, target: str) -> dict[str, Any]:
    """The newest backup of ``target`` in S3 with its manifest (the rehearsal's), or RequestRefused."""
    backups = source.list_backups(client, cfg, target)
    if not backups:
        raise request.RequestRefused(f"there is no backup of {target!r} in S3 to rehearse a recovery with")
    chosen = backups[-1]
    return {**chosen, "moment": chosen["moment"].isoformat(),
            "manifest": source.read_manifest(client, cfg, chosen["key"])}


def plan_rehearsal(cfg: Config, *, target: str, database: str, conn_id: str, backup: Mapping[str, Any],
                   identity: Callable[[], str], database_exists: Callable[[str], bool], run_id: str, dag_id: str,
                   started_at: dt.datetime,
                   check_space: Callable[[str, int], None] = source.check_free_space) -> dict[str, Any]:
    """pg_recovery_rehearsal's plan: the newest backup into a scratch database on the target server, and a
    timed safety dump of the target database (deleted afterwards)."""
    stamp = source.stamp(started_at)
    facts = _backup_facts(backup, identity, cfg.encryption.identity_conn_id)
    work = source.work_dir(cfg.local_root, run_id, target)
    check_space(work, _space_needed(backup, facts["format"], facts["encrypted"], safety=True))
    scratch = rehearsal_name(target, stamp)
    if database_exists(scratch):
        raise request.RequestRefused(f"the scratch database {scratch!r} exists already on the target server")
    production_exists = database_exists(database)
    key = safety_key(cfg, target, database, f"{stamp}_rehearsal", encrypted=bool(cfg.encryption.recipients))
    return {
        "kind": "rehearsal", "target": target, "database": database, "conn_id": conn_id,
        "production_exists": production_exists, "new_database": scratch, "kept_database": None, "stamp": stamp,
        "started_at": _iso(started_at), "backup": dict(backup), "backup_key": backup["key"], **facts,
        "jobs": cfg.restore_jobs, "sections": list(request.SECTIONS), "all_sections": True, "work_dir": work,
        "safety_key": key, "safety_location": f"s3://{cfg.bucket}/{key}" if production_exists else None,
        "marker": run_marker(dag_id, run_id, target, "recovery rehearsal"),
    }


def start_text(plan: Mapping[str, Any], who: str) -> str:
    """The Slack line a full recovery posts once its checks passed."""
    return (f":rotating_light: Full recovery of {plan['target']} started by {who}: backup {plan['backup_key']} "
            f"({plan['backup']['local_date']}) into {plan['new_database']}, then (after the approval) swap with "
            f"{plan['database']}, kept as {plan['kept_database']}")


# ---- download, restore, check ----------------------------------------------------------------------


def download(client, cfg: Config, plan: Mapping[str, Any], *, identity: Callable[[], str],
             timeout: float | None) -> dict[str, Any]:
    """The backup into the run's folder, hashed against .sha256 and manifest, decrypted when encrypted."""
    got = source.fetch_archive(client, cfg, plan["backup"], plan["work_dir"], identity=identity, timeout=timeout)
    return {**got, "finished_at": _iso()}


def _create_marked(pg, name: str, *, like: Mapping[str, Any] | None, marker: str) -> None:
    """CREATE DATABASE ``name`` (template0; production's encoding and locale when it exists), commented with
    the run's marker so only this run ever drops it."""
    if like is None:
        pg.execute(sqlfiles.composed("verify/create_database.sql", name=name))
    else:
        pg.execute(sql.SQL(sqlfiles.text("restore/full_create_database.sql")).format(
            name=sql.Identifier(name), encoding=sql.Literal(like["encoding"]), collate=sql.Literal(like["collate"]),
            ctype=sql.Literal(like["ctype"])))
    pg.execute(sql.SQL(sqlfiles.text("restore/full_comment_database.sql")).format(
        name=sql.Identifier(name), comment=sql.Literal(marker)))


def _drop_ours(pg, name: str, plan: Mapping[str, Any]) -> bool:
    """Drop ``name`` only if it is this run's new database (its marker), never production or the kept one."""
    if name in (plan["database"], plan.get("kept_database")) or name != plan["new_database"]:
        raise ValueError(f"refusing to drop {name!r}: not this run's new database")
    facts = databases.database_facts(pg, name)
    if facts is None or facts["comment"] != plan["marker"]:
        return False
    databases.drop_database(pg, name)
    return True


def restore_new(admin: pgtools.PgConn, plan: Mapping[str, Any], archive: str, *, pg_bin_root: str,
                timeout: float | None) -> dict[str, Any]:
    """CREATE DATABASE (the plan's new one) on the target server and ``pg_restore --jobs`` the archive into
    it (``--no-owner --no-privileges`` unless the plan keeps owners, the plan's sections). A failed restore drops it again: it is ours. A
    retry finds its own earlier try's database (the marker) and starts over; anyone else's is refused."""
    name = plan["new_database"]
    doc = plan["backup"]["manifest"]
    pg = pgtools.connect(admin.with_db(databases.MAINTENANCE_DATABASE), autocommit=True)
    try:
        existing = databases.database_facts(pg, name)
        if existing is not None:
            if existing["comment"] != plan["marker"]:
                raise DatabaseNotOurs(f"database {name!r} exists and was not created by this run: not touched")
            databases.drop_database(pg, name)  # an earlier try of this run: start over
        major = pgtools.server_major(pg)
        verify.check_client_can_restore(int(doc.get("server_version_num") or 0), major)
        like = databases.database_facts(pg, plan["database"])
        _create_marked(pg, name, like=like, marker=plan["marker"])
        try:
            if plan.get("owners") and like is not None:  # the database itself too, as production's
                pg.execute(sqlfiles.composed("pitr/recover_set_owner.sql", name=name, owner=like["owner"]))
            seconds = verify.restore(admin.with_db(name), archive, plan["format"], jobs=plan["jobs"],
                                     pg_bin_root=pg_bin_root, major=major, timeout=timeout,
                                     sections=None if plan["all_sections"] else plan["sections"],
                                     owners=bool(plan.get("owners")))
        except BaseException:
            _drop_ours(pg, name, plan)
            raise
    finally:
        pg.close()
    return {"database": name, "restore_seconds": seconds, "jobs": plan["jobs"], "sections": plan["sections"],
            "finished_at": _iso()}


def check_restored(conn: pgtools.PgConn, plan: Mapping[str, Any], *, required_tables: Sequence[str],
                   safety_location: str | None = None) -> dict[str, Any]:
    """The same checks as pg_backup's verification on the new database: tables per schema, every table's
    row count against the manifest, the required tables, amcheck. Without the data section the counts
    cannot match: then the tables must exist (empty) and the result says so. Mismatches fail. For a full
    recovery the result carries the swap's preview (``markdown``, ``expected_confirm``)."""
    doc = plan["backup"]["manifest"]
    counts = dict(doc.get("table_counts") or {})
    with_data = "data" in plan["sections"]
    expected = counts if with_data else {name: 0 for name in counts}
    started = time.monotonic()
    facts = verify.run_checks(conn, expected, required_tables=tuple(required_tables), jobs=plan["jobs"],
                              **manifests.exclusions(doc))
    seconds = round(time.monotonic() - started, 3)
    if facts["mismatches"]:
        shown = "; ".join(facts["mismatches"][:6])
        more = f" (and {len(facts['mismatches']) - 6} more)" if len(facts["mismatches"]) > 6 else ""
        raise VerificationFailed(f"the restored database {plan['new_database']} does not match the backup's "
                                 f"manifest: {shown}{more}; production was not touched")
    result = {
        "database": plan["new_database"], "check_seconds": seconds, "tables_found": facts["tables_found"],
        "rows_checked": facts["rows_checked"], "restored_counts": facts["restored_counts"],
        "amcheck": facts["amcheck"], "structure_only": not with_data,
        "note": None if with_data else "sections without data: only the tables' existence was checked (all empty)",
        "finished_at": _iso(),
    }
    if plan["kind"] == "full":
        result.update(preview(plan, result))
    return result


def preview(plan: Mapping[str, Any], checked: Mapping[str, Any]) -> dict[str, Any]:
    """The approval's body: what the swap does, the counts, where the way back is, the commands to undo it."""
    backup = plan["backup"]
    counts = checked["restored_counts"]
    biggest = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:8]
    steps = plan.get("app_steps") or {}
    lines = [
        f"### Swap the recovered database into place: {plan['database']}",
        "",
        f"- **Backup**: `{plan['backup_key']}` taken {backup['moment']} ({backup['local_date']} local), "
        f"{plan['format']}{', age-encrypted' if plan['encrypted'] else ''}",
        f"- **Recovered into**: `{plan['new_database']}`: {checked['tables_found']} tables, "
        f"{checked['rows_checked']:,} rows, counts match the backup's manifest; amcheck {checked['amcheck']}",
    ]
    if checked.get("note"):
        lines.append(f"- **Note**: {checked['note']}")
    if not plan["all_sections"]:
        lines.append(f"- **Sections restored**: {', '.join(plan['sections'])} (not the whole backup)")
    lines.append("- **Owners and GRANTs**: as in the backup" if plan.get("owners") else
                 "- **Owners and GRANTs**: not restored (`--no-owner --no-privileges`): every object belongs to the "
                 "connection's user; an application connecting as its own role needs its grants again")
    if plan["production_exists"]:
        lines += [
            f"- **Then**: stop the application ({steps.get('app_stop') or 'no app_stop configured'}), safety dump "
            f"of the current `{plan['database']}` to `{plan['safety_location']}`, rename `{plan['database']}` -> "
            f"`{plan['kept_database']}` (kept) and `{plan['new_database']}` -> `{plan['database']}`, ANALYZE, start "
            f"the application ({steps.get('app_start') or 'no app_start configured'}), health check "
            f"({steps.get('health_check') or 'none configured'})",
            "",
            "Rollback afterwards (psql as a superuser, connected to `postgres`):",
            "```sql",
            *plan["rollback"],
            "```",
        ]
    else:
        lines.append(f"- **Then**: `{plan['database']}` does not exist: `{plan['new_database']}` is renamed to it "
                     "(no safety dump: there is nothing to keep)")
    lines += ["", "Largest tables restored: " + ", ".join(f"{n} {c:,}" for n, c in biggest)]
    return {"markdown": "\n".join(lines), "expected_confirm": plan["expected_confirm"]}


# ---- the swap and around it -----------------------------------------------------------------------


def safety_dump(conn: pgtools.PgConn, client, cfg: Config, plan: Mapping[str, Any], *, keep: bool = True,
                timeout: float | None = None) -> dict[str, Any]:
    """``pg_dump -Fc`` of the current target database streamed to S3 at the plan's safety key (encrypted for
    ``encryption.recipients`` like every dump), with its ``.sha256``; the local copy is removed once it is
    in S3. ``keep`` false (the rehearsal): deleted again, only its time counts. A retry of the same run
    replaces its own earlier object; anything else under the key is refused."""
    from pg_dataops.backup.dump import run_dump

    if not plan["production_exists"]:
        return {"skipped": True, "reason": f"{plan['database']} does not exist: nothing to keep",
                "finished_at": _iso()}
    key = plan["safety_key"]
    marker = plan["marker"].encode("ascii", "backslashreplace").decode()
    existing = s3.head(client, cfg.bucket, key)
    if existing is not None:
        if existing.get("Metadata", {}).get(RUN_METADATA) != marker:
            raise ObjectExists(f"s3://{cfg.bucket}/{key} exists and is not this run's: refusing to overwrite it")
        for k in (key, key + ".sha256"):
            client.delete_object(Bucket=cfg.bucket, Key=k)
    uploader = s3.StreamingUpload(client, cfg.bucket, key, storage_class=cfg.storage_class, sse=cfg.sse,
                                  kms_key_id=cfg.kms_key_id, metadata={RUN_METADATA: marker})
    out_dir = os.path.join(plan["work_dir"], "safety")
    basename = key.rsplit("/", 1)[1].removesuffix(".age").removesuffix(".dump")
    started = time.monotonic()
    result = run_dump(conn, out_dir, basename, fmt="custom", compression=cfg.dump_compression, jobs=1,
                      part_size=cfg.multipart_chunk_mb * 1024 * 1024, pg_bin_root=cfg.pg_bin_root, uploader=uploader,
                      lock_wait_timeout=cfg.lock_wait_timeout_seconds, timeout=timeout,
                      recipients=cfg.encryption.recipients)
    try:
        s3.put_small(client, cfg.bucket, key + ".sha256", manifests.sha256_line(result.sha256, result.file).encode(),
                     content_type="text/plain", sse=cfg.sse, kms_key_id=cfg.kms_key_id)
    finally:
        for path in (result.path,):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
    seconds = round(time.monotonic() - started, 3)
    out = {"skipped": False, "key": key, "location": f"s3://{cfg.bucket}/{key}", "sha256": result.sha256,
           "size": result.size, "encrypted": result.encryption is not None, "snapshot_time": result.snapshot_time,
           "table_counts": result.table_counts, "seconds": seconds, "deleted": False}
    if not keep:
        for k in (key, key + ".sha256"):
            client.delete_object(Bucket=cfg.bucket, Key=k)
        out["deleted"] = True
    return {**out, "finished_at": _iso()}


def swap(admin: pgtools.PgConn, plan: Mapping[str, Any], approval: Mapping[str, Any] | None) -> dict[str, Any]:
    """Only when approved: the recovered database takes production's name, production is kept as the plan's
    kept database (one transaction; :func:`pg_dataops.common.databases.swap_databases`)."""
    if not (approval or {}).get("approved"):
        raise PermanentError("the swap was not approved: refusing to rename databases")
    result = databases.swap_databases(admin, production=plan["database"], recovered=plan["new_database"],
                                      old=plan["kept_database"], marker=plan["marker"])
    return {**result, "approved_by": approval.get("responded_by"), "finished_at": _iso()}


def analyze(conn: pgtools.PgConn) -> dict[str, Any]:
    """ANALYZE the whole database (a restore leaves no statistics: the planner would guess)."""
    started = time.monotonic()
    pg = pgtools.connect(conn, autocommit=True)
    try:
        pg.execute("SET statement_timeout = 0")  # a large database's ANALYZE takes what it takes
        pg.execute(sqlfiles.text("restore/full_analyze.sql"))
    finally:
        pg.close()
    return {"database": conn.dbname, "analyze_seconds": round(time.monotonic() - started, 3), "finished_at": _iso()}


def cleanup(admin: pgtools.PgConn, plan: Mapping[str, Any]) -> dict[str, Any]:
    """Whatever happened: the run's folder removed; the new database dropped if it is still there under its own
    name (not swapped in: a failure or a rejection) and carries this run's marker. Production and the kept
    database are never dropped."""
    removed = source.remove_files(plan["work_dir"])
    pg = pgtools.connect(admin.with_db(databases.MAINTENANCE_DATABASE), autocommit=True)
    try:
        dropped = _drop_ours(pg, plan["new_database"], plan)
        left = databases.database_facts(pg, plan["new_database"]) is not None
    finally:
        pg.close()
    return {"removed_dir": removed["removed"], "dropped": plan["new_database"] if dropped else None,
            "left_in_place": plan["new_database"] if left else None}


# ---- report ---------------------------------------------------------------------------------------


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return round((dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds(), 3)


def phases(results: Mapping[str, Mapping[str, Any] | None]) -> dict[str, float | None]:
    """Seconds of each phase that ran."""
    got = {name: (r or {}) for name, r in results.items()}
    return {
        "download": got.get("download", {}).get("download_seconds"),
        "decrypt": got.get("download", {}).get("decrypt_seconds"),
        "restore": got.get("restore", {}).get("restore_seconds"),
        "check": got.get("check", {}).get("check_seconds"),
        "app_stop": got.get("app_stop", {}).get("seconds"),
        "safety_dump": got.get("safety_dump", {}).get("seconds"),
        "swap": got.get("swap", {}).get("swap_seconds"),
        "analyze": got.get("analyze", {}).get("analyze_seconds"),
        "app_start": got.get("app_start", {}).get("seconds"),
        "health_check": got.get("health_check", {}).get("seconds"),
    }


def healthy_at(results: Mapping[str, Mapping[str, Any] | None]) -> str | None:
    """When the recovery was done: the health check's success, else (none configured) the last step's end."""
    for name in ("health_check", "app_start", "analyze"):
        r = results.get(name)
        if r and r.get("finished_at"):
            return r["finished_at"]
    return None


def full_report_row(*, plan: Mapping[str, Any] | None, results: Mapping[str, Mapping[str, Any] | None],
                    error: str | None, approval: Mapping[str, Any] | None, target: str, params: Mapping[str, Any],
                    triggered_by: str | None, triggered_at: dt.datetime | None, objective_seconds: float,
                    dag_id: str, run_id: str) -> dict[str, Any]:
    """pg_full_recovery's ``restore_logs`` row: SUCCESS only when swapped and healthy; the RTO is the time from
    the trigger to the health check's success."""
    swapped = bool((results.get("swap") or {}).get("swapped"))
    health = results.get("health_check")
    done = swapped and health is not None and not error
    status = audit.status_of(planned=plan is not None, error=error, approval=approval, approval_needed=True,
                             done=done)
    rto = _seconds_between(_iso(triggered_at), healthy_at(results)) if status == "SUCCESS" and triggered_at else None
    safety = results.get("safety_dump") or {}
    cleaned = results.get("cleanup") or {}
    plan = plan or {}
    details = {"phases": phases(results), "sections": plan.get("sections"), "jobs": plan.get("jobs"),
               "new_database": plan.get("new_database"), "kept_database": plan.get("kept_database") if swapped
               else None, "safety_sha256": safety.get("sha256"), "rollback": plan.get("rollback") if swapped else None,
               "app_steps": {name: _step_summary(results.get(name)) for name in ("app_stop", "app_start",
                                                                                 "health_check")},
               "check": {k: (results.get("check") or {}).get(k) for k in ("tables_found", "rows_checked", "amcheck",
                                                                          "note")},
               "cleanup": cleaned, "triggered_at": _iso(triggered_at) if triggered_at else None,
               "healthy_at": healthy_at(results) if status == "SUCCESS" else None}
    return audit.log_row(
        kind="full", target=target, status=status, dag_id=dag_id, run_id=run_id, params=dict(params),
        triggered_by=triggered_by, approval=approval, database_name=plan.get("database"),
        backup_key=plan.get("backup_key"), changes={"swapped": swapped, "production": plan.get("database"),
                                                    "kept_as": plan.get("kept_database") if swapped else None},
        safety_location=safety.get("location"), rto_seconds=rto, rto_objective_seconds=objective_seconds,
        error=error or (None if status != "FAILED" else "the recovery did not complete"), details=details)


def _step_summary(result: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not result:
        return None
    return {k: result.get(k) for k in ("what", "ok", "status", "returncode", "seconds", "attempts", "skipped")
            if k in result}


def full_report_text(row: Mapping[str, Any], plan: Mapping[str, Any] | None) -> str:
    """The Slack summary: what happened, the RTO, where the way back is, and the rollback commands."""
    plan = plan or {}
    status = row["status"]
    target = row["target"]
    if status == "SUCCESS":
        lines = [f":white_check_mark: Full recovery of {target} done: {plan['database']} is now backup "
                 f"{plan['backup_key']} ({plan['backup']['local_date']}); RTO {fmt_duration(row['rto_seconds'])} "
                 f"(trigger to healthy; objective {fmt_duration(row['rto_objective_seconds'])})",
                 f"previous database kept as {plan['kept_database']}; safety dump "
                 f"{row['safety_location'] or 'none (no database to keep)'}; approved by {row['approved_by']}"]
        if plan.get("rollback"):
            lines += ["rollback (psql as a superuser, on postgres):", "```", *plan["rollback"], "```"]
        return "\n".join(lines)
    icon = {"REFUSED": ":no_entry:", "REJECTED": ":hand:"}.get(status, ":x:")
    what = {"REFUSED": "refused, nothing was changed", "REJECTED": "not approved: production was not touched"}.get(
        status, "FAILED")
    lines = [f"{icon} Full recovery of {target} {what}"]
    if row.get("error_message"):
        lines.append(row["error_message"])
    cleaned = (row.get("details") or {}).get("cleanup") or {}
    if cleaned.get("dropped"):
        lines.append(f"the new database {cleaned['dropped']} was dropped")
    swapped = (row.get("changes") or {}).get("swapped")
    if swapped:
        lines += [f"the swap happened: the previous database is kept as {plan.get('kept_database')}; safety dump "
                  f"{row['safety_location']}", "rollback:", "```", *plan.get("rollback", []), "```"]
    elif plan:
        lines.append(f"{plan.get('database')} was not renamed")
    return "\n".join(lines)


def rehearsal_seconds(results: Mapping[str, Mapping[str, Any] | None]) -> float | None:
    """The rehearsal's measured RTO: download (+ decrypt) + restore + checks + ANALYZE + safety dump."""
    p = phases(results)
    parts = [p["download"], p["restore"], p["check"], p["analyze"], p["safety_dump"]]
    if any(v is None for v in parts):
        return None
    return round(sum(parts) + (p["decrypt"] or 0.0), 3)


def rehearsal_outcome(*, plan: Mapping[str, Any] | None, results: Mapping[str, Mapping[str, Any] | None],
                      error: str | None, target: str, history: list[tuple[dt.datetime, float]],
                      objective_seconds: float, dag_id: str, run_id: str, triggered_by: str | None,
                      now: dt.datetime | None = None) -> tuple[dict[str, Any], RtoVerdict | None, str]:
    """(restore_logs row, verdict, Slack text) of a rehearsal. An RTO above the objective is a FAILED row (the
    report task then fails: a red run that pages)."""
    now = now or dt.datetime.now(dt.UTC)
    measured = None if error or plan is None else rehearsal_seconds(results)
    verdict = assess_rto(measured, objective_seconds, history, now) if measured is not None else None
    exceeded = verdict is not None and verdict.status == "exceeded"
    if plan is None:
        status = "REFUSED"
    elif error or measured is None:
        status = "FAILED"
    else:
        status = "FAILED" if exceeded else "SUCCESS"
    plan = plan or {}
    safety = results.get("safety_dump") or {}
    row = audit.log_row(
        kind="rehearsal", target=target, status=status, dag_id=dag_id, run_id=run_id, params={},
        triggered_by=triggered_by, database_name=plan.get("new_database"), backup_key=plan.get("backup_key"),
        safety_location=None, rto_seconds=measured, rto_objective_seconds=objective_seconds,
        error=error or (verdict.message if exceeded else None if measured is not None
                        else "the rehearsal did not complete"),
        details={"phases": phases(results), "verdict": verdict.status if verdict else None,
                 "message": verdict.message if verdict else None, "safety_dump": {
                     k: safety.get(k) for k in ("key", "size", "encrypted", "seconds", "deleted")},
                 "check": {k: (results.get("check") or {}).get(k) for k in ("tables_found", "rows_checked",
                                                                            "amcheck")},
                 "cleanup": results.get("cleanup")})
    if measured is None:
        text = f":x: Recovery rehearsal of {target} failed: {row['error_message']}"
    else:
        p = row["details"]["phases"]
        icon = ":white_check_mark:" if verdict.status == "ok" else ":warning:" if verdict.status == "trend" else ":x:"
        check = results["check"]
        text = (f"{icon} Recovery rehearsal of {target}: {plan['backup_key']} restored into {plan['new_database']} "
                f"(dropped afterwards), {check['tables_found']} tables and {check['rows_checked']:,} rows match its "
                f"manifest\ndownload {fmt_duration(p['download'])}"
                + (f" + age -d {fmt_duration(p['decrypt'])}" if p["decrypt"] else "")
                + f" + restore {fmt_duration(p['restore'])} (-j{plan['jobs']}) + checks {fmt_duration(p['check'])}"
                f" + ANALYZE {fmt_duration(p['analyze'])} + safety dump {fmt_duration(p['safety_dump'])}"
                f"\n{verdict.message}")
    return row, verdict, text


def rehearsal_history(pg, target: str, since: dt.datetime) -> list[tuple[dt.datetime, float]]:
    """Earlier rehearsals' measured RTOs (for the trend)."""
    from pg_dataops.catalog.migrations import ensure_schema

    ensure_schema(pg)
    rows = pg.execute(sqlfiles.text("restore/full_rehearsal_history.sql"), {"target": target, "since": since})
    return [(at, float(seconds)) for at, seconds in rows.fetchall()]
