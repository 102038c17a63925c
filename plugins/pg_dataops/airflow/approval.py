"""Approval gates: a human approves a destructive step in the Airflow UI, or a ``confirm`` param does in advance.

The runbook's ``read -p "Type the database name to continue"`` becomes the standard provider's
human-in-the-loop :class:`ApprovalOperator`: the run waits in the UI's *Required Actions* with the step's
preview as the approval's Markdown body (what will change, the counts, where the way back is kept), and
the task's result records who decided. :class:`ApprovalGateOperator` adds what every gate of ours needs:

- ``requested`` false (the step was not asked for): the gate is skipped, and so is the step after it.
- ``confirm`` equal to ``expected_confirm`` (the database's name): approved at once, without waiting, for
  runs started from the REST API or ``airflow dags trigger -c`` (``responded_by`` "confirm param"). A
  ``confirm`` that does not match fails the gate: a typo must not approve, nor silently wait.
- ``approval_timeout_minutes`` (templated, default 60): the wait's ``response_timeout``; when nobody
  answers in time the scheduler applies the default, **Reject**.
- Reject (or the timeout) skips the gated step; teardowns, ``run_outcome`` (so a later failure still makes
  the run red) and ALL_DONE report steps after it still run, and read the decision from the gate's XCom.

Wire the gated step as the gate's only direct downstream task. The decision
``{"approved", "decision", "responded_by", "responded_at", "timed_out", "how", "chosen_options"}`` is the
gate's XCom ``decision`` whatever the outcome (a Reject stores no return value: the provider skips by
raising), and its ``return_value`` when approved (pass ``gate.output`` to the gated step).

``airflow dags test`` cannot answer a wait (it blocks), so DAG-run tests take the ``confirm`` path and the
waiting path is unit-tested through :meth:`ApprovalGateOperator.execute_complete`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.exceptions import HITLRejectException
from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from pg_dataops.airflow.runstate import OUTCOME_TASK_ID

if TYPE_CHECKING:
    from airflow.sdk import Context

DEFAULT_TIMEOUT_MINUTES = 60
CONFIRM_PARAM = "confirm param"
DECISION_KEY = "decision"  # the XCom every outcome is pushed under (approved, rejected, timed out)


def _flag(value: Any) -> bool:
    """A rendered template of a boolean param arrives as text ("True"/"False")."""
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("true", "1", "yes", "on")


def _minutes(value: Any) -> int:
    try:
        minutes = int(str(value).strip())
    except (TypeError, ValueError):
        raise AirflowFailException(f"approval_timeout_minutes must be a whole number of minutes, got {value!r}") from None
    if not 1 <= minutes <= 7 * 24 * 60:
        raise AirflowFailException(f"approval_timeout_minutes must be 1..10080, got {minutes}")
    return minutes


def _who(user: Any) -> str | None:
    if isinstance(user, Mapping):
        return str(user.get("name") or user.get("id") or "") or None
    return str(user) if user else None


def decision(event: Mapping[str, Any], options: Sequence[str] = (ApprovalOperator.APPROVE,)) -> dict[str, Any]:
    """The gate's result from a human-in-the-loop event (an answer, or the timeout's default)."""
    chosen = list(event.get("chosen_options") or [])
    approved = bool(chosen) and chosen[0] in options
    timed_out = bool(event.get("timedout"))
    at = event.get("responded_at")
    who = _who(event.get("responded_by_user"))
    if timed_out:
        label = "timed out (rejected)"
        who = who or "nobody (timeout)"
    else:
        label = "approved" if approved else "rejected"
    return {"approved": approved, "decision": label, "responded_by": who,
            "responded_at": at.isoformat() if isinstance(at, dt.datetime) else at, "timed_out": timed_out,
            "how": "timeout" if timed_out else "ui", "chosen_options": chosen}


class ApprovalGateOperator(ApprovalOperator):
    """Waits for Approve/Reject of a step whose preview is ``preview`` (an upstream task's dict, templated).

    ``body_key``: the preview's Markdown for the approval's body; ``expected_confirm`` (templated; default
    the preview's ``expected_confirm``): the value of ``confirm`` that approves in advance.
    """

    template_fields: Sequence[str] = ("subject", "body", "preview", "requested", "confirm", "expected_confirm",
                                      "approval_timeout_minutes")
    ui_color = "#fff2cc"

    def __init__(self, *, subject: str, preview: Any = None, body_key: str = "markdown", requested: Any = True,
                 confirm: Any = "", expected_confirm: Any = None,
                 approval_timeout_minutes: Any = DEFAULT_TIMEOUT_MINUTES, announce: bool = True, **kwargs):
        kwargs.setdefault("defaults", [ApprovalOperator.REJECT])  # nobody answered: reject
        super().__init__(subject=subject, body=kwargs.pop("body", None),
                         response_timeout=dt.timedelta(minutes=DEFAULT_TIMEOUT_MINUTES), **kwargs)
        self.preview = preview
        self.body_key = body_key
        self.requested = requested
        self.confirm = confirm
        self.expected_confirm = expected_confirm
        self.approval_timeout_minutes = approval_timeout_minutes
        self.announce = announce  # post "approval needed" with the link to Slack when the wait starts

    def expected(self) -> str | None:
        if self.expected_confirm not in (None, ""):
            return str(self.expected_confirm)
        if isinstance(self.preview, Mapping) and self.preview.get("expected_confirm"):
            return str(self.preview["expected_confirm"])
        return None

    def execute(self, context: Context) -> Any:
        if not _flag(self.requested):
            raise AirflowSkipException("the gated step was not requested: nothing to approve")
        if not isinstance(self.preview, Mapping):
            raise AirflowFailException("no preview of the gated step (its upstream task returned nothing): "
                                       "refusing to ask for an approval of an unknown change")
        expected = self.expected()
        confirm = str(self.confirm or "").strip()
        if confirm:
            if expected is None or confirm != expected:
                raise AirflowFailException(f"confirm {confirm!r} does not match {expected!r}: not approved (leave "
                                           "confirm empty to approve in the Airflow UI)")
            self.log.info("approved in advance: the confirm param equals %r", expected)
            result = {"approved": True, "decision": "approved", "responded_by": CONFIRM_PARAM,
                      "responded_at": dt.datetime.now(dt.UTC).isoformat(), "timed_out": False, "how": "confirm",
                      "chosen_options": [self.APPROVE]}
            context["ti"].xcom_push(key=DECISION_KEY, value=result)
            return result
        self.body = str(self.preview.get(self.body_key) or self.body or "")
        self.response_timeout = dt.timedelta(minutes=_minutes(self.approval_timeout_minutes))
        self.log.info("waiting for an approval in the Airflow UI (Required Actions) for up to %s", self.response_timeout)
        if self.announce:
            self._announce(context)
        return super().execute(context)

    def _announce(self, context: Context) -> None:
        """Tell Slack that a run waits for someone (best effort: the wait itself is what matters)."""
        from pg_dataops.airflow.base import post_slack
        from pg_dataops.common.config import load_config

        try:
            link = self.generate_link_to_ui_from_context(context=context)
        except Exception:  # noqa: BLE001 - no [api] base_url: the message names the run instead
            link = None
        ti = context["ti"]
        text = (f":raising_hand: Approval needed: {self.subject} ({ti.dag_id}, run {ti.run_id}); rejected "
                f"automatically after {self.response_timeout}. " + (f"Approve or reject: {link}" if link else
                                                                     "See Required Actions in the Airflow UI."))
        try:
            post_slack(load_config(), context, text)
        except Exception as exc:  # noqa: BLE001
            self.log.warning("could not announce the approval on Slack: %s", exc)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Resumed with the answer (or the timeout's default, Reject): Reject skips the gated step.

        The decision goes to XCom ``decision`` first: on Reject the provider skips the downstream step by
        raising (the task still succeeds), so no return value would be stored."""
        result = decision(event) if "error" not in event else None
        if result is not None:
            self.log.info("%s by %s", result["decision"], result["responded_by"])
            context["ti"].xcom_push(key=DECISION_KEY, value=result)
        # The human-in-the-loop checks (an error event, an unknown option), without ApprovalOperator's skip: it
        # would skip every direct downstream task, run_outcome included, and a later failure (the report,
        # a teardown) would then leave the run green.
        HITLOperator.execute_complete(self, context=context, event=event)
        if result["approved"]:
            return result
        if self.fail_on_reject:
            raise HITLRejectException('Receive "Reject"')
        gated = [t for t in context["task"].get_direct_relatives(upstream=False)
                 if not t.is_teardown and t.task_id != OUTCOME_TASK_ID]
        if gated:
            self.log.info("rejected: skipping %s", ", ".join(t.task_id for t in gated))
            self.skip(ti=context["ti"], tasks=gated)
        return result
