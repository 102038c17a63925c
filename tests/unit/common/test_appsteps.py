"""pg_full_recovery's application steps against a real local HTTP server and real commands."""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pg_dataops.common import appsteps
from pg_dataops.common.appsteps import AppStepFailed
from pg_dataops.common.config import AppStep


@pytest.fixture
def app():
    """A little application: /stop answers 204, /health fails until it was asked ``healthy_after`` times,
    /broken answers 500; every request is recorded with its method and Authorization header."""
    state = {"requests": [], "healthy_after": 3, "health_calls": 0}

    class Handler(BaseHTTPRequestHandler):
        def _answer(self):
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            state["requests"].append((self.command, self.path, self.headers.get("Authorization")))
            if self.path == "/health":
                state["health_calls"] += 1
                ok = state["health_calls"] >= state["healthy_after"]
                code, body = (200, b"ok") if ok else (503, b"starting")
            elif self.path == "/stop":
                code, body = 204, b""
            elif self.path == "/echo":  # a careless application that repeats the token in its error
                code, body = 401, f"bad token {self.headers.get('Authorization')}".encode()
            else:
                code, body = 500, b"boom: something broke"
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = _answer  # noqa: N815 - http.server API

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    server.server_close()


def http(url, method="POST", timeout=5, conn_id=None):
    return AppStep(kind="http", url=url, method=method, conn_id=conn_id, timeout_seconds=timeout)


def command(code, timeout=10):
    return AppStep(kind="command", argv=(sys.executable, "-c", code), timeout_seconds=timeout)


def test_an_http_step_sends_the_bearer_and_succeeds_on_2xx(app):
    got = appsteps.run_app_step(http(app["url"] + "/stop"), bearer="s3cret-token-123")
    assert got["ok"] is True and got["status"] == 204 and got["kind"] == "http"
    assert got["what"] == f"POST {app['url']}/stop" and got["seconds"] >= 0
    assert app["requests"] == [("POST", "/stop", "Bearer s3cret-token-123")]


def test_an_http_error_is_not_ok_and_keeps_the_answer(app):
    got = appsteps.run_app_step(http(app["url"] + "/broken", method="GET"))
    assert got["ok"] is False and got["status"] == 500 and got["output_tail"] == "boom: something broke"
    assert app["requests"] == [("GET", "/broken", None)]
    with pytest.raises(AppStepFailed, match=r"restore.app_stop failed: GET .*/broken -> HTTP 500: boom"):
        appsteps.run_required(http(app["url"] + "/broken", method="GET"), "restore.app_stop")


def test_an_unreachable_application_is_not_ok():
    got = appsteps.run_app_step(http("http://127.0.0.1:9/stop", timeout=2))
    assert got["ok"] is False and got["status"] is None and got["output_tail"].startswith("no answer:")


def test_a_command_runs_without_a_shell_and_its_exit_status_decides(tmp_path):
    marker = tmp_path / "ran; rm -rf x"
    ok = appsteps.run_app_step(command(f"open({str(marker)!r}, 'w').write('stopped'); print('done')"))
    assert ok["ok"] is True and ok["returncode"] == 0 and ok["output_tail"] == "done"
    assert marker.read_text() == "stopped"  # the file name with ';' was an argument, not shell syntax
    bad = appsteps.run_app_step(command("import sys; print('no such unit', file=sys.stderr); sys.exit(3)"))
    assert bad["ok"] is False and bad["returncode"] == 3 and "no such unit" in bad["output_tail"]


def test_a_command_past_its_time_limit_is_stopped():
    got = appsteps.run_app_step(command("import time; time.sleep(30)", timeout=1))
    assert got["ok"] is False and got["returncode"] is None and "stopped after 1 s" in got["output_tail"]
    assert got["seconds"] < 10


def test_a_missing_program_is_reported():
    got = appsteps.run_app_step(AppStep(kind="command", argv=("/nonexistent/glimpse-ctl", "stop")))
    assert got["ok"] is False and "cannot run '/nonexistent/glimpse-ctl'" in got["output_tail"]


def test_no_step_configured_is_a_noop():
    assert appsteps.run_required(None, "restore.app_stop") == {"skipped": True, "what": "no restore.app_stop configured"}
    assert appsteps.wait_healthy(None, deadline_seconds=5)["skipped"] is True


def test_health_check_is_retried_until_it_answers_ok(app):
    got = appsteps.wait_healthy(http(app["url"] + "/health", method="GET"), deadline_seconds=10, interval=0.05)
    assert got["ok"] is True and got["attempts"] == 3 and got["status"] == 200
    assert [r[1] for r in app["requests"]] == ["/health"] * 3


def test_health_check_gives_up_at_its_deadline(app):
    app["healthy_after"] = 1000
    with pytest.raises(AppStepFailed, match=r"still failing after \d+ attempt\(s\) .* HTTP 503: starting"):
        appsteps.wait_healthy(http(app["url"] + "/health", method="GET"), deadline_seconds=0.5, interval=0.1)
    assert 2 <= app["health_calls"] <= 10


def test_the_bearer_never_reaches_the_outcome(app):
    got = appsteps.run_app_step(http(app["url"] + "/echo"), bearer="s3cret-token-123")
    assert got["status"] == 401 and got["output_tail"].startswith("bad token Bearer ")
    assert "s3cret-token-123" not in got["output_tail"]
