"""AirflowApi sends a request again while it gets no answer (a busy or restarting api-server: the failover
steps have no retries), and names the cause, never the password, when it never does. A real HTTP server on a
free port that drops the first connections without answering."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pg_dataops.common.errors import BackupError
from pg_dataops.dr.repoint import AirflowApi

PASSWORD = "s3cret-api-password"


class DroppingServer:
    """Drops the first ``drop`` requests (closes the connection, no answer), then answers like Airflow's API."""

    def __init__(self, drop: int):
        self.drop, self.seen = drop, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _answer(self) -> None:
                outer.seen.append((self.command, self.path))
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                if len(outer.seen) <= outer.drop:
                    self.close_connection = True
                    return
                if self.path == "/auth/token":
                    body = {"access_token": "tok-123"}
                else:
                    body = {"connection_id": "glimpse_db", "conn_type": "postgres", "host": "10.0.0.5", "port": 5432}
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = _answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(request):
    srv = DroppingServer(request.param)
    yield srv
    srv.close()


@pytest.mark.parametrize("server", [2], indirect=True)
def test_requests_without_an_answer_are_sent_again(server):
    api = AirflowApi(server.url, "failover", PASSWORD, timeout=5, attempts=3, pause=0.01)
    assert api.get_connection("glimpse_db")["host"] == "10.0.0.5"
    # the token request was dropped twice and answered the third time; the GET went through at once
    assert server.seen == [("POST", "/auth/token")] * 3 + [("GET", "/api/v2/connections/glimpse_db")]


@pytest.mark.parametrize("server", [100], indirect=True)
def test_no_answer_at_all_names_the_call_and_the_tries_not_the_password(server):
    api = AirflowApi(server.url, "failover", PASSWORD, timeout=5, attempts=2, pause=0.01)
    with pytest.raises(BackupError) as err:
        api.get_connection("glimpse_db")
    message = str(err.value)
    assert message.startswith(f"Airflow API at {server.url}: POST /auth/token got no answer in 2 tries (5 s each): ")
    assert PASSWORD not in message
    assert server.seen == [("POST", "/auth/token")] * 2
