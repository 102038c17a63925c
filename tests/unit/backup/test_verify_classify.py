"""Whose fault is a failed restore: the dump's (permanent) or the restore server's (retried).

The texts are what pg_restore / psql 15 print (libpq's and the server's own wording)."""

import psycopg
import pytest
from pg_dataops.backup.verify import _check_error, _Job, classify_failure
from pg_dataops.common.errors import AuthenticationFailed, RestoreServerError, VerificationFailed

SERVER_TROUBLE = {
    "disk full in an index build": (
        'pg_restore: error: could not execute query: ERROR:  could not extend file "base/16384/16397": '
        "No space left on device\nHINT:  Check free disk space.\n"
        "Command was: CREATE INDEX users_email_idx ON public.users USING btree (email);",
        "the restore server is out of disk space"),
    "disk full during COPY": (
        'pg_restore: error: COPY failed for table "events": ERROR:  could not extend file "base/16391/16420.1": '
        "wrote only 4096 of 8192 bytes at block 131072\nHINT:  Check free disk space.\n"
        "CONTEXT:  COPY events, line 1234567",
        "the restore server is out of disk space"),
    "WAL disk full": (
        'pg_restore: error: could not execute query: PANIC:  could not write to file "pg_wal/xlogtemp.2391": '
        "No space left on device\nserver closed the connection unexpectedly",
        "the restore server is out of disk space"),
    "out of memory": (
        "pg_restore: error: could not execute query: ERROR:  out of memory\n"
        'DETAIL:  Failed on request of size 1073741824 in memory context "TupleSort main".\n'
        "Command was: CREATE INDEX events_payload_idx ON public.events USING btree (payload);",
        "the restore server is out of memory"),
    "connection lost mid-query": (
        "pg_restore: error: could not execute query: server closed the connection unexpectedly\n"
        "\tThis probably means the server terminated abnormally\n\tbefore or while processing the request.\n"
        "Command was: ALTER TABLE ONLY public.users ADD CONSTRAINT users_pkey PRIMARY KEY (id);",
        "the connection to the restore server was lost"),
    "connection lost mid-COPY": (
        "pg_restore: error: error returned by PQputCopyData: server closed the connection unexpectedly\n"
        "\tThis probably means the server terminated abnormally\n\tbefore or while processing the request.",
        "the connection to the restore server was lost"),
    "connection reset": (
        "pg_restore: error: could not send data to server: Connection reset by peer",
        "the connection to the restore server was lost"),
    "backend terminated": (
        "pg_restore: error: could not execute query: FATAL:  terminating connection due to administrator command\n"
        "server closed the connection unexpectedly\n\tThis probably means the server terminated abnormally\n"
        "\tbefore or while processing the request.\nCommand was: COPY public.events (id, payload) FROM stdin;",
        "the connection to the restore server was lost"),
    "server crash": (
        "pg_restore: error: could not execute query: WARNING:  terminating connection because of crash of another "
        "server process\nDETAIL:  The postmaster has commanded this server process to roll back",
        "the restore server crashed"),
    "server down": (
        'pg_restore: error: connection to server at "127.0.0.1", port 5999 failed: Connection refused\n'
        "\tIs the server running on that host and accepting TCP/IP connections?",
        "the restore server is not accepting connections"),
    "server shutting down": (
        'pg_restore: error: connection to server at "127.0.0.1", port 5432 failed: FATAL:  the database system '
        "is shutting down",
        "the restore server is shutting down"),
    "no connection slot": (
        'pg_restore: error: connection to server at "10.0.0.5", port 5432 failed: FATAL:  sorry, too many clients '
        "already",
        "the restore server has no free connection slot"),
    "psql (plain format) lost its connection": (
        "psql:<stdin>:4711: server closed the connection unexpectedly\n"
        "\tThis probably means the server terminated abnormally\n\tbefore or while processing the request.\n"
        "psql:<stdin>:4711: error: connection to server was lost",
        "the connection to the restore server was lost"),
}

DUMP_FAULTS = {
    "duplicate key": (
        'pg_restore: error: could not execute query: ERROR:  could not create unique index "users_email_key"\n'
        "DETAIL:  Key (email)=(out of memory@example.com) is duplicated.\n"
        "Command was: ALTER TABLE ONLY public.users ADD CONSTRAINT users_email_key UNIQUE (email);"),
    "foreign key": (
        'pg_restore: error: could not execute query: ERROR:  insert or update on table "orders" violates foreign '
        'key constraint "orders_user_id_fkey"\nDETAIL:  Key (user_id)=(7) is not present in table "users".\n'
        "Command was: ALTER TABLE ONLY public.orders ADD CONSTRAINT orders_user_id_fkey FOREIGN KEY (user_id) "
        "REFERENCES public.users(id);"),
    "missing function": (
        "pg_restore: error: could not execute query: ERROR:  function public.normalize_email(text) does not exist\n"
        "LINE 1: ...ATE INDEX users_norm_idx ON public.users USING btree (public.normaliz...\n"
        "Command was: CREATE INDEX users_norm_idx ON public.users USING btree (public.normalize_email(email));"),
    "extension missing on the restore server": (
        'pg_restore: error: could not execute query: ERROR:  could not open extension control file '
        '"/usr/share/postgresql/15/extension/postgis.control": No such file or directory\n'
        "Command was: CREATE EXTENSION IF NOT EXISTS postgis WITH SCHEMA public;"),
    "corrupt archive": "pg_restore: error: could not read from input file: end of file",
    "names and SQL that look like server trouble": (
        'pg_restore: error: could not execute query: ERROR:  relation "out of memory" already exists\n'
        "Command was: CREATE FUNCTION public.f() RETURNS text\n    LANGUAGE sql\n"
        "    AS $$ SELECT 'connection refused, no space left on device' $$;"),
}


@pytest.mark.parametrize("case", sorted(SERVER_TROUBLE))
def test_restore_server_trouble_is_transient(case):
    text, why = SERVER_TROUBLE[case]
    err = classify_failure("pg_restore failed (exit 1)", text)
    assert type(err) is RestoreServerError
    assert str(err).startswith(f"pg_restore failed (exit 1): {why}; not a fault of the backup, retrying: ")


@pytest.mark.parametrize("case", sorted(DUMP_FAULTS))
def test_dump_faults_stay_permanent(case):
    err = classify_failure("pg_restore failed (exit 1)", DUMP_FAULTS[case])
    assert type(err) is VerificationFailed
    assert str(err).startswith("pg_restore failed (exit 1): pg_restore: error: ")


def test_refused_login_is_its_own_permanent_error_and_secrets_are_redacted():
    text = ('pg_restore: error: connection to server at "db" (10.0.0.5), port 5432 failed: FATAL:  password '
            'authentication failed for user "restore" (tried s3cret-pw)')
    err = classify_failure("pg_restore failed (exit 1)", text, "s3cret-pw")
    assert type(err) is AuthenticationFailed
    assert "s3cret-pw" not in str(err) and "********" in str(err)


def test_message_keeps_the_last_lines_on_one_line():
    err = classify_failure("psql failed (exit 3)", "\n".join(f"line {i}" for i in range(20)))
    assert str(err) == "psql failed (exit 3): " + " | ".join(f"line {i}" for i in range(12, 20))


# --- a check (count or amcheck) that fails: corruption is a finding, the server's trouble is retried ---

def _job(kind="amcheck"):
    return _Job(kind, "public.users_pkey" if kind == "amcheck" else "public.users", 1)


@pytest.mark.parametrize("exc", [
    psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
    psycopg.errors.DiskFull('could not extend file "base/16384/16397": No space left on device'),
    psycopg.errors.OutOfMemory("out of memory"),
    psycopg.OperationalError("consuming input failed: server closed the connection unexpectedly"),
    psycopg.InterfaceError("the connection is closed"),
])
def test_check_failing_for_the_server_is_transient(exc):
    err = _check_error(_job(), exc, None)
    assert type(err) is RestoreServerError
    assert str(err).startswith("amcheck of index public.users_pkey: ")


def test_check_past_our_time_limit_is_permanent():
    err = _check_error(_job("count"), psycopg.errors.QueryCanceled("canceling statement due to statement timeout"),
                       None)
    assert type(err) is VerificationFailed
    assert str(err) == ("row count of table public.users was stopped by our time limit (statement_timeout_seconds / "
                        "lock_wait_timeout_seconds): canceling statement due to statement timeout")


def test_corruption_found_by_amcheck_is_a_finding():
    exc = psycopg.errors.IndexCorrupted('heap tuple (0,1) from table "users" lacks matching index tuple within '
                                        'index "users_pkey"')
    assert _check_error(_job(), exc, None) is exc
