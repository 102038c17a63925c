"""The approval gate: skipped when not requested, approved in advance by ``confirm``, else a real human-in-the-loop
wait (``TaskAwaitingInput`` with the preview as body and the param's timeout) resumed through ``execute_complete``
with an answer, a rejection or the timeout's default. ``airflow dags test`` cannot answer the wait, so the waiting
path is exercised here."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from airflow.providers.standard.exceptions import HITLTimeoutError
from airflow.providers.standard.operators import hitl
from airflow.sdk import DAG
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException, DownstreamTasksSkipped, TaskAwaitingInput
from pg_dataops.airflow import approval
from pg_dataops.airflow.approval import ApprovalGateOperator

PREVIEW = {"markdown": "### Swap glimpse_recovery into place as glimpse\n- **glimpse** is kept", "expected_confirm": "glimpse"}
ANSWERED_AT = dt.datetime(2026, 12, 1, 5, 40, tzinfo=dt.UTC)


class FakeTI:
    def __init__(self):
        self.id = uuid.uuid4()
        self.pushed: dict[str, object] = {}
        self.map_index = -1
        self.dag_id, self.run_id, self.task_id = "pg_pitr_restore", "manual__1", "approve_swap"

    def xcom_push(self, key, value):
        self.pushed[key] = value


def gate(**kw) -> ApprovalGateOperator:
    args = {"task_id": "approve_swap", "subject": "Swap?", "preview": PREVIEW, "requested": "True", "confirm": "",
            "approval_timeout_minutes": "60", "announce": False}
    args.update(kw)
    return ApprovalGateOperator(**args)


def context(op) -> dict:
    ti = FakeTI()
    return {"ti": ti, "task_instance": ti, "task": op}


def test_not_requested_skips():
    with pytest.raises(AirflowSkipException, match="not requested"):
        gate(requested="False").execute(context(None))


def test_confirm_equal_to_the_name_approves_at_once():
    op = gate(confirm="glimpse")
    ctx = context(op)
    result = op.execute(ctx)
    assert result["approved"] is True and result["responded_by"] == "confirm param" and result["how"] == "confirm"
    assert ctx["ti"].pushed["decision"] == result


@pytest.mark.parametrize(("kw", "message"), [
    ({"confirm": "glimpse_prod"}, "confirm 'glimpse_prod' does not match 'glimpse': not approved"),
    ({"preview": None}, "no preview of the gated step"),
    ({"approval_timeout_minutes": "soon"}, "approval_timeout_minutes must be a whole number of minutes"),
])
def test_a_wrong_confirm_or_no_preview_fails(kw, message, monkeypatch):
    monkeypatch.setattr(hitl, "upsert_hitl_detail", lambda **k: None)
    op = gate(**kw)
    with pytest.raises(AirflowFailException, match=message):
        op.execute(context(op))


def test_without_confirm_it_waits_with_the_preview_and_the_timeout(monkeypatch):
    written = {}
    monkeypatch.setattr(hitl, "upsert_hitl_detail", lambda **k: written.update(k))
    op = gate(approval_timeout_minutes="15")
    ctx = context(op)
    with pytest.raises(TaskAwaitingInput) as waiting:
        op.execute(ctx)
    assert waiting.value.method_name == "execute_complete" and waiting.value.timeout == dt.timedelta(minutes=15)
    assert written["body"] == PREVIEW["markdown"] and written["subject"] == "Swap?"
    assert written["options"] == ["Approve", "Reject"] and written["defaults"] == ["Reject"]  # timeout rejects
    assert written["ti_id"] == ctx["ti"].id and "decision" not in ctx["ti"].pushed


def test_waiting_is_announced_on_slack(monkeypatch):
    monkeypatch.setattr(hitl, "upsert_hitl_detail", lambda **k: None)
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://airflow.example:8080")
    posted = []
    import pg_dataops.airflow.base as base

    monkeypatch.setattr(base, "post_slack", lambda cfg, ctx, text: posted.append(text))
    op = gate(announce=True)
    with pytest.raises(TaskAwaitingInput):
        op.execute(context(op))
    assert len(posted) == 1 and posted[0].startswith(":raising_hand: Approval needed: Swap? (pg_pitr_restore, run "
                                                     "manual__1); rejected automatically after 1:00:00.")
    assert posted[0].endswith("Approve or reject: http://airflow.example:8080/dags/pg_pitr_restore/runs/manual__1/"
                              "tasks/approve_swap/required_actions?map_index=-1")


def test_an_approval_is_recorded_with_who_gave_it():
    op = gate()
    ctx = context(op)
    result = op.execute_complete(ctx, {"chosen_options": ["Approve"], "params_input": {}, "responded_at": ANSWERED_AT,
                                       "responded_by_user": {"id": "7", "name": "alice"}})
    assert result == {"approved": True, "decision": "approved", "responded_by": "alice",
                      "responded_at": "2026-12-01T05:40:00+00:00", "timed_out": False, "how": "ui",
                      "chosen_options": ["Approve"]}
    assert ctx["ti"].pushed["decision"] == result


def _wired_gate() -> tuple[ApprovalGateOperator, list[str]]:
    from airflow.providers.standard.operators.empty import EmptyOperator

    with DAG("approval_test", schedule=None):
        op = gate()
        swap = EmptyOperator(task_id="swap")
        teardown = EmptyOperator(task_id="teardown").as_teardown()
        outcome = EmptyOperator(task_id="run_outcome")  # what standard_dag adds downstream of every task
        op >> swap
        op >> teardown
        op >> outcome
    return op, ["swap"]


def test_a_rejection_skips_the_gated_step_and_still_records_the_decision():
    op, gated = _wired_gate()
    ctx = context(op)
    with pytest.raises(DownstreamTasksSkipped) as skipped:
        op.execute_complete(ctx, {"chosen_options": ["Reject"], "params_input": {}, "responded_at": ANSWERED_AT,
                                  "responded_by_user": {"id": "8", "name": "bob"}})
    assert skipped.value.tasks == gated  # not the teardown, not run_outcome
    assert ctx["ti"].pushed["decision"]["approved"] is False
    assert ctx["ti"].pushed["decision"]["responded_by"] == "bob"


def test_the_timeout_applies_reject():
    op, _ = _wired_gate()
    ctx = context(op)
    with pytest.raises(DownstreamTasksSkipped):
        op.execute_complete(ctx, {"chosen_options": ["Reject"], "params_input": {}, "responded_at": ANSWERED_AT,
                                  "responded_by_user": None, "timedout": True})
    assert ctx["ti"].pushed["decision"] == {
        "approved": False, "decision": "timed out (rejected)", "responded_by": "nobody (timeout)",
        "responded_at": "2026-12-01T05:40:00+00:00", "timed_out": True, "how": "timeout", "chosen_options": ["Reject"]}


def test_a_timeout_without_defaults_fails():
    op = gate(defaults=None)
    with pytest.raises(HITLTimeoutError):
        op.execute_complete(context(op), {"error": "The Human-in-the-loop response timeout has passed",
                                          "error_type": "timeout"})


def test_decision_reads_a_user_given_as_text():
    assert approval.decision({"chosen_options": ["Approve"], "responded_by_user": "carol",
                              "responded_at": None})["responded_by"] == "carol"
