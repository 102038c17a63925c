"""`make airflow-ui` on a port other than 8080 (issue 13 item 4): `scripts/demo.py --ui` as the Makefile runs
it, with AIRFLOW_PORT set to a free port. Its tasks used to die with "Connection refused" because the execution
API URL stayed at 8080; here a pg_backup run triggered through that port's REST API must end green with every
task green, and the Backups page on that port must show the backup it made. SIGTERM (what Ctrl-C does) then
stops everything the demo started: the api-server's port and the demo PostgreSQL's port are closed afterwards.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import devstack
import pytest
import requests

pytestmark = pytest.mark.dagrun

REPO = Path(__file__).resolve().parents[2]
START_SECONDS = 300  # demo data, moto, migration, then airflow standalone's start-up on a busy 2-vCPU machine
RUN_SECONDS = 420


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def tail(path: Path) -> str:
    return path.read_text(errors="replace")[-4000:] if path.exists() else "(no log)"


def test_airflow_ui_on_another_port_runs_pg_backup_and_stops_cleanly(tmp_path):
    work, log = tmp_path / "demo", tmp_path / "demo.log"
    port = devstack.free_port()
    assert port != 8080
    env = {**os.environ, "DEMO_DIR": str(work), "AIRFLOW_PORT": str(port)}
    with open(log, "wb") as out:
        demo = subprocess.Popen([sys.executable, str(REPO / "scripts" / "demo.py"), "--ui", "--users", "200"],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        passwords = work / "airflow" / "simple_auth_manager_passwords.json.generated"
        assert devstack.wait_for(lambda: demo.poll() is not None or (passwords.exists() and port_open(port)),
                                 timeout=START_SECONDS, interval=1), tail(log)
        assert demo.poll() is None, f"the demo exited with {demo.returncode}:\n{tail(log)}"
        # The README's step 1: sign in as admin with the password airflow standalone generated.
        airflow = devstack.AirflowServices({"AIRFLOW_HOME": str(work / "airflow")}, port=port,
                                           password=json.loads(passwords.read_text())["admin"])
        airflow.wait_healthy(START_SECONDS)
        airflow.wait_for_dag("pg_backup", timeout=180)

        # Step 2: unpause and trigger pg_backup (daily, so the assertion does not depend on the weekday).
        run_id = airflow.trigger("pg_backup", {"tier": "daily"})
        state = ""

        def ended() -> bool:
            nonlocal state
            state = airflow.api("GET", f"dags/pg_backup/dagRuns/{run_id}")["state"]
            return state in ("success", "failed")

        assert devstack.wait_for(ended, timeout=RUN_SECONDS, interval=3), f"run {run_id} still {state}"
        tasks = airflow.api("GET", f"dags/pg_backup/dagRuns/{run_id}/taskInstances")["task_instances"]
        task_states = {t["task_id"]: t["state"] for t in tasks}
        assert state == "success", (task_states, tail(log))
        assert task_states and all(s in ("success", "skipped") for s in task_states.values()), task_states
        assert task_states.get("back_up_target.dump") == "success", task_states

        # Step 3: the Backups page on the same port shows the backup that run made.
        page = requests.get(f"{airflow.url}/pg-backups/", timeout=60,
                            headers={"Authorization": f"Bearer {airflow.token()}"})
        assert page.status_code == 200, page.text[:500]
        assert f"pg_backup / {run_id}" in page.text

        # Step 5: SIGTERM (as Ctrl-C) stops Airflow, PostgreSQL, S3 and the receiver.
        found = re.search(r"glimpse database: .* \(port (\d+)\)", log.read_text(errors="replace"))
        assert found, tail(log)
        pg_port = int(found.group(1))
        assert port_open(pg_port)
        demo.send_signal(signal.SIGTERM)
        demo.wait(timeout=120)
        assert demo.returncode == 0, tail(log)
        assert devstack.wait_for(lambda: not port_open(port) and not port_open(pg_port), timeout=30), \
            f"still listening after the demo stopped: api {port_open(port)}, postgres {port_open(pg_port)}"
    finally:
        if demo.poll() is None:  # a failed assertion: the demo's own clean-up stops what it started
            demo.send_signal(signal.SIGTERM)
            try:
                demo.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(demo.pid, signal.SIGKILL)
                demo.wait(timeout=30)
