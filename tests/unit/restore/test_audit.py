"""The restore_logs row's status and approval fields."""

import pytest
from pg_dataops.restore import audit

APPROVED = {"approved": True, "responded_by": "admin", "decision": "approved"}
REJECTED = {"approved": False, "responded_by": "admin", "decision": "rejected"}


@pytest.mark.parametrize(("kwargs", "status"), [
    ({"planned": False, "error": "validate: no backup of 'glimpse' on 2026-11-27"}, "REFUSED"),
    ({"planned": True, "error": "apply: deadlock"}, "FAILED"),
    ({"planned": True, "error": None, "dry_run": True}, "DRY_RUN"),
    ({"planned": True, "error": None, "approval_needed": True, "approval": REJECTED}, "REJECTED"),
    ({"planned": True, "error": None, "approval_needed": True, "approval": None}, "FAILED"),
    ({"planned": True, "error": None, "approval_needed": True, "approval": APPROVED}, "SUCCESS"),
    ({"planned": True, "error": None, "done": False}, "FAILED"),
])
def test_status(kwargs, status):
    assert audit.status_of(**kwargs) == status


def test_first_error_in_run_order_names_its_step():
    assert audit.first_error([("validate", ""), ("stage", "boom"), ("apply", "later")]) == "stage: boom"
    assert audit.first_error([("stage", "stage: boom")]) == "stage: boom"
    assert audit.first_error([("validate", ""), ("stage", None)]) is None


def test_row_keeps_who_approved_only_when_approved():
    row = audit.log_row(kind="table", target="glimpse", status="SUCCESS", dag_id="d", run_id="r",
                        params={"table": "public.likes"}, approval=APPROVED, triggered_by="alice")
    assert (row["approved_by"], row["triggered_by"], row["error_message"]) == ("admin", "alice", None)
    assert row["details"]["approval"] == APPROVED
    row = audit.log_row(kind="table", target="glimpse", status="REJECTED", dag_id="d", run_id="r", params={},
                        approval=REJECTED, error="ignored")
    assert (row["approved_by"], row["error_message"]) == (None, None)
    with pytest.raises(ValueError, match="kind must be one of"):
        audit.log_row(kind="pitr", target="g", status="SUCCESS", dag_id="d", run_id="r", params={})
