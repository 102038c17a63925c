"""Redaction: what every error text, alert and error XCom goes through before it leaves the process."""

from __future__ import annotations

import dataclasses

import pytest
from pg_dataops.common import errors
from pg_dataops.common.errors import MASK, redact, register_secret
from pg_dataops.common.pg import PgConn, classify_connect_error


@pytest.fixture(autouse=True)
def _no_registered_secrets():
    saved = set(errors._registered)
    errors._registered.clear()
    yield
    errors._registered.clear()
    errors._registered.update(saved)


def test_explicit_and_registered_secrets_are_masked():
    register_secret("Zx9-distinctive-S3cret")
    assert redact("a Zx9-distinctive-S3cret b, c-Zx9-distinctive-S3cret-d") == f"a {MASK} b, c-{MASK}-d"
    assert redact("token tok-12345 here", "tok-12345") == f"token {MASK} here"


def test_a_secret_containing_another_goes_whole():
    register_secret("abcd")
    register_secret("abcd-efgh")
    assert redact("x abcd-efgh y abcd z") == f"x {MASK} y {MASK} z"


def test_short_values_are_not_taken_for_secrets():
    register_secret("pw")  # would mask every "pw" in ordinary words
    register_secret("")
    register_secret(None)
    assert redact("pwd of pw") == "pwd of pw"


@pytest.mark.parametrize(("text", "expected"), [
    ("host=db password=hunter22 dbname=x", f"host=db password={MASK} dbname=x"),
    ("PGPASSWORD='two words' psql", f"PGPASSWORD={MASK} psql"),
    ('password: "q;q" next', f"password: {MASK} next"),
    ("postgresql://backup:hunter22@db:5432/glimpse", f"postgresql://backup:{MASK}@db:5432/glimpse"),
    ("https://hooks.example/x and password authentication failed", "https://hooks.example/x and password "
                                                                     "authentication failed"),
])
def test_passwords_in_known_shapes_are_masked_without_a_registry(text, expected):
    assert redact(text) == expected


def test_airflow_masked_secrets_are_masked_too():
    from airflow.sdk._shared.secrets_masker import mask_secret

    mask_secret("only-airflow-knows-this")
    assert redact("error: only-airflow-knows-this") == f"error: {MASK}"


def test_objects_holding_a_password_print_without_it():
    conn = PgConn("db", 5432, "backup", "glimpse", "Zx9-distinctive-S3cret", statement_timeout=5)
    for text in (repr(conn), str(conn), f"{conn}", repr([conn]), repr({"conn": conn}),
                 repr(conn.with_db("other")), repr(dataclasses.replace(conn, port=1))):
        assert "Zx9-distinctive-S3cret" not in text
    exc = classify_connect_error(conn, 'connection failed: FATAL: password "Zx9-distinctive-S3cret" was wrong')
    assert "Zx9-distinctive-S3cret" not in str(exc) and "Zx9-distinctive-S3cret" not in repr(exc)


def test_failure_alert_facts_carry_the_redacted_exception():
    from pg_dataops.airflow.notifiers import facts_from_context

    class TI:
        dag_id, task_id, run_id, map_index, try_number, log_url = "pg_backup", "t", "r", -1, 1, None

    register_secret("Zx9-distinctive-S3cret")
    facts = facts_from_context({"ti": TI(), "exception": RuntimeError("pg said Zx9-distinctive-S3cret")})
    assert facts.error == f"RuntimeError: pg said {MASK}"
