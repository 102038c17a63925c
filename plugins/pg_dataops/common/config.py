"""Declarative configuration: one YAML file, top-level scalars overridable by PGBACKUP_<NAME>.

Airflow-free. DAG files call :func:`load_config` at parse time, so a bad value fails parsing with a
message that names the field (an import error in the UI) instead of failing a run at 02:00.
"""

from __future__ import annotations

import os
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parents[3] / "include" / "config" / "pgbackup.yaml"
ENV_PREFIX = "PGBACKUP_"

DUMP_FORMATS = ("custom", "directory", "plain")
SSE_MODES = ("AES256", "aws:kms")
STORAGE_CLASSES = (
    "STANDARD",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER_IR",
    "REDUCED_REDUNDANCY",
)
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# S3 bucket naming rules (the subset that matters for typos).
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message names the field."""


@dataclass(frozen=True)
class Target:
    name: str
    conn_id: str
    database: str | None = None  # None: the connection's schema (database) field
    # pg_dump --exclude-table / --exclude-table-data (schema.table names; the runbook's audit_logs case):
    # recorded in the manifest; verification and restores expect those tables absent / empty.
    exclude_tables: tuple[str, ...] = ()
    exclude_table_data: tuple[str, ...] = ()


@dataclass(frozen=True)
class Retention:
    daily_days: int = 30
    weekly_weeks: int = 12
    monthly_months: int = 12
    max_delete_fraction: float = 0.5  # refuse a run that would delete more than this share at once
    max_future_skew_minutes: int = 60  # refuse when a backup claims to be from the future


@dataclass(frozen=True)
class Encryption:
    """Client-side encryption of backup artifacts (age). No recipients: not encrypted, and said so."""

    recipients: tuple[str, ...] = ()  # age X25519 public keys (age1...): several for rotation and escrow
    identity_conn_id: str = "backup_age_identity"  # its password: the private key; read by restore-side tasks

    @property
    def enabled(self) -> bool:
        return bool(self.recipients)


@dataclass(frozen=True)
class Pitr:
    """Point-in-time recovery: WAL archived by Barman's cloud tools, base backups by pg_basebackup.

    S3 layout (both under the backup bucket and ``prefix``):
      WAL:          {prefix}/{wal_prefix}/{target}/wals/{timeline+log}/{segment}.gz   (Barman's layout)
      base backups: {prefix}/{base_prefix}/{target}/{backup_id}/base.tar.zst[.age], manifest.json
    """

    targets: tuple[str, ...] | None = None  # target names with WAL archiving; None: every target
    wal_prefix: str = "wal"
    base_prefix: str = "base"
    window_days: int = 7  # the recoverable window retention keeps (the pitr_window_days)
    archive_timeout_seconds: int = 60  # postgresql.conf archive_timeout we ship: the RPO of an idle server
    rpo_minutes: int = 60  # the runbook's RPO objective: newest archived WAL older than this pages
    wal_tools_bin: str = "/opt/pg-dataops/wal-tools/bin"  # barman-cloud-* executable by the postgres user
    wal_compression: str = "gzip"  # barman-cloud-wal-archive --gzip (stdlib; no native module needed)
    base_compression_level: int = 1  # zstd level of the base backup tar stream
    base_compression_workers: int = 2  # zstd -T
    base_backup_schedule: str = "30 3 * * *"  # daily, after pg_backup's 02:00 run
    archive_check_schedule: str = "5 * * * *"  # hourly, the runbook's check-wal-archive cron
    drill_schedule: str = "0 6 * * 0"  # weekly PITR drill, Sunday 06:00 (after the restore drill)
    scratch_root: str = "/var/tmp/pg-dataops-pitr"  # scratch data directories of recovered instances
    recovery_database: str = "glimpse_recovery"  # pg_pitr_restore's default database name (the runbook's)
    recovery_timeout_minutes: int = 120  # replay longer than this fails the run (the RTO is 4 h)

    def covers(self, target: str) -> bool:
        return self.targets is None or target in self.targets


@dataclass(frozen=True)
class AppStep:
    """An application step of pg_full_recovery (stop, start, health check): an HTTP call or a command.

    ``http``: ``method`` ``url``, success is a 2xx answer; ``conn_id`` (optional) names an Airflow connection
    whose password is sent as ``Authorization: Bearer``. ``command``: an argument list run without a shell;
    success is exit status 0. Either gives up after ``timeout_seconds``."""

    kind: str  # "http" or "command"
    url: str | None = None
    method: str = "POST"
    conn_id: str | None = None
    argv: tuple[str, ...] = ()
    timeout_seconds: int = 60

    def describe(self) -> str:
        return f"{self.method} {self.url}" if self.kind == "http" else " ".join(self.argv)


# The runbook's restore-user-data.sh map: which rows of each table belong to a user.
DEFAULT_USER_TABLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("public.users", ("id",)),
    ("public.user_profiles", ("id",)),
    ("public.user_preferences", ("id",)),
    ("public.likes", ("from_user_id", "to_user_id")),
    ("public.matches", ("user1_id", "user2_id")),
    ("public.messages", ("sender_id", "receiver_id")),
    ("public.user_groups", ("user_id",)),
)


@dataclass(frozen=True)
class Restore:
    """The restore DAGs (pg_full_recovery, pg_recovery_rehearsal, pg_table_restore, pg_user_data_restore)."""

    approval_timeout_minutes: int = 60  # the forms' default: nobody approving within this rejects
    rehearsal_schedule: str = "0 4 1 * *"  # the runbook's monthly full recovery simulation
    # Not "pg_...": PostgreSQL reserves that prefix for system schemas (CREATE SCHEMA refuses it).
    staging_schema: str = "dataops_staging"  # + "_<run>": where partial restores stage backup rows
    safety_schema: str = "dataops_safety"  # where pg_user_data_restore keeps a user's previous rows
    safety_prefix: str = "safety"  # S3: {prefix}/{safety_prefix}/{target}/...: pre-recovery safety dumps
    health_timeout_seconds: int = 120  # pg_full_recovery retries the health check for this long
    app_stop: AppStep | None = None  # None: no application step (the default)
    app_start: AppStep | None = None
    health_check: AppStep | None = None
    user_key: str = "public.users.id"  # schema.table.column whose type a user_id must have
    user_tables: tuple[tuple[str, tuple[str, ...]], ...] = DEFAULT_USER_TABLES


@dataclass(frozen=True)
class Standby:
    """A streaming standby of one target (``dr.standbys.<target>``): what pg_standby_provision builds, what
    pg_replication_check watches and what pg_failover promotes."""

    target: str
    name: str  # pg_failover's confirm must equal it (a person types the standby's name, not "yes")
    conn_id: str  # Airflow connection to the standby server; after a failover its host/port are the primary's
    slot: str  # its physical replication slot on the primary
    data_directory: str | None = None  # where pg_standby_provision builds it, on the worker that runs the task
    replication_conn_id: str | None = None  # pg_basebackup's and primary_conninfo's role; None: the target's
    dns_value: str | None = None  # the Route53 record's value after a failover; None: the connection's host
    start: AppStep | None = None  # how the standby host starts its server; None: pg_ctl as the postgres user


@dataclass(frozen=True)
class Route53Record:
    """The database's DNS name (``dr.failover.route53``): pg_failover UPSERTs it to the new primary."""

    zone_id: str
    record_name: str
    record_type: str = "CNAME"  # CNAME (a host name) or A (an address)
    ttl: int = 60
    conn_id: str = "aws_route53"


@dataclass(frozen=True)
class Failover:
    """pg_failover's configurable steps (``dr.failover``); each is skipped, and says so, when not configured."""

    fence: AppStep | None = None  # stops the old primary taking writes (e.g. a firewall rule, a STONITH call)
    app_restart: AppStep | None = None  # the runbook's systemctl restart glimpse-api
    env_file: str | None = None  # the runbook's /opt/glimpse/.env.production
    env_host_key: str = "DB_HOST"  # its line set to the new primary's host
    env_port_key: str | None = "DB_PORT"  # and this one to its port (None: leave ports alone)
    airflow_api_conn_id: str | None = None  # Airflow's REST API: the target's connection follows the new primary
    route53: Route53Record | None = None
    promote_timeout_seconds: int = 60  # pg_promote(wait => true, wait_seconds => ...)


@dataclass(frozen=True)
class Dr:
    """Disaster recovery: RDS snapshots (pg_rds_snapshot, only on RDS); standbys, replication checks and
    failover (pg_standby_provision, pg_replication_check, pg_failover)."""

    rds_instance_id: str | None = None  # the RDS DB instance identifier; None: not on RDS, the DAG does nothing
    rds_conn_id: str = "aws_rds"  # Airflow aws connection (its extra may hold region_name, endpoint_url)
    rds_snapshot_schedule: str = "0 4 * * *"  # daily, after pg_backup (02:00) and the base backup (03:30)
    rds_retention_days: int = 30  # the Retention tag of the snapshots we make (the runbook's 30days)
    rds_snapshot_prefix: str = "glimpse-manual"  # snapshot ids: {prefix}-{instance}-{YYYYmmdd-HHMMSS} (UTC)
    replication_check_schedule: str = "*/5 * * * *"
    lag_warn_seconds: int = 60  # Slack when the standby's replay is this far behind
    lag_page_seconds: int = 300  # PagerDuty (a failover now would lose this much)
    lag_page_mb: int = 1024  # PagerDuty when this much WAL is not yet replayed, whatever its age
    slot_retained_page_gb: int = 20  # PagerDuty when a replication slot holds this much WAL on the primary
    standbys: tuple[Standby, ...] = ()
    failover: Failover = field(default_factory=Failover)

    def standby(self, target: str) -> Standby:
        """The standby of ``target``, or a ConfigError saying which targets have one."""
        for s in self.standbys:
            if s.target == target:
                return s
        have = ", ".join(s.target for s in self.standbys) or "none"
        raise ConfigError(f"dr.standbys: target {target!r} has no standby configured (targets with one: {have})")


@dataclass(frozen=True)
class Config:
    timezone: str
    schedule: str
    bucket: str
    prefix: str
    storage_class: str
    sse: str
    kms_key_id: str | None
    multipart_chunk_mb: int
    stream_upload: bool
    local_root: str
    dump_format: str
    dump_compression: int
    dump_jobs: int
    pg_bin_root: str
    s3_conn_id: str
    catalog_conn_id: str
    slack_conn_id: str
    pagerduty_conn_id: str
    retries: int
    retry_delay_seconds: int
    owner: str
    verify_conn_id: str | None
    restore_jobs: int
    rto_objective_hours: float
    drill_schedule: str
    monitor_schedule: str
    report_schedule: str
    monitor_max_backup_age_hours: int
    monitor_size_deviation_pct: int
    monitor_min_free_gb: int
    lock_wait_timeout_seconds: int
    statement_timeout_seconds: int
    task_timeout_minutes: int
    dagrun_timeout_minutes: int
    retention: Retention
    targets: tuple[Target, ...]
    # schema.table names a verified restore must contain (the runbook checked public.users)
    verify_required_tables: tuple[str, ...] = ("public.users",)
    encryption: Encryption = field(default_factory=Encryption)
    pitr: Pitr = field(default_factory=Pitr)
    restore: Restore = field(default_factory=Restore)
    dr: Dr = field(default_factory=Dr)
    source: str = field(default="", compare=False)

    @property
    def target_names(self) -> list[str]:
        return [t.name for t in self.targets]

    @property
    def pitr_targets(self) -> list[Target]:
        """The targets whose WAL is archived (base backups, archive checks, PITR)."""
        return [t for t in self.targets if self.pitr.covers(t.name)]

    def pitr_target(self, name: str) -> Target:
        """A configured target whose WAL is archived, or a ConfigError naming the PITR targets."""
        target = self.target(name)
        if not self.pitr.covers(name):
            raise ConfigError(f"{name} is not a PITR target (pitr.targets: {', '.join(self.pitr.targets or ())})")
        return target

    @property
    def rto_objective_seconds(self) -> float:
        return self.rto_objective_hours * 3600.0

    def verify_conn_for(self, target: Target) -> str:
        """Where restore tests run: verify_conn_id, or the target's own server (the runbook's way)."""
        return self.verify_conn_id or target.conn_id

    def target(self, name: str) -> Target:
        for t in self.targets:
            if t.name == name:
                return t
        raise ConfigError(f"targets: no target named {name!r} (configured: {', '.join(self.target_names)})")


# name -> (type, required). Order is the order errors are reported in.
_SCALARS: dict[str, tuple[type, bool]] = {
    "timezone": (str, True),
    "schedule": (str, True),
    "bucket": (str, True),
    "prefix": (str, True),
    "storage_class": (str, True),
    "sse": (str, True),
    "kms_key_id": (str, False),
    "multipart_chunk_mb": (int, True),
    "stream_upload": (bool, True),
    "local_root": (str, True),
    "dump_format": (str, True),
    "dump_compression": (int, True),
    "dump_jobs": (int, True),
    "pg_bin_root": (str, True),
    "s3_conn_id": (str, True),
    "catalog_conn_id": (str, True),
    "slack_conn_id": (str, True),
    "pagerduty_conn_id": (str, True),
    "retries": (int, True),
    "retry_delay_seconds": (int, True),
    "owner": (str, True),
    "verify_conn_id": (str, False),
    "restore_jobs": (int, True),
    "rto_objective_hours": (int, True),
    "drill_schedule": (str, True),
    "monitor_schedule": (str, True),
    "report_schedule": (str, True),
    "monitor_max_backup_age_hours": (int, True),
    "monitor_size_deviation_pct": (int, True),
    "monitor_min_free_gb": (int, True),
    "lock_wait_timeout_seconds": (int, True),
    "statement_timeout_seconds": (int, True),
    "task_timeout_minutes": (int, True),
    "dagrun_timeout_minutes": (int, True),
}


def _coerce(name: str, value: Any, typ: type, source: str) -> Any:
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.strip().lower() in ("true", "1", "yes")
        raise ConfigError(f"{name}: expected true or false, got {value!r} ({source})")
    if typ is int:
        if isinstance(value, bool):
            raise ConfigError(f"{name}: expected an integer, got {value!r} ({source})")
        if isinstance(value, int):
            return value
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            return int(value.strip())
        raise ConfigError(f"{name}: expected an integer, got {value!r} ({source})")
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ConfigError(f"{name}: expected a string, got {value!r} ({source})")
    return str(value)


def _null_env(value: str) -> bool:
    return value.strip().lower() in ("", "null", "none")


def load_config(path: str | os.PathLike | None = None, environ: dict[str, str] | None = None) -> Config:
    """Read, override from the environment, and validate the configuration."""
    env = os.environ if environ is None else environ
    cfg_path = Path(path or env.get(ENV_PREFIX + "CONFIG") or DEFAULT_CONFIG_PATH)
    try:
        raw = yaml.safe_load(cfg_path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {cfg_path} (set {ENV_PREFIX}CONFIG)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {cfg_path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {cfg_path}: top level must be a mapping")

    known = set(_SCALARS) | {"retention", "targets", "verify_required_tables", "encryption", "pitr", "restore",
                             "dr"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown setting in {cfg_path} (known: {', '.join(sorted(known))})")

    values: dict[str, Any] = {}
    for name, (typ, required) in _SCALARS.items():
        env_name = ENV_PREFIX + name.upper()
        if env_name in env:
            source = f"environment variable {env_name}"
            value: Any = None if _null_env(env[env_name]) else env[env_name]
        else:
            source = str(cfg_path)
            value = raw.get(name)
        if value is None:
            if required:
                raise ConfigError(f"{name}: required setting is missing ({source})")
            values[name] = None
            continue
        values[name] = _coerce(name, value, typ, source)

    _validate_scalars(values)
    retention = _parse_retention(raw.get("retention") or {})
    targets = _parse_targets(raw.get("targets"))
    env_name = ENV_PREFIX + "VERIFY_REQUIRED_TABLES"
    if env_name in env:  # comma-separated in the environment; empty: none required
        required_tables = _parse_required_tables([p.strip() for p in env[env_name].split(",") if p.strip()], env_name)
    else:
        required_tables = _parse_required_tables(raw.get("verify_required_tables", ["public.users"]), str(cfg_path))
    encryption = _parse_encryption(raw.get("encryption") or {}, env, str(cfg_path))
    pitr = _parse_pitr(raw.get("pitr") or {}, env, targets)
    restore = _parse_restore(raw.get("restore") or {}, env)
    dr = _parse_dr(raw.get("dr") or {}, env)
    names = {t.name for t in targets}
    for standby in dr.standbys:
        if standby.target not in names:
            raise ConfigError(f"dr.standbys.{standby.target}: no such target (configured: {', '.join(sorted(names))})")
    return Config(**values, retention=retention, targets=targets, verify_required_tables=required_tables,
                  encryption=encryption, pitr=pitr, restore=restore, dr=dr, source=str(cfg_path))


# pitr.<name> -> (type, low, high); ints are range-checked, strings must be non-empty.
_PITR_FIELDS: dict[str, tuple[type, int | None, int | None]] = {
    "wal_prefix": (str, None, None), "base_prefix": (str, None, None), "window_days": (int, 1, 400),
    "archive_timeout_seconds": (int, 1, 3600), "rpo_minutes": (int, 1, 7 * 1440), "wal_tools_bin": (str, None, None),
    "wal_compression": (str, None, None), "base_compression_level": (int, 1, 19),
    "base_compression_workers": (int, 0, 64), "base_backup_schedule": (str, None, None),
    "archive_check_schedule": (str, None, None), "drill_schedule": (str, None, None),
    "scratch_root": (str, None, None), "recovery_database": (str, None, None),
    "recovery_timeout_minutes": (int, 1, 7 * 1440),
}
WAL_COMPRESSIONS = ("gzip", "bzip2", "xz", "none")


def _section_scalars(section: str, raw: dict, env: Mapping[str, str],
                     fields: Mapping[str, tuple[type, int | None, int | None]], *, others: set[str]) -> dict[str, Any]:
    """The scalars of a config section (``pitr``, ``restore``): unknown keys refused, each overridable by
    PGBACKUP_<SECTION>_<NAME>, ints range-checked, strings non-empty. ``others``: the section's non-scalar keys."""
    known = set(fields) | others
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{section}.{unknown[0]}: unknown setting (known: {', '.join(sorted(known))})")
    out: dict[str, Any] = {}
    for name, (typ, low, high) in fields.items():
        env_name = ENV_PREFIX + section.upper().replace(".", "_") + "_" + name.upper()
        value, source = (env[env_name], env_name) if env_name in env else (raw.get(name), "config")
        if value is None:
            continue
        value = _coerce(f"{section}.{name}", value, typ, source)
        if typ is int and not low <= value <= high:
            raise ConfigError(f"{section}.{name}: {value} is outside {low}..{high}")
        if typ is str and not value.strip():
            raise ConfigError(f"{section}.{name}: must not be empty")
        out[name] = value
    return out


def _parse_pitr(raw: Any, env: Mapping[str, str], targets: tuple[Target, ...]) -> Pitr:
    if not isinstance(raw, dict):
        raise ConfigError("pitr: must be a mapping (targets, wal_prefix, window_days, ...)")
    out = _section_scalars("pitr", raw, env, _PITR_FIELDS, others={"targets"})
    pitr = Pitr(**out)
    from croniter import croniter

    for name in ("base_backup_schedule", "archive_check_schedule", "drill_schedule"):
        if not croniter.is_valid(getattr(pitr, name)):
            raise ConfigError(f"pitr.{name}: not a valid cron expression: {getattr(pitr, name)!r}")
    for name in ("wal_prefix", "base_prefix"):
        if not re.fullmatch(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*", getattr(pitr, name)):
            raise ConfigError(f"pitr.{name}: {getattr(pitr, name)!r} must be a relative S3 path without "
                              "leading or trailing '/'")
    if pitr.wal_prefix == pitr.base_prefix:
        raise ConfigError("pitr.wal_prefix and pitr.base_prefix must differ")
    if pitr.wal_compression not in WAL_COMPRESSIONS:
        raise ConfigError(f"pitr.wal_compression: {pitr.wal_compression!r} is not one of {', '.join(WAL_COMPRESSIONS)}")
    for name in ("wal_tools_bin", "scratch_root"):
        if not os.path.isabs(getattr(pitr, name)):
            raise ConfigError(f"pitr.{name}: {getattr(pitr, name)!r} must be an absolute path")
    if not _NAME_RE.match(pitr.recovery_database):
        raise ConfigError(f"pitr.recovery_database: {pitr.recovery_database!r} must be lower-case letters, digits "
                          "and '_'")
    names = raw.get("targets")
    if names is not None:
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"pitr.targets: must be a list of target names, got {names!r}")
        configured = {t.name for t in targets}
        for n in names:
            if n not in configured:
                raise ConfigError(f"pitr.targets: no target named {n!r} (configured: {', '.join(sorted(configured))})")
        pitr = Pitr(**{**out, "targets": tuple(names)})
    return pitr


_RESTORE_FIELDS: dict[str, tuple[type, int | None, int | None]] = {
    "approval_timeout_minutes": (int, 1, 1440), "rehearsal_schedule": (str, None, None),
    "staging_schema": (str, None, None), "safety_schema": (str, None, None), "safety_prefix": (str, None, None),
    "health_timeout_seconds": (int, 1, 3600), "user_key": (str, None, None),
}
_COLUMN_PATH_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}\.[a-z_][a-z0-9_]{0,62}\.[a-z_][a-z0-9_]{0,62}$")
_IDENT_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _parse_app_step(raw: Any, where: str) -> AppStep | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or len({"http", "command"} & set(raw)) != 1:
        raise ConfigError(f"{where}: must be a mapping with exactly one of http ({{url, method}}) or command "
                          f"([argv...]), or null; got {raw!r}")
    unknown = sorted(set(raw) - {"http", "command", "timeout_seconds"})
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown setting (known: command, http, timeout_seconds)")
    timeout = _coerce(f"{where}.timeout_seconds", raw.get("timeout_seconds", 60), int, "config")
    if not 1 <= timeout <= 3600:
        raise ConfigError(f"{where}.timeout_seconds: {timeout} is outside 1..3600")
    if "command" in raw:
        argv = raw["command"]
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) and a for a in argv):
            raise ConfigError(f"{where}.command: must be a non-empty list of arguments (no shell), got {argv!r}")
        return AppStep(kind="command", argv=tuple(argv), timeout_seconds=timeout)
    http = raw["http"]
    if not isinstance(http, dict) or not isinstance(http.get("url"), str):
        raise ConfigError(f"{where}.http: must be a mapping with url (and method, conn_id), got {http!r}")
    unknown = sorted(set(http) - {"url", "method", "conn_id"})
    if unknown:
        raise ConfigError(f"{where}.http.{unknown[0]}: unknown setting (known: conn_id, method, url)")
    if not re.match(r"^https?://[^\s/]+", http["url"]):
        raise ConfigError(f"{where}.http.url: {http['url']!r} is not an http(s) URL")
    method = str(http.get("method") or "POST").upper()
    if method not in ("GET", "POST", "PUT"):
        raise ConfigError(f"{where}.http.method: {method!r} is not one of GET, POST, PUT")
    return AppStep(kind="http", url=http["url"], method=method, conn_id=http.get("conn_id") or None,
                   timeout_seconds=timeout)


def _parse_restore(raw: Any, env: Mapping[str, str]) -> Restore:
    if not isinstance(raw, dict):
        raise ConfigError("restore: must be a mapping (approval_timeout_minutes, user_tables, ...)")
    out = _section_scalars("restore", raw, env, _RESTORE_FIELDS,
                           others={"app_stop", "app_start", "health_check", "user_tables"})
    from croniter import croniter

    if "rehearsal_schedule" in out and not croniter.is_valid(out["rehearsal_schedule"]):
        raise ConfigError(f"restore.rehearsal_schedule: not a valid cron expression: {out['rehearsal_schedule']!r}")
    for name in ("staging_schema", "safety_schema"):
        if name in out and not re.fullmatch(r"[a-z_][a-z0-9_]{0,39}", out[name]):
            raise ConfigError(f"restore.{name}: {out[name]!r} must be lower-case letters, digits and '_' (at most 40)")
        if name in out and out[name].startswith("pg_"):
            raise ConfigError(f"restore.{name}: {out[name]!r} starts with pg_, which PostgreSQL reserves for system "
                              "schemas")
    if "safety_prefix" in out and not re.fullmatch(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*", out["safety_prefix"]):
        raise ConfigError(f"restore.safety_prefix: {out['safety_prefix']!r} must be a relative S3 path")
    if "user_key" in out and not _COLUMN_PATH_RE.match(out["user_key"]):
        raise ConfigError(f"restore.user_key: {out['user_key']!r} must be schema.table.column")
    for name in ("app_stop", "app_start", "health_check"):
        out[name] = _parse_app_step(raw.get(name), f"restore.{name}")
    tables = raw.get("user_tables")
    if tables is not None:
        if not isinstance(tables, dict) or not tables:
            raise ConfigError(f"restore.user_tables: must map schema.table to its user columns, got {tables!r}")
        parsed = []
        for table, columns in tables.items():
            if not isinstance(table, str) or not _TABLE_RE.match(table) or not all(
                    _IDENT_RE.match(p) for p in table.split(".")):
                raise ConfigError(f"restore.user_tables: {table!r} must be schema.table (lower case)")
            if isinstance(columns, str):
                columns = [columns]
            if not isinstance(columns, list) or not columns or not all(
                    isinstance(c, str) and _IDENT_RE.match(c) for c in columns):
                raise ConfigError(f"restore.user_tables.{table}: must be a list of column names, got {columns!r}")
            parsed.append((table, tuple(columns)))
        out["user_tables"] = tuple(parsed)
    return Restore(**out)


_DR_FIELDS: dict[str, tuple[type, int | None, int | None]] = {
    "rds_instance_id": (str, None, None), "rds_conn_id": (str, None, None), "rds_snapshot_schedule": (str, None, None),
    "rds_retention_days": (int, 1, 3650), "rds_snapshot_prefix": (str, None, None),
    "replication_check_schedule": (str, None, None), "lag_warn_seconds": (int, 1, 86400),
    "lag_page_seconds": (int, 1, 7 * 86400), "lag_page_mb": (int, 1, 10 ** 7), "slot_retained_page_gb": (int, 1, 10 ** 5),
}
_FAILOVER_FIELDS: dict[str, tuple[type, int | None, int | None]] = {
    "env_file": (str, None, None), "env_host_key": (str, None, None), "env_port_key": (str, None, None),
    "airflow_api_conn_id": (str, None, None), "promote_timeout_seconds": (int, 1, 3600),
}
_ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SLOT_RE = re.compile(r"^[a-z0-9_]{1,63}$")  # PostgreSQL's rule for replication slot names
# RDS identifiers: a letter first, then letters, digits and hyphens; no "--", no trailing hyphen.
_RDS_ID_RE = re.compile(r"^[A-Za-z](?:-?[A-Za-z0-9])*$")


def _parse_dr(raw: Any, env: Mapping[str, str]) -> Dr:
    if not isinstance(raw, dict):
        raise ConfigError("dr: must be a mapping (rds_instance_id, rds_conn_id, rds_snapshot_schedule, ...)")
    instance_env = ENV_PREFIX + "DR_RDS_INSTANCE_ID"
    if instance_env in env and _null_env(env[instance_env]):  # "" or "null" in the environment: not on RDS
        env = {k: v for k, v in env.items() if k != instance_env}
        raw = {**raw, "rds_instance_id": None}
    out = _section_scalars("dr", raw, env, _DR_FIELDS, others={"standbys", "failover"})
    from croniter import croniter

    for name in ("rds_snapshot_schedule", "replication_check_schedule"):
        if name in out and not croniter.is_valid(out[name]):
            raise ConfigError(f"dr.{name}: not a valid cron expression: {out[name]!r}")
    if out.get("lag_warn_seconds", Dr.lag_warn_seconds) > out.get("lag_page_seconds", Dr.lag_page_seconds):
        raise ConfigError("dr.lag_warn_seconds must not exceed dr.lag_page_seconds (the warning comes first)")
    out["standbys"] = _parse_standbys(raw.get("standbys"))
    out["failover"] = _parse_failover(raw.get("failover"), env)
    instance = out.get("rds_instance_id")
    if instance is not None and (len(instance) > 63 or not _RDS_ID_RE.match(instance)):
        raise ConfigError(f"dr.rds_instance_id: {instance!r} is not an RDS instance identifier (a letter first, then "
                          "letters, digits and single hyphens, not ending in one, at most 63)")
    prefix = out.get("rds_snapshot_prefix")
    if prefix is not None and (len(prefix) > 100 or not _RDS_ID_RE.match(prefix)):
        raise ConfigError(f"dr.rds_snapshot_prefix: {prefix!r} must start a valid snapshot identifier (a letter "
                          "first, then letters, digits and single hyphens, not ending in one, at most 100)")
    return Dr(**out)


def _parse_standbys(raw: Any) -> tuple[Standby, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise ConfigError(f"dr.standbys: must map a target name to its standby ({{name, conn_id, slot, ...}}), "
                          f"got {raw!r}")
    known = {"name", "conn_id", "slot", "data_directory", "replication_conn_id", "dns_value", "start"}
    out = []
    for target, entry in raw.items():
        where = f"dr.standbys.{target}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: must be a mapping (name, conn_id, slot, ...), got {entry!r}")
        unknown = sorted(set(entry) - known)
        if unknown:
            raise ConfigError(f"{where}.{unknown[0]}: unknown setting (known: {', '.join(sorted(known))})")
        for name in ("name", "conn_id", "slot"):
            if not isinstance(entry.get(name), str) or not entry[name].strip():
                raise ConfigError(f"{where}.{name}: required (a non-empty string)")
        if not _SLOT_RE.match(entry["slot"]):
            raise ConfigError(f"{where}.slot: {entry['slot']!r} is not a replication slot name (lower-case letters, "
                              "digits and '_', at most 63)")
        for name in ("data_directory", "replication_conn_id", "dns_value"):
            if entry.get(name) is not None and (not isinstance(entry[name], str) or not entry[name].strip()):
                raise ConfigError(f"{where}.{name}: must be a non-empty string or null")
        if entry.get("data_directory") and not entry["data_directory"].startswith("/"):
            raise ConfigError(f"{where}.data_directory: {entry['data_directory']!r} must be an absolute path")
        out.append(Standby(target=str(target), name=entry["name"], conn_id=entry["conn_id"], slot=entry["slot"],
                           data_directory=entry.get("data_directory"),
                           replication_conn_id=entry.get("replication_conn_id"), dns_value=entry.get("dns_value"),
                           start=_parse_app_step(entry.get("start"), f"{where}.start")))
    return tuple(out)


def _parse_failover(raw: Any, env: Mapping[str, str]) -> Failover:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"dr.failover: must be a mapping (fence, app_restart, env_file, route53, ...), got {raw!r}")
    port_env = ENV_PREFIX + "DR_FAILOVER_ENV_PORT_KEY"
    explicit_null_port = "env_port_key" in raw and raw["env_port_key"] is None
    out = _section_scalars("dr.failover", raw, env, _FAILOVER_FIELDS, others={"fence", "app_restart", "route53"})
    if explicit_null_port and port_env not in env:
        out["env_port_key"] = None
    for name in ("env_host_key", "env_port_key"):
        if out.get(name) is not None and not _ENV_KEY_RE.match(out[name]):
            raise ConfigError(f"dr.failover.{name}: {out[name]!r} is not an environment variable name")
    if out.get("env_file") and not out["env_file"].startswith("/"):
        raise ConfigError(f"dr.failover.env_file: {out['env_file']!r} must be an absolute path")
    for name in ("fence", "app_restart"):
        out[name] = _parse_app_step(raw.get(name), f"dr.failover.{name}")
    out["route53"] = _parse_route53(raw.get("route53"))
    return Failover(**out)


def _parse_route53(raw: Any) -> Route53Record | None:
    if raw is None:
        return None
    where = "dr.failover.route53"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a mapping (zone_id, record_name, record_type, ttl, conn_id), got {raw!r}")
    known = {"zone_id", "record_name", "record_type", "ttl", "conn_id"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown setting (known: {', '.join(sorted(known))})")
    for name in ("zone_id", "record_name"):
        if not isinstance(raw.get(name), str) or not raw[name].strip():
            raise ConfigError(f"{where}.{name}: required (a non-empty string)")
    record_type = str(raw.get("record_type") or "CNAME").upper()
    if record_type not in ("CNAME", "A"):
        raise ConfigError(f"{where}.record_type: {record_type!r} is not CNAME or A")
    ttl = _coerce(f"{where}.ttl", raw.get("ttl", 60), int, "config")
    if not 1 <= ttl <= 86400:
        raise ConfigError(f"{where}.ttl: {ttl} is outside 1..86400")
    return Route53Record(zone_id=raw["zone_id"], record_name=raw["record_name"].rstrip(".") + ".",
                         record_type=record_type, ttl=ttl, conn_id=str(raw.get("conn_id") or "aws_route53"))


def _parse_encryption(raw: Any, env: Mapping[str, str], source: str) -> Encryption:
    if not isinstance(raw, dict):
        raise ConfigError(f"encryption: must be a mapping of recipients, identity_conn_id ({source})")
    unknown = sorted(set(raw) - {"recipients", "identity_conn_id"})
    if unknown:
        raise ConfigError(f"encryption.{unknown[0]}: unknown setting (known: identity_conn_id, recipients)")
    env_name = ENV_PREFIX + "ENCRYPTION_RECIPIENTS"
    if env_name in env:  # comma-separated in the environment; empty: not encrypted
        recipients, where = [p.strip() for p in env[env_name].split(",") if p.strip()], env_name
    else:
        recipients, where = raw.get("recipients") or [], "encryption.recipients"
    if not isinstance(recipients, list):
        raise ConfigError(f"encryption.recipients: must be a list of age public keys (age1...), got {recipients!r}")
    from pg_dataops.common.age import check_recipients

    try:
        checked = check_recipients(recipients, where)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    identity_conn_id = env.get(ENV_PREFIX + "ENCRYPTION_IDENTITY_CONN_ID") or raw.get("identity_conn_id") \
        or Encryption.identity_conn_id
    if not isinstance(identity_conn_id, str) or not identity_conn_id.strip():
        raise ConfigError("encryption.identity_conn_id: must be a non-empty connection id")
    return Encryption(recipients=checked, identity_conn_id=identity_conn_id)


def _validate_scalars(v: dict[str, Any]) -> None:
    try:
        zoneinfo.ZoneInfo(v["timezone"])
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"timezone: unknown time zone {v['timezone']!r}") from None
    from croniter import croniter  # an Airflow dependency; validates the same cron syntax Airflow uses

    for name in ("schedule", "drill_schedule", "monitor_schedule", "report_schedule"):
        if not croniter.is_valid(v[name]):
            raise ConfigError(f"{name}: not a valid cron expression: {v[name]!r}")
    for name, low, high in (("restore_jobs", 1, 64), ("rto_objective_hours", 1, 168),
                            ("monitor_max_backup_age_hours", 1, 24 * 31), ("monitor_size_deviation_pct", 1, 1000),
                            ("monitor_min_free_gb", 0, 1_000_000), ("lock_wait_timeout_seconds", 1, 86400),
                            ("statement_timeout_seconds", 1, 7 * 86400), ("task_timeout_minutes", 1, 7 * 1440),
                            ("dagrun_timeout_minutes", 1, 7 * 1440)):
        if not low <= v[name] <= high:
            raise ConfigError(f"{name}: {v[name]} is outside {low}..{high}")
    if not _BUCKET_RE.match(v["bucket"]):
        raise ConfigError(f"bucket: {v['bucket']!r} is not a valid S3 bucket name")
    if v["prefix"].startswith("/") or v["prefix"].endswith("/") or not v["prefix"]:
        raise ConfigError(f"prefix: {v['prefix']!r} must be non-empty without leading or trailing '/'")
    if v["storage_class"] not in STORAGE_CLASSES:
        raise ConfigError(f"storage_class: {v['storage_class']!r} is not one of {', '.join(STORAGE_CLASSES)}")
    if v["sse"] not in SSE_MODES:
        raise ConfigError(f"sse: {v['sse']!r} is not one of {', '.join(SSE_MODES)}")
    if v["sse"] == "aws:kms" and not v["kms_key_id"]:
        raise ConfigError("kms_key_id: required when sse is aws:kms")
    if not 5 <= v["multipart_chunk_mb"] <= 5120:
        raise ConfigError(f"multipart_chunk_mb: {v['multipart_chunk_mb']} is outside 5..5120 (S3 part limits)")
    if not os.path.isabs(v["local_root"]):
        raise ConfigError(f"local_root: {v['local_root']!r} must be an absolute path")
    if v["dump_format"] not in DUMP_FORMATS:
        raise ConfigError(f"dump_format: {v['dump_format']!r} is not one of {', '.join(DUMP_FORMATS)}")
    if not 0 <= v["dump_compression"] <= 9:
        raise ConfigError(f"dump_compression: {v['dump_compression']} is outside 0..9 (gzip levels)")
    if not 1 <= v["dump_jobs"] <= 64:
        raise ConfigError(f"dump_jobs: {v['dump_jobs']} is outside 1..64")
    if not 0 <= v["retries"] <= 20:
        raise ConfigError(f"retries: {v['retries']} is outside 0..20")
    if not 1 <= v["retry_delay_seconds"] <= 86400:
        raise ConfigError(f"retry_delay_seconds: {v['retry_delay_seconds']} is outside 1..86400")
    for name in ("s3_conn_id", "catalog_conn_id", "slack_conn_id", "pagerduty_conn_id", "owner"):
        if not v[name].strip():
            raise ConfigError(f"{name}: must not be empty")


_TABLE_RE = re.compile(r"^[^.\s]+\.[^.\s]+$")


def _parse_required_tables(raw: Any, source: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(t, str) and _TABLE_RE.match(t) for t in raw):
        raise ConfigError(f"verify_required_tables: must be a list of schema.table names, got {raw!r} ({source})")
    return tuple(raw)


def _parse_retention(raw: Any) -> Retention:
    if not isinstance(raw, dict):
        raise ConfigError("retention: must be a mapping of daily_days, weekly_weeks, monthly_months")
    allowed = {"daily_days", "weekly_weeks", "monthly_months", "max_delete_fraction", "max_future_skew_minutes"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"retention.{unknown[0]}: unknown setting (known: {', '.join(sorted(allowed))})")
    out: dict[str, Any] = {}
    if "max_delete_fraction" in raw:
        frac = raw["max_delete_fraction"]
        if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 < frac <= 1:
            raise ConfigError(f"retention.max_delete_fraction: must be a number in (0, 1], got {frac!r}")
        out["max_delete_fraction"] = float(frac)
    for name in sorted(allowed - {"max_delete_fraction"}):
        if name in raw:
            value = _coerce(f"retention.{name}", raw[name], int, "config")
            if value < 1:
                raise ConfigError(f"retention.{name}: must be at least 1, got {value}")
            out[name] = value
    return Retention(**out)


def _parse_targets(raw: Any) -> tuple[Target, ...]:
    if not raw or not isinstance(raw, list):
        raise ConfigError("targets: at least one target database is required")
    targets = []
    for i, item in enumerate(raw):
        where = f"targets[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: must be a mapping with name and conn_id")
        unknown = sorted(set(item) - {"name", "conn_id", "database", "exclude_tables", "exclude_table_data"})
        if unknown:
            raise ConfigError(f"{where}.{unknown[0]}: unknown setting (known: conn_id, database, exclude_table_data, "
                              "exclude_tables, name)")
        name = item.get("name")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ConfigError(f"{where}.name: {name!r} must be lower-case letters, digits and '_' (it names files)")
        conn_id = item.get("conn_id")
        if not isinstance(conn_id, str) or not conn_id.strip():
            raise ConfigError(f"{where}.conn_id: required")
        database = item.get("database")
        if database is not None and (not isinstance(database, str) or not database):
            raise ConfigError(f"{where}.database: must be a non-empty string when set")
        excludes = {}
        for key in ("exclude_tables", "exclude_table_data"):
            value = item.get(key) or []
            if not isinstance(value, list) or not all(isinstance(t, str) and _TABLE_RE.match(t) for t in value):
                raise ConfigError(f"{where}.{key}: must be a list of schema.table names, got {value!r}")
            excludes[key] = tuple(value)
        both = sorted(set(excludes["exclude_tables"]) & set(excludes["exclude_table_data"]))
        if both:
            raise ConfigError(f"{where}: {both[0]} is in both exclude_tables and exclude_table_data")
        targets.append(Target(name=name, conn_id=conn_id, database=database, **excludes))
    names = [t.name for t in targets]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"targets: duplicate target name {dupes[0]!r}")
    return tuple(targets)
