"""Application steps: stop the app, start it, check its health, fence a server. Airflow-free.

pg_full_recovery stops, starts and health-checks the application; pg_failover fences the old primary and
restarts the application; pg_standby_provision may start the standby's server the host's way.

The runbook ran ``systemctl stop glimpse-api`` and ``curl -f .../health || echo "Health check failed!"`` (a
failed check printed a line and the script declared the recovery completed). Here each step is configured
(``restore.app_stop``/``app_start``/``health_check``: an HTTP call or an argument list run without a shell,
see :class:`~pg_dataops.common.config.AppStep`), has a time limit, and its outcome is a dict for the report;
a failed stop or start, or a health check still failing at its deadline, fails the task.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from pg_dataops.common.config import AppStep
from pg_dataops.common.errors import PermanentError, redact

TAIL = 500  # characters of a step's output kept for the report


class AppStepFailed(PermanentError):
    """An application step did not succeed (non-2xx answer, non-zero exit, time limit, unreachable)."""


def _tail(text: str, secret: str | None) -> str:
    return redact(text.strip()[-TAIL:], secret)


def _http(step: AppStep, bearer: str | None, timeout: float) -> dict[str, Any]:
    headers = {"User-Agent": "pg_dataops"}
    if bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    data = b"" if step.method in ("POST", "PUT") else None
    request = urllib.request.Request(step.url, data=data, method=step.method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310 - an http(s) URL from the config
            status, body = resp.status, resp.read(64 * 1024)
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read(64 * 1024) if exc.fp else b""
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        return {"ok": False, "status": None, "output_tail": _tail(f"no answer: {reason}", bearer)}
    return {"ok": 200 <= status < 300, "status": status, "output_tail": _tail(body.decode(errors="replace"), bearer)}


def _command(step: AppStep, timeout: float) -> dict[str, Any]:
    try:
        proc = subprocess.run(list(step.argv), capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL,
                              env=os.environ.copy())
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"") + (exc.stderr or b"")
        return {"ok": False, "returncode": None,
                "output_tail": _tail(out.decode(errors="replace") + f"\n(stopped after {timeout:g} s)", None)}
    except OSError as exc:
        return {"ok": False, "returncode": None, "output_tail": f"cannot run {step.argv[0]!r}: {exc.strerror}"}
    out = (proc.stdout + proc.stderr).decode(errors="replace")
    return {"ok": proc.returncode == 0, "returncode": proc.returncode, "output_tail": _tail(out, None)}


def run_app_step(step: AppStep, *, bearer: str | None = None) -> dict[str, Any]:
    """Run one step once: ``{"kind", "what", "ok", "status" (http) | "returncode" (command), "seconds",
    "output_tail"}``. Never raises for the step's own failure: ``ok`` says it."""
    started = time.monotonic()
    if step.kind == "http":
        result = _http(step, bearer, step.timeout_seconds)
    elif step.kind == "command":
        result = _command(step, step.timeout_seconds)
    else:
        raise ValueError(f"unknown application step kind {step.kind!r}")
    return {"kind": step.kind, "what": step.describe(), **result, "seconds": round(time.monotonic() - started, 3)}


def describe_outcome(result: dict[str, Any]) -> str:
    how = (f"HTTP {result['status']}" if result.get("status") is not None else
           f"exit {result['returncode']}" if result.get("returncode") is not None else "no result")
    tail = f": {result['output_tail']}" if result.get("output_tail") else ""
    return f"{result['what']} -> {how}{tail}"


def run_required(step: AppStep | None, setting: str, *, bearer: str | None = None) -> dict[str, Any]:
    """A step that must succeed (``setting``: its config path, e.g. ``restore.app_stop``): ``{"skipped": True}``
    when not configured, the result when it succeeded, else AppStepFailed naming the step and its outcome."""
    if step is None:
        return {"skipped": True, "what": f"no {setting} configured"}
    result = run_app_step(step, bearer=bearer)
    if not result["ok"]:
        raise AppStepFailed(f"{setting} failed: {describe_outcome(result)}")
    return {**result, "skipped": False, "finished_at": _now_iso()}


def wait_healthy(step: AppStep | None, *, bearer: str | None = None, deadline_seconds: float,
                 interval: float = 2.0, sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """The health check, retried until it succeeds or ``deadline_seconds`` have passed (then AppStepFailed
    with the last outcome). ``{"skipped": True}`` when none is configured."""
    if step is None:
        return {"skipped": True, "what": "no restore.health_check configured", "finished_at": _now_iso()}
    started = time.monotonic()
    attempts = 0
    while True:
        attempts += 1
        result = run_app_step(step, bearer=bearer)
        waited = time.monotonic() - started
        if result["ok"]:
            return {**result, "skipped": False, "attempts": attempts, "waited_seconds": round(waited, 3),
                    "finished_at": _now_iso()}
        if waited + interval >= deadline_seconds:
            raise AppStepFailed(f"restore.health_check still failing after {attempts} attempt(s) in {waited:.0f} s "
                                f"(health_timeout_seconds {deadline_seconds:g}): {describe_outcome(result)}")
        sleep(interval)


def _now_iso() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).isoformat()
