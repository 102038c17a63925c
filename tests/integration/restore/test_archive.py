"""archive.py against a real custom-format archive of a real database: the table of contents, a table's
definition moved into a staging schema, its rows streamed in (all, or only those a filter keeps), and the
entries that re-create a dropped table."""

from __future__ import annotations

import subprocess

import psycopg
import pytest
from pg_dataops.restore import archive

from tests.support.pg import PG_BIN, digests_over

pytestmark = pytest.mark.integration
DB = "hb_archive"
PG_RESTORE = f"{PG_BIN}/pg_restore"


@pytest.fixture(scope="module")
def dumped(cluster, tmp_path_factory):
    cluster.dropdb(DB)
    cluster.createdb(DB)
    cluster.load_demo(DB, 300)
    cluster.psql("-c", 'CREATE SCHEMA other; CREATE TABLE public."Odd Table" (id int PRIMARY KEY, "a, b" text, '
                       '"x""y" int, note json); INSERT INTO public."Odd Table" VALUES '
                       "(1, 'tab\there', 2, '{\"k\": [1, 2]}'), (2, E'new\\nline', NULL, NULL); "
                       "CREATE TABLE other.likes (id int)", dbname=DB)
    path = str(tmp_path_factory.mktemp("archive") / "db.dump")
    subprocess.run([f"{PG_BIN}/pg_dump", "-Fc", "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres",
                    "-f", path, DB], check=True, env={"PGPASSWORD": cluster.password})
    yield path
    cluster.dropdb(DB)


@pytest.fixture
def pg(cluster, dumped):
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                         dbname=DB, autocommit=True) as conn:
        yield conn
        conn.execute("DROP SCHEMA IF EXISTS hb_stage CASCADE")


def test_toc_tables_lists_every_table_with_its_data(dumped):
    tables = {t.qualified: t for t in archive.toc_tables(dumped, PG_RESTORE)}
    assert set(tables) == {"public.users", "public.user_profiles", "public.user_preferences", "public.likes",
                           "public.matches", "public.messages", "public.user_groups", "public.Odd Table",
                           "other.likes"}
    assert tables["public.likes"].has_data and tables["public.Odd Table"].has_data


def test_table_definition_and_staging_copy_of_all_rows(pg, dumped):
    likes = archive.resolve_table("public.likes", archive.toc_tables(dumped, PG_RESTORE))
    definition = archive.table_definition(dumped, likes, PG_RESTORE)
    assert definition.startswith("CREATE TABLE public.likes (\n") and definition.endswith(");")
    archive.create_staging_schema(pg, "hb_stage")
    pg.execute(archive.staging_definition(pg, definition, likes, "hb_stage"))
    got = archive.copy_into(pg, dumped, likes, PG_RESTORE, dest_schema="hb_stage")
    assert got["columns"] == ["id", "from_user_id", "to_user_id", "is_super", "created_at", "updated_at"]
    digests = digests_over(pg)
    assert digests["hb_stage.likes"] == digests["public.likes"] and got["rows"] == got["rows_read"] > 0
    assert archive.drop_staging_schema(pg, "hb_stage") is True
    assert archive.drop_staging_schema(pg, "hb_stage") is False


def test_copy_into_with_a_keep_filter_and_odd_names(pg, dumped):
    tables = archive.toc_tables(dumped, PG_RESTORE)
    likes = archive.resolve_table("likes", [t for t in tables if t.schema == "public"])
    user = pg.execute("SELECT from_user_id::text FROM public.likes GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
                      ).fetchone()[0]
    archive.create_staging_schema(pg, "hb_stage")
    pg.execute(archive.staging_definition(pg, archive.table_definition(dumped, likes, PG_RESTORE), likes,
                                          "hb_stage"))
    keep = archive.matches_any(["id", "from_user_id", "to_user_id", "is_super", "created_at", "updated_at"],
                               ["from_user_id", "to_user_id"], user)
    got = archive.copy_into(pg, dumped, likes, PG_RESTORE, dest_schema="hb_stage", keep=keep)
    want = pg.execute("SELECT count(*) FROM public.likes WHERE %s IN (from_user_id::text, to_user_id::text)",
                      (user,)).fetchone()[0]
    assert got["rows"] == want > 0 and got["rows_read"] > want
    assert pg.execute("SELECT count(*) FROM hb_stage.likes WHERE %s NOT IN (from_user_id::text, to_user_id::text)",
                      (user,)).fetchone()[0] == 0

    odd = next(t for t in tables if t.name == "Odd Table")
    definition = archive.table_definition(dumped, odd, PG_RESTORE)
    assert definition.startswith('CREATE TABLE public."Odd Table" (')
    pg.execute(archive.staging_definition(pg, definition, odd, "hb_stage"))
    got = archive.copy_into(pg, dumped, odd, PG_RESTORE, dest_schema="hb_stage")
    assert got["columns"] == ["id", "a, b", 'x"y', "note"] and got["rows"] == 2
    digests = digests_over(pg)
    assert digests['hb_stage.Odd Table'] == digests["public.Odd Table"]


def test_table_entries_of_a_real_archive(pg, dumped):
    entries = archive.schema_entries(dumped, PG_RESTORE)
    groups = archive.table_entries(entries, archive.TocTable(0, "public", "user_groups", True), "public.user_groups")
    assert [(e.type, e.name) for e in groups["own"]] == [
        ("SEQUENCE", "user_groups_id_seq"), ("TABLE", "user_groups"), ("INDEX", "user_groups_group_name_idx"),
        ("CONSTRAINT", "user_groups user_groups_pkey"), ("CONSTRAINT", "user_groups user_groups_user_group_key"),
        ("FK CONSTRAINT", "user_groups user_groups_user_id_fkey")]
    assert groups["referencing"] == []
    users = archive.table_entries(entries, archive.TocTable(0, "public", "users", True), "public.users")
    assert len(users["referencing"]) == 9 and all("REFERENCES public.users(id)" in e.statement
                                                  for e in users["referencing"])
    listing = archive.use_list(dumped, PG_RESTORE, {e.dump_id for e in groups["own"]},
                               data_of=archive.TocTable(0, "public", "user_groups", True),
                               sequences=["public.user_groups_id_seq"])
    lines = [line.split(" ", 3)[3] for line in listing.splitlines()]
    assert len(lines) == 8
    assert "TABLE DATA public user_groups postgres" in lines and "SEQUENCE SET public user_groups_id_seq postgres" \
        in lines
