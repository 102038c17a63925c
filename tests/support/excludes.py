"""A database with an audit log to exclude, and a config that excludes it (exclude_tables / exclude_table_data)."""

from __future__ import annotations

from pathlib import Path

import yaml
from pg_dataops.common.config import DEFAULT_CONFIG_PATH

# public.audit_logs (one row per user), and a mixed-case table beside its lower-case namesake: exclusions
# name tables exactly, so excluding one must keep the other.
AUDIT_SQL = """
CREATE TABLE public.audit_logs (id bigserial PRIMARY KEY, user_id uuid, action text NOT NULL,
                                at timestamptz NOT NULL DEFAULT now());
INSERT INTO public.audit_logs (user_id, action) SELECT id, 'login' FROM public.users;
CREATE TABLE public."AuditArchive" (id int PRIMARY KEY, note text);
INSERT INTO public."AuditArchive" SELECT g, 'old' FROM generate_series(1, 50) g;
CREATE TABLE public.auditarchive (id int PRIMARY KEY, note text);
INSERT INTO public.auditarchive SELECT g, 'kept' FROM generate_series(1, 7) g;
"""


def demo_with_audit_logs(cluster, dbname: str, users: int = 300) -> None:
    """A fresh ``dbname``: the demo data of ``users`` users plus the tables above."""
    cluster.dropdb(dbname)
    cluster.createdb(dbname)
    cluster.load_demo(dbname, users)
    cluster.psql("-c", AUDIT_SQL, dbname=dbname)


def write_config(path: Path, **excludes) -> Path:
    """The shipped config with the glimpse target's exclusions set (what an operator would edit)."""
    raw = yaml.safe_load(Path(DEFAULT_CONFIG_PATH).read_text())
    raw["targets"] = [{**raw["targets"][0], **{k: list(v) for k, v in excludes.items()}}]
    path.write_text(yaml.safe_dump(raw))
    return path
