"""A DAG run on a real Airflow (``devstack.AirflowServices``), read through the REST API, whose approval
(human-in-the-loop) task is answered the way the UI's buttons do it."""

from __future__ import annotations

import json
from urllib.parse import quote

import devstack

WAIT_SECONDS = 150  # a step of the run, scheduled and executed by a LocalExecutor on a busy 2-vCPU machine


class Run:
    """One run of a restore DAG on the running Airflow, read through the REST API; ``gate``: its approval task."""

    def __init__(self, airflow: devstack.AirflowServices, run_id: str, *, dag_id: str, gate: str):
        self.airflow, self.run_id, self.dag_id, self.gate = airflow, run_id, dag_id, gate
        self.path = f"dags/{dag_id}/dagRuns/{quote(run_id, safe='')}"

    def state(self) -> str:
        self.airflow.check_running()
        return self.airflow.api("GET", self.path)["state"]

    def task_state(self, task_id: str) -> str | None:
        self.airflow.check_running()
        return self.airflow.api("GET", f"{self.path}/taskInstances/{task_id}")["state"]

    def task_states(self) -> dict[str, str | None]:
        tis = self.airflow.api("GET", f"{self.path}/taskInstances")["task_instances"]
        return {t["task_id"]: t["state"] for t in tis}

    def explain(self) -> str:
        """What a failed assertion on the run's state should show. The first line names each task that is not
        green with the last error of its log (CI shows only a failure's first line in its summary); then every
        task's state and the end of those tasks' logs (Airflow 3 writes them as JSON lines: shown readable)."""
        states = self.task_states()
        bad = {task: state for task, state in states.items() if state not in ("success", "skipped")}
        folder = self.airflow.home / "logs" / f"dag_id={self.dag_id}" / f"run_id={self.run_id}"
        logs = {task: sorted(folder.glob(f"task_id={task}/**/*.log")) for task in bad}
        readable = {log: _readable(log) for task in bad for log in logs[task]}

        def cause(task: str) -> str:
            errors = [line for log in logs[task] for line in readable[log] if line.startswith(("error", "critical"))]
            return f" ({errors[-1][:400]})" if errors else ""

        lines = ["not green: " + ", ".join(f"{task}={state}{cause(task)}" for task, state in bad.items())
                 if bad else "every task is green",
                 f"run {self.run_id}: " + ", ".join(f"{task}={state}" for task, state in states.items())]
        for log, text in readable.items():
            lines.append(f"--- {log.relative_to(folder)} ---")
            lines.extend(text[-40:])
        return "\n".join(lines)

    def wait_awaiting_input(self) -> None:
        def waiting() -> bool:
            state = self.task_state(self.gate)
            if self.state() in ("failed", "success"):
                raise AssertionError(f"the run ended before the approval: {self.task_states()}")
            return state == "awaiting_input"

        assert devstack.wait_for(waiting, timeout=WAIT_SECONDS, interval=1), self.task_states()
        # The gate reports awaiting_input before the scheduler has taken in its process's end; an answer in that
        # second makes the scheduler see the old process end while the resumed try is queued, and fail the gate
        # (Airflow 3.3.2). A person takes longer than that: answer once the scheduler has logged the end.
        finished = f"TaskInstance Finished: dag_id={self.dag_id}, task_id={self.gate}, run_id={self.run_id},"
        assert devstack.wait_for(lambda: finished in self.airflow.log("scheduler").read_text(errors="replace"),
                                 timeout=60, interval=0.5), "the scheduler never took in the gate's pause"

    def pending_approval(self) -> dict:
        pending = self.airflow.api("GET", "dags/~/dagRuns/~/hitlDetails?response_received=false")["hitl_details"]
        mine = [d for d in pending if d["task_instance"]["dag_run_id"] == self.run_id]
        assert len(mine) == 1, pending
        return mine[0]

    def answer(self, option: str) -> dict:
        return self.airflow.api("PATCH", f"{self.path}/taskInstances/{self.gate}/-1/hitlDetails",
                                {"chosen_options": [option], "params_input": {}})

    def wait_end(self) -> str:
        assert devstack.wait_for(lambda: self.state() in ("failed", "success"), timeout=WAIT_SECONDS, interval=1), \
            self.explain()
        return self.state()


def _readable(log) -> list[str]:
    """A task log's lines as ``level event`` (with the exception, when there is one); other lines as they are."""
    out = []
    for raw in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(raw)
        except ValueError:
            out.append(raw)
            continue
        if not isinstance(entry, dict):
            out.append(raw)
            continue
        line = f"{entry.get('level', '?')} {entry.get('event', '')}"
        for detail in entry.get("error_detail") or []:
            if isinstance(detail, dict):
                line += f" [{detail.get('exc_type')}: {detail.get('exc_value')}]"
        out.append(line)
    return out
