"""archive.py's parsing: the form's table name, pg_dump's COPY header, near matches, the table's own entries."""

from __future__ import annotations

import pytest
from pg_dataops.restore import archive
from pg_dataops.restore.archive import ArchiveError, TocEntry, TocTable
from pg_dataops.restore.request import RequestRefused


@pytest.mark.parametrize(("value", "expected"), [
    ("likes", (None, "likes")),
    ("public.likes", ("public", "likes")),
    ("  Public.Likes ", ("public", "likes")),
    ("_t$1", (None, "_t$1")),
])
def test_parse_table_param_accepts_plain_identifiers(value, expected):
    assert archive.parse_table_param(value) == expected


@pytest.mark.parametrize("value", ["users; DROP TABLE x", '"; --', "", "a.b.c", "1abc", "public.", "lik es",
                                   '"Likes"', "x" * 64, "public.likes--"])
def test_parse_table_param_refuses_everything_else(value):
    with pytest.raises(RequestRefused, match="is not a table name"):
        archive.parse_table_param(value)


@pytest.mark.parametrize(("header", "columns"), [
    ("COPY public.likes (id, from_user_id, to_user_id) FROM stdin;", ["id", "from_user_id", "to_user_id"]),
    ('COPY public."Odd Table" (id, "a, b", "x""y", "UPPER") FROM stdin;', ["id", "a, b", 'x"y', "UPPER"]),
    ('COPY public.t ("a""", b) FROM stdin;', ['a"', "b"]),
    ('COPY public.t ("(", ")") FROM stdin;', ["(", ")"]),
    ("COPY public.t (only) FROM stdin;", ["only"]),
])
def test_split_copy_columns_unquotes_pg_dump_names(header, columns):
    assert archive.split_copy_columns(header) == columns


def test_split_copy_columns_refuses_other_lines():
    with pytest.raises(ArchiveError, match="not a COPY header"):
        archive.split_copy_columns("SELECT 1;")


NAMES = ["public.likes", "public.users", "public.user_groups", "other.notes", "public.matches"]


def test_near_matches_puts_the_same_name_in_another_schema_first():
    assert archive.near_matches("other.likes", NAMES)[0] == "public.likes"
    assert archive.near_matches("public.notes", NAMES)[0] == "other.notes"
    assert "public.users" in archive.near_matches("public.user", NAMES)
    assert archive.near_matches("public.zzzzzz", NAMES) == []


def test_resolve_table_needs_the_named_schema():
    tables = [TocTable(1, "public", "likes", True), TocTable(2, "other", "likes", True),
              TocTable(3, "public", "users", True)]
    assert archive.resolve_table("public.likes", tables).dump_id == 1
    assert archive.resolve_table("users", tables).dump_id == 3
    with pytest.raises(RequestRefused, match="in several schemas of the backup: name one of public.likes, other.likes"):
        archive.resolve_table("likes", tables)
    with pytest.raises(RequestRefused, match="'nope.users' is not in the backup's table of contents; near matches: "
                                             "public.users"):
        archive.resolve_table("nope.users", tables)


def entry(dump_id, type_, name, statement, schema="public"):
    return TocEntry(dump_id, type_, schema, name, statement)


def test_table_entries_takes_what_is_defined_on_the_table_and_lists_foreign_keys_to_it():
    entries = [
        entry(10, "TABLE", "groups", "CREATE TABLE public.groups (\n    id integer NOT NULL\n);"),
        entry(11, "SEQUENCE", "groups_id_seq", "CREATE SEQUENCE public.groups_id_seq\n    START WITH 1;"),
        entry(12, "SEQUENCE OWNED BY", "groups_id_seq",
              "ALTER SEQUENCE public.groups_id_seq OWNED BY public.groups.id;"),
        entry(13, "DEFAULT", "groups id", "ALTER TABLE ONLY public.groups ALTER COLUMN id SET DEFAULT "
                                          "nextval('public.groups_id_seq'::regclass);"),
        entry(14, "CONSTRAINT", "groups groups_pkey", "ALTER TABLE ONLY public.groups\n    ADD CONSTRAINT "
                                                      "groups_pkey PRIMARY KEY (id);"),
        entry(15, "INDEX", "groups_name_idx", "CREATE INDEX groups_name_idx ON public.groups USING btree (id);"),
        entry(16, "FK CONSTRAINT", "groups groups_owner_fkey", "ALTER TABLE ONLY public.groups\n    ADD CONSTRAINT "
              "groups_owner_fkey FOREIGN KEY (id) REFERENCES public.users(id);"),
        entry(17, "FK CONSTRAINT", "members members_group_fkey", "ALTER TABLE ONLY public.members\n    ADD "
              "CONSTRAINT members_group_fkey FOREIGN KEY (group_id) REFERENCES public.groups(id);"),
        entry(18, "COMMENT", "COLUMN groups.id", "COMMENT ON COLUMN public.groups.id IS 'x';"),
        entry(19, "ACL", "TABLE groups", "GRANT SELECT ON TABLE public.groups TO app;"),
        entry(20, "TABLE", "groups_archive", "CREATE TABLE public.groups_archive (\n    id integer\n);"),
        entry(21, "INDEX", "other_idx", "CREATE INDEX other_idx ON public.groups_archive USING btree (id);"),
        entry(22, "SEQUENCE", "unrelated_seq", "CREATE SEQUENCE public.unrelated_seq;"),
    ]
    parts = archive.table_entries(entries, TocTable(10, "public", "groups", True), "public.groups")
    assert [e.dump_id for e in parts["own"]] == [10, 11, 12, 13, 14, 15, 16, 18]
    assert [e.dump_id for e in parts["referencing"]] == [17]
