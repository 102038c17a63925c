"""`make demo`: the main job on an embedded default, end to end, then a summary.

Starts a throwaway PostgreSQL 15 cluster seeded with the Glimpse-like demo database, a local S3
endpoint (moto server) with bucket glimpse-backups, and a local receiver standing in for Slack and
PagerDuty; generates a throwaway age key pair (.demo/age/identity.txt) and runs DAG pg_backup
encrypted to its public key, with `airflow dags test`; prints where the backup went, its size,
SHA-256, duration and throughput, that it is encrypted and for whom, where the key is and the manual
recovery with `age -d`; stops everything it started.

`make airflow-ui` (this script with --ui) starts the same stack and then `airflow standalone`, so
the DAGs can be triggered and watched in the real UI at http://localhost:$AIRFLOW_PORT (default 8080);
the Backups page is under Browse > Backups.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

import devstack  # noqa: E402

# DEMO_DIR: where the demo keeps its files (tests point it at a temporary folder).
WORK = Path(os.environ.get("DEMO_DIR") or REPO / ".demo").resolve()
BUCKET = "glimpse-backups"
AGE_DIR = WORK / "age"
IDENTITY_CONN_ID = "backup_age_identity"  # encryption.identity_conn_id's default
AGE_HEADER = b"age-encryption.org/v1\n"


def shown(path: Path) -> str:
    """A path as the reader finds it: relative to the checkout when inside it."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def age_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SystemExit(f"[demo] {name} is not installed: `make deps` installs Debian's package 'age'")
    return path


def make_key_pair() -> tuple[Path, str, str]:
    """A throwaway age key pair under .demo/age: (identity file, its text, its public key).

    The demo's backup workers get only the public key (PGBACKUP_ENCRYPTION_RECIPIENTS); the identity goes
    to the Airflow connection that the restore-side tasks (verify) read, as in production."""
    AGE_DIR.mkdir(mode=0o700)
    identity = AGE_DIR / "identity.txt"
    subprocess.run([age_tool("age-keygen"), "-o", str(identity)], check=True, capture_output=True)
    identity.chmod(0o600)  # age-keygen already writes 0600; a private key must never be wider
    recipient = subprocess.run([age_tool("age-keygen"), "-y", str(identity)], check=True, capture_output=True,
                               text=True).stdout.strip()
    return identity, identity.read_text(), recipient


def start_stack(users: int, started: list):
    """Start the demo servers; each is appended to ``started`` at once, so a failure still stops it."""
    if WORK.exists():
        shutil.rmtree(WORK)
    WORK.mkdir()
    identity, identity_text, recipient = make_key_pair()
    say(f"throwaway age key pair: identity (private key) {shown(identity)}, recipient {recipient}")
    say(f"starting PostgreSQL 15 (initdb) and loading the Glimpse demo data ({users} users)...")
    # The cluster lives under /tmp: the postgres OS user may not be able to enter the checkout.
    cluster = devstack.LocalCluster().start()
    started.append(cluster)
    t = time.monotonic()
    cluster.createdb("glimpse")
    cluster.load_demo("glimpse", users)
    size = cluster.database_size("glimpse")
    say(f"  glimpse database: {size / 1e6:.1f} MB, loaded in {time.monotonic() - t:.1f} s (port {cluster.port})")
    s3 = devstack.MotoS3().start()
    started.append(s3)
    s3.client().create_bucket(Bucket=BUCKET)
    say(f"local S3 endpoint (moto server): {s3.endpoint}, bucket {BUCKET}")
    receiver = devstack.Receiver().start()
    started.append(receiver)
    say(f"Slack/PagerDuty stand-in receiver: http://127.0.0.1:{receiver.port}")
    env = devstack.airflow_env(
        WORK / "airflow",
        conns={
            "glimpse_db": cluster.airflow_conn("glimpse"),
            "backup_s3": s3.airflow_conn(),
            "slack_backup": receiver.slack_conn(),
            "pagerduty_backup": receiver.pagerduty_conn(),
            # The private key, for verify only; in production a secrets backend holds it.
            IDENTITY_CONN_ID: json.dumps({"conn_type": "generic", "password": identity_text}),
        },
        extra={"PGBACKUP_LOCAL_ROOT": str(WORK / "backups"), "PGBACKUP_RETRIES": "0",
               "PGBACKUP_ENCRYPTION_RECIPIENTS": recipient},
    )
    (WORK / "airflow").mkdir()
    say("migrating a private Airflow metadata DB (SQLite)...")
    devstack.migrate(env)
    return cluster, s3, receiver, env, size


def manual_recovery(file: str, identity: str, stored: str) -> str:
    """The one line an operator runs without this project, for the artifact's format."""
    decrypt = f"age -d -i {identity} {stored}"
    if file.endswith(".dump.age"):
        return f"{decrypt} | pg_restore --no-owner --dbname=<new database>"
    if file.endswith(".tar.age"):
        return f"mkdir dump && {decrypt} | tar -xf - -C dump && pg_restore --no-owner --jobs=4 --dbname=<new database> dump"
    if file.endswith(".sql.gz.age"):
        return f"{decrypt} | gunzip | psql -v ON_ERROR_STOP=1 --dbname=<new database>"
    return f"{decrypt} | psql -v ON_ERROR_STOP=1 --dbname=<new database>"


def stock_tools_read(local: Path, identity: Path) -> tuple[bool, str]:
    """Proof the manual recovery works: stock ``age -d`` into ``pg_restore --file=/dev/null`` (custom format),
    which reads the whole archive, every table's data included."""
    age = subprocess.Popen([age_tool("age"), "-d", "-i", str(identity), str(local)], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    restore = subprocess.run([str(devstack.PG_BIN / "pg_restore"), "--file=/dev/null"], stdin=age.stdout,
                             capture_output=True, text=True)
    age.stdout.close()
    age_err = age.stderr.read().decode(errors="replace").strip()
    age.stderr.close()
    age_rc = age.wait()
    if age_rc != 0 or restore.returncode != 0:
        return False, (f"FAILED: age -d exited {age_rc} {age_err[-300:]}; pg_restore exited {restore.returncode} "
                       f"{restore.stderr.strip()[-300:]}")
    return True, "ok: age -d | pg_restore --file=/dev/null read the whole archive"


def encryption_lines(doc: dict, local: Path, recipient: str) -> tuple[bool, list[str]]:
    """What the summary says about client-side encryption (the manifest's record and the stored bytes), and
    whether it is what the demo set up: encrypted, and readable with the stock tools."""
    identity = AGE_DIR / "identity.txt"
    with open(local, "rb") as f:
        head = f.read(len(AGE_HEADER))
    enc = doc.get("encryption") if isinstance(doc.get("encryption"), dict) else {}
    if head != AGE_HEADER:
        return False, [" encryption         NOT client-side encrypted: the stored object is plaintext "
                       f"(starts with {head[:5]!r}); only S3 SSE protects it"]
    recipients = enc.get("recipients") or []
    lines = [
        f" encryption         client-side, {enc.get('format', 'age')} (X25519), for "
        + (", ".join(map(str, recipients)) if recipients else f"{recipient} (not recorded in the manifest!)")
        + (" (the demo's throwaway key)" if recipients == [recipient] else ""),
        "   stored object    starts with the age header, not pg_dump's PGDMP: what is on disk and in S3 is "
        "ciphertext",
        f"   identity         {identity} (mode {identity.stat().st_mode & 0o777:o}), also in Airflow connection "
        f"{IDENTITY_CONN_ID} (read by verify only)",
        f" manual recovery    {manual_recovery(doc['file'], str(identity), str(local))}",
    ]
    ok = recipients == [recipient]
    if doc["file"].endswith(".dump.age"):
        readable, text = stock_tools_read(local, identity)
        lines.append(f"   checked now      {text}")
        ok = ok and readable
    return ok, lines


def summarize(s3, receiver, db_size: int, wall: float, recipient: str) -> bool:
    """Prints the summary; whether the backup is encrypted as set up and opens with the stock tools."""
    client = s3.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    manifests = [k for k in keys if k.endswith(".json")]
    if not manifests:
        raise SystemExit("[demo] no manifest in S3: the backup did not complete (see .demo/dags_test.log)")
    doc = json.loads(client.get_object(Bucket=BUCKET, Key=manifests[0])["Body"].read())
    local = next((WORK / "backups").rglob(doc["file"]))
    check = subprocess.run(["sha256sum", "-c", doc["file"] + ".sha256"], cwd=local.parent, capture_output=True,
                           text=True)
    dur = doc["duration_seconds"]
    print()
    print("=" * 78)
    print(" pg_backup: demo run summary")
    print("=" * 78)
    print(f" tier               {doc['type']}")
    print(f" S3 object          s3://{BUCKET}/{doc['s3']['key']}   (endpoint {s3.endpoint})")
    print(f"   beside it        {doc['s3']['sha256_key'].rsplit('/', 1)[1]}, {doc['s3']['manifest_key'].rsplit('/', 1)[1]}"
          f"   [{doc['s3']['storage_class']}, SSE {doc['s3']['server_side_encryption']}]")
    print(f" local copy         {local}")
    print(f" size               {doc['size']:,} bytes ({doc['size'] / 1e6:.1f} MB) from a {db_size / 1e6:.1f} MB database")
    print(f" SHA-256            {doc['checksum']}  ({check.stdout.strip() or check.stderr.strip()})")
    print(f" S3 proof           {doc['s3']['checksum_verified']}")
    encrypted_ok, lines = encryption_lines(doc, local, recipient)
    for line in lines:
        print(line)
    v = doc.get("verification") or {}
    print(f" verified           {doc['verified']}: restored in {v.get('restore_seconds', 0):.2f} s into a scratch "
          f"database, {v.get('tables_found', 0)} tables / {v.get('rows_checked', 0):,} rows match, "
          f"amcheck {v.get('amcheck', 'n/a')}")
    through = " | age" if doc.get("encryption") else ""
    print(f" dump duration      {dur:.2f} s  (pg_dump -Fc -Z{doc['compression']['level']}{through}, hashed in the "
          "same pass)")
    print(f" throughput         {db_size / 1e6 / dur:.1f} MB/s of database, {doc['size'] / 1e6 / dur:.1f} MB/s written")
    print(f" rows               {sum(doc['table_counts'].values()):,} in {len(doc['table_counts'])} tables "
          "(counted in the dump's snapshot)")
    print(f" DAG run wall time  {wall:.1f} s (airflow dags test: dump to notify, then retention)")
    slack = receiver.posts("/slack")
    if slack:
        print(" Slack message      " + slack[-1]["json"]["text"].splitlines()[0])
    print("=" * 78)
    return encrypted_ok


def stop_all(started: list) -> None:
    say("stopping what the demo started")
    for thing in reversed(started):
        thing.stop()


def run_demo(users: int) -> int:
    started: list = []
    try:
        _, s3, receiver, env, size = start_stack(users, started)
        say("running DAG pg_backup end to end (airflow dags test)...")
        t = time.monotonic()
        proc = devstack.dags_test(env, "pg_backup")
        wall = time.monotonic() - t
        (WORK / "dags_test.log").write_text(proc.stdout + "\n" + proc.stderr)
        out = proc.stdout + proc.stderr
        state = (proc.dag_run or {}).get("state")  # the run's state in the metadata DB, not log text
        if state != "success":
            print(out[-5000:])
            say(f"pg_backup FAILED (run state {state}); full log in .demo/dags_test.log")
            return 1
        encrypted_ok = summarize(s3, receiver, size, wall, env["PGBACKUP_ENCRYPTION_RECIPIENTS"])
        say("full Airflow log: .demo/dags_test.log; local backups stay in .demo/backups")
        if not encrypted_ok:
            say("the backup is not encrypted for the demo's key, or stock `age -d` could not read it (see above)")
            return 1
        return 0
    finally:
        stop_all(started)


def ui_port(value: str) -> int:
    """AIRFLOW_PORT as a TCP port, or a clear error (it ends up in URLs and the api-server's bind)."""
    try:
        port = int(value)
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise SystemExit(f"[demo] AIRFLOW_PORT must be a TCP port number (1-65535), got {value!r}")
    return port


def run_ui(users: int) -> int:
    port = ui_port(os.environ.get("AIRFLOW_PORT", "8080"))
    url = f"http://localhost:{port}"
    # SIGTERM (`timeout`, a CI job's stop) ends the demo like Ctrl-C: everything it started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    started: list = []
    try:
        env = start_stack(users, started)[3]
    except KeyboardInterrupt:
        cleaning_up()
        stop_all(started)
        return 0
    except BaseException:
        cleaning_up()
        stop_all(started)
        raise
    # The task processes reach the api-server through the execution API URL: left at its default
    # (port 8080) every task of a UI on another port dies with "Connection refused".
    env = {**env, "AIRFLOW__API__PORT": str(port), "AIRFLOW__API__BASE_URL": url,
           "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
           "AIRFLOW__CORE__EXECUTOR": "LocalExecutor"}
    say("starting `airflow standalone` (api-server, scheduler, dag-processor, triggerer); Ctrl-C stops all")
    say(f"UI: {url}  login: admin, password printed by airflow "
        f"and kept in {WORK / 'airflow'}/simple_auth_manager_passwords.json.generated")
    say(f"Backups page: Browse > Backups ({url}/plugin/backups); trigger DAG pg_backup first to fill it")
    # Its own process group, so stopping the demo stops every Airflow component it started.
    proc = subprocess.Popen([devstack.airflow_bin(), "standalone"], env=env, start_new_session=True)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        cleaning_up()
        devstack.stop_process_groups([proc], grace=30)  # the standalone and its task processes
        stop_all(started)


def cleaning_up() -> None:
    """A second Ctrl-C or SIGTERM must not cut the clean-up short and leave servers running."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ui", action="store_true", help="start the demo stack and the real Airflow UI")
    ap.add_argument("--users", type=int, default=int(os.environ.get("DEMO_USERS", "4000")),
                    help="demo database size in users (about 12 kB each; default 4000, about 50 MB)")
    args = ap.parse_args()
    return run_ui(args.users) if args.ui else run_demo(args.users)


if __name__ == "__main__":
    sys.exit(main())
