"""Static checks for docker-compose.yaml and the Dockerfile it builds.

Only PyYAML and the standard library are used; Docker is NOT needed. Values are checked
as `docker compose` would see them on a fresh checkout with no `.env` file: every
`${VAR:-default}` is resolved to its default.
"""

from __future__ import annotations

import functools
import glob
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
COMPOSE_DIR = COMPOSE_FILE.parent

# Bind-mounted host paths that are NOT in the repository on purpose. They are created at
# runtime (by airflow-init or by Docker) and must be git-ignored, like a .gitignore entry.
# Every other `./...` bind mount must exist in the repository.
RUNTIME_ONLY_BIND_MOUNTS: dict[str, str] = {
    "./logs": "Airflow task/scheduler logs, written at runtime; created by airflow-init; never committed.",
    "./config": (
        "Local airflow.cfg overrides; airflow-init generates airflow.cfg here with "
        "`airflow config list`; machine-specific, never committed."
    ),
}

# service name -> Airflow command it must run (None for non-Airflow services).
REQUIRED_SERVICES: dict[str, str | None] = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
    "airflow-worker": "celery worker",
    "redis": None,
    "postgres": None,
    "glimpse-db": None,
    "minio": None,
}

# Airflow services that execute or schedule task code and therefore need the connections.
AIRFLOW_RUNTIME_SERVICES = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
)

REQUIRED_CONNECTIONS: dict[str, str] = {
    "AIRFLOW_CONN_GLIMPSE_DB": "postgres",
    "AIRFLOW_CONN_BACKUP_S3": "aws",
    "AIRFLOW_CONN_SLACK_BACKUP": "slackwebhook",
    "AIRFLOW_CONN_PAGERDUTY_BACKUP": "pagerduty_events",
}


# --------------------------------------------------------------------------- helpers

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^${}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")
_ESCAPED_DOLLAR = "\x00DOLLAR\x00"


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Resolve compose variable interpolation the way `docker compose config` does.

    With the default empty env, `${VAR:-default}` becomes `default` and `${VAR}` becomes "".
    `$$` is an escaped literal `$`. Nested defaults are resolved innermost first.
    """
    env = env or {}
    text = value.replace("$$", _ESCAPED_DOLLAR)

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3) or ""
        current = env.get(name)
        if op in (":-", ":?"):
            return current if current else (arg if op == ":-" else "")
        if op in ("-", "?"):
            return current if current is not None else (arg if op == "-" else "")
        if op == ":+":
            return arg if current else ""
        if op == "+":
            return arg if current is not None else ""
        return current or ""

    while True:
        new = _VAR.sub(repl, text)
        if new == text:
            break
        text = new
    return text.replace(_ESCAPED_DOLLAR, "$")


@functools.lru_cache(maxsize=1)
def load_compose() -> dict:
    with COMPOSE_FILE.open(encoding="utf-8") as fh:
        data = yaml.safe_load(fh)  # SafeLoader resolves anchors and `<<` merge keys
    assert isinstance(data, dict), "docker-compose.yaml must be a mapping"
    return data


def services() -> dict[str, dict]:
    return load_compose().get("services") or {}


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: interpolate(str(v)) if v is not None else "" for k, v in env.items()}


def split_image(ref: str) -> tuple[str, str | None, str | None]:
    """Split `registry:port/repo/name:tag@sha256:...` into (name, tag, digest)."""
    name, _, digest = ref.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1 :], digest or None
    return name, None, digest or None


def is_pinned(ref: str) -> bool:
    _, tag, _ = split_image(ref)
    return bool(tag) and tag.lower() != "latest"


def build_paths(build: str | dict) -> tuple[Path, Path]:
    """Return (context dir, Dockerfile path) for a compose `build:` entry."""
    if isinstance(build, str):
        context, dockerfile = interpolate(build), "Dockerfile"
    else:
        context = interpolate(str(build.get("context", ".")))
        dockerfile = interpolate(str(build.get("dockerfile", "Dockerfile")))
    context_dir = (COMPOSE_DIR / context).resolve()
    return context_dir, (context_dir / dockerfile).resolve()


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """Parse a Dockerfile into (INSTRUCTION, arguments) pairs, joining `\\` continuations."""
    instructions: list[tuple[str, str]] = []
    buffer = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        stripped = raw.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction are ignored by Docker
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        buffer += stripped
        keyword, _, args = buffer.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        buffer = ""
    if buffer:
        keyword, _, args = buffer.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    return instructions


def copy_sources(args: str) -> list[str] | None:
    """Local source paths of a COPY/ADD instruction, or None when it copies from a stage/image."""
    if args.startswith("["):
        parts = json.loads(args)
    else:
        parts = shlex.split(args)
    flags = [p for p in parts if p.startswith("--")]
    if any(f.startswith("--from") for f in flags):
        return None
    positional = [p for p in parts if not p.startswith("--")]
    sources = positional[:-1]  # the last argument is the destination
    return [
        s
        for s in sources
        if not s.startswith("<<") and not re.match(r"^[a-z][a-z0-9+.-]*://", s, re.I)
    ]


def bind_mount_sources(service: dict) -> list[str]:
    """Host paths of bind mounts (short syntax `SRC:DST[:MODE]` or long syntax type: bind)."""
    sources = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            if entry.get("type") == "bind":
                sources.append(interpolate(str(entry["source"])))
            continue
        source = interpolate(str(entry)).split(":", 1)[0]
        if source.startswith((".", "/", "~")):
            sources.append(source)
    return sources


def named_volume_sources(service: dict) -> list[str]:
    names = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            if entry.get("type") == "volume" and entry.get("source"):
                names.append(interpolate(str(entry["source"])))
            continue
        value = interpolate(str(entry))
        if ":" not in value:
            continue  # anonymous volume
        source = value.split(":", 1)[0]
        if not source.startswith((".", "/", "~")):
            names.append(source)
    return names


def normalise_relative(source: str) -> str:
    path = source.rstrip("/")
    if not path.startswith(("./", "../")) and path != ".":
        path = "./" + path
    return path


# --------------------------------------------------------------------------- tests


def test_compose_file_exists_and_parses():
    assert COMPOSE_FILE.is_file(), f"{COMPOSE_FILE} is missing"
    data = load_compose()
    assert data.get("services"), "docker-compose.yaml defines no services"


def test_required_services_exist_and_run_the_right_command():
    svcs = services()
    missing = sorted(set(REQUIRED_SERVICES) - set(svcs))
    assert not missing, f"missing services: {missing}"
    wrong = {}
    for name, command in REQUIRED_SERVICES.items():
        if command is None:
            continue
        actual = svcs[name].get("command")
        if isinstance(actual, list):
            actual = " ".join(actual)
        if actual != command:
            wrong[name] = (actual, command)
    assert not wrong, f"services with unexpected command (actual, expected): {wrong}"


def test_every_service_image_is_pinned():
    problems = []
    for name, svc in services().items():
        image = interpolate(str(svc["image"])) if svc.get("image") else None
        if svc.get("build"):
            # A built image still needs an explicit name:tag, otherwise compose tags it `latest`.
            if not image:
                problems.append(f"{name}: has build: but no image: name")
            elif not is_pinned(image):
                problems.append(f"{name}: built image {image!r} must have a non-latest tag")
        elif not image:
            problems.append(f"{name}: neither image: nor build:")
        elif not is_pinned(image):
            problems.append(f"{name}: image {image!r} is not pinned to an explicit non-latest tag")
    assert not problems, "\n".join(problems)


def test_bind_mounted_host_paths_exist_in_repo():
    missing = []
    absolute = []
    for name, svc in services().items():
        for source in bind_mount_sources(svc):
            if source.startswith(("/", "~")):
                absolute.append(f"{name}: {source}")
                continue
            rel = normalise_relative(source)
            if rel in RUNTIME_ONLY_BIND_MOUNTS:
                continue
            if not (COMPOSE_DIR / rel).exists():
                missing.append(f"{name}: {rel}")
    assert not absolute, f"bind mounts must be repo-relative, found absolute host paths: {absolute}"
    assert not missing, (
        "bind-mounted host paths missing from the repository "
        f"(add them, or allow them in RUNTIME_ONLY_BIND_MOUNTS with a reason): {sorted(set(missing))}"
    )


def test_runtime_only_allowance_is_justified_and_used():
    used = {
        normalise_relative(source)
        for svc in services().values()
        for source in bind_mount_sources(svc)
        if not source.startswith(("/", "~"))
    }
    for path, reason in RUNTIME_ONLY_BIND_MOUNTS.items():
        assert reason.strip(), f"{path}: a reason is required for a runtime-only bind mount"
        assert path in used, f"{path} is allowed as runtime-only but no service mounts it (stale entry)"


def test_named_volumes_are_declared():
    declared = set((load_compose().get("volumes") or {}).keys())
    undeclared = sorted(
        f"{name}: {vol}"
        for name, svc in services().items()
        for vol in named_volume_sources(svc)
        if vol not in declared
    )
    assert not undeclared, f"named volumes used but not declared under top-level volumes: {undeclared}"


def test_dockerfile_exists_and_copy_sources_exist():
    builds = {name: svc["build"] for name, svc in services().items() if svc.get("build")}
    if not builds:
        pytest.skip("no service uses build:")
    problems = []
    for context_dir, dockerfile in sorted({build_paths(b) for b in builds.values()}):
        if not dockerfile.is_file():
            problems.append(f"Dockerfile {dockerfile} referenced by build: does not exist")
            continue
        for keyword, args in dockerfile_instructions(dockerfile):
            if keyword not in ("COPY", "ADD"):
                continue
            for source in copy_sources(args) or []:
                if not glob.glob(str(context_dir / source)):
                    problems.append(
                        f"{dockerfile.name}: `{keyword} {args}` -> {source!r} not found in {context_dir}"
                    )
    assert not problems, "\n".join(problems)


def test_dockerfile_base_images_are_pinned():
    builds = [svc["build"] for svc in services().values() if svc.get("build")]
    if not builds:
        pytest.skip("no service uses build:")
    problems = []
    for _, dockerfile in sorted({build_paths(b) for b in builds}):
        if not dockerfile.is_file():
            continue  # reported by test_dockerfile_exists_and_copy_sources_exist
        stages: set[str] = set()
        for keyword, args in dockerfile_instructions(dockerfile):
            if keyword != "FROM":
                continue
            parts = [p for p in args.split() if not p.startswith("--")]
            ref = parts[0]
            if len(parts) >= 3 and parts[1].lower() == "as":
                stages.add(parts[2].lower())
            if ref.lower() == "scratch" or ref.lower() in stages:
                continue
            if not is_pinned(ref):
                problems.append(f"{dockerfile.name}: FROM {ref} is not pinned")
    assert not problems, "\n".join(problems)


def test_airflow_connections_present_and_valid():
    common_env = env_of(load_compose().get("x-airflow-common") or {})
    problems = []
    for conn_var in REQUIRED_CONNECTIONS:
        if conn_var not in common_env:
            problems.append(f"x-airflow-common: {conn_var} missing")
    for name in AIRFLOW_RUNTIME_SERVICES:
        env = env_of(services().get(name) or {})
        for conn_var, conn_type in REQUIRED_CONNECTIONS.items():
            if conn_var not in env:
                problems.append(f"{name}: {conn_var} missing")
                continue
            try:
                conn = json.loads(env[conn_var])
            except json.JSONDecodeError as exc:
                problems.append(f"{name}: {conn_var} is not valid JSON after interpolation: {exc}")
                continue
            if conn.get("conn_type") != conn_type:
                problems.append(f"{name}: {conn_var} conn_type {conn.get('conn_type')!r} != {conn_type!r}")
    assert not problems, "\n".join(problems)


def test_connection_details():
    env = env_of(services()["airflow-worker"])
    glimpse = json.loads(env["AIRFLOW_CONN_GLIMPSE_DB"])
    assert (glimpse["host"], int(glimpse["port"]), glimpse["login"], glimpse["schema"]) == (
        "glimpse-db",
        5432,
        "postgres",
        "glimpse",
    )
    assert glimpse.get("password"), "glimpse_db password must come from GLIMPSE_DB_PASSWORD (demo default)"

    s3 = json.loads(env["AIRFLOW_CONN_BACKUP_S3"])
    assert s3.get("login") and s3.get("password"), "backup_s3 needs MinIO access/secret keys"
    assert s3["extra"]["endpoint_url"] == "http://minio:9000"
    assert s3["extra"]["region_name"] == "us-east-1"

    for conn_var in ("AIRFLOW_CONN_SLACK_BACKUP", "AIRFLOW_CONN_PAGERDUTY_BACKUP"):
        assert json.loads(env[conn_var]).get("password"), f"{conn_var} needs a password (webhook/routing key)"

    # Secrets must be env-driven: the raw (un-interpolated) values reference variables.
    raw = load_compose()["x-airflow-common"]["environment"]
    for conn_var, variable in {
        "AIRFLOW_CONN_GLIMPSE_DB": "GLIMPSE_DB_PASSWORD",
        "AIRFLOW_CONN_SLACK_BACKUP": "SLACK_WEBHOOK_URL",
        "AIRFLOW_CONN_PAGERDUTY_BACKUP": "PAGERDUTY_ROUTING_KEY",
    }.items():
        assert "${" + variable in raw[conn_var], f"{conn_var} must read its secret from ${{{variable}}}"


def test_airflow_common_environment():
    common = load_compose().get("x-airflow-common") or {}
    env = env_of(common)
    assert env.get("AIRFLOW__CORE__EXECUTOR") == "CeleryExecutor"
    assert env.get("AIRFLOW__CORE__EXECUTION_API_SERVER_URL") == "http://airflow-apiserver:8080/execution/"
    raw_load_examples = common["environment"].get("AIRFLOW__CORE__LOAD_EXAMPLES")
    assert raw_load_examples == "false", "LOAD_EXAMPLES must be the string 'false', not a YAML boolean"
    assert env.get("PGBACKUP_CONFIG") == "/opt/airflow/include/config/pgbackup.yaml"
    assert env.get("PGBACKUP_LOCAL_ROOT") == "/opt/airflow/backups"
    pip_users = [
        name for name, svc in services().items() if "_PIP_ADDITIONAL_REQUIREMENTS" in env_of(svc)
    ]
    assert "_PIP_ADDITIONAL_REQUIREMENTS" not in env and not pip_users, (
        "_PIP_ADDITIONAL_REQUIREMENTS must not be used; build the image from requirements.txt instead "
        f"(found in: {pip_users or ['x-airflow-common']})"
    )


def test_depends_on_targets_exist_and_healthchecks_back_service_healthy():
    svcs = services()
    problems = []
    for name, svc in svcs.items():
        depends = svc.get("depends_on") or {}
        if isinstance(depends, list):
            depends = {dep: {"condition": "service_started"} for dep in depends}
        for dep, spec in depends.items():
            if dep not in svcs:
                problems.append(f"{name}: depends on unknown service {dep!r}")
                continue
            condition = (spec or {}).get("condition", "service_started")
            if condition == "service_healthy" and not svcs[dep].get("healthcheck"):
                problems.append(f"{name}: waits for {dep} to be healthy but {dep} has no healthcheck")
    assert not problems, "\n".join(problems)


def test_glimpse_db_wal_settings():
    command = services()["glimpse-db"].get("command")
    if isinstance(command, str):
        command = shlex.split(command)
    settings = dict(
        arg.split("=", 1) for prev, arg in zip(command, command[1:], strict=False) if prev == "-c" and "=" in arg
    )
    assert settings.get("wal_level") == "replica"
    assert settings.get("archive_mode") == "on"
    assert settings.get("archive_command"), "archive_command must be set when archive_mode=on"
    assert settings.get("wal_keep_size"), "use wal_keep_size"
    assert "wal_keep_segments" not in settings, "wal_keep_segments was removed in PostgreSQL 13"


# --------------------------------------------------------------------------- client-side encryption (age)

IDENTITY_CONN_VAR = "AIRFLOW_CONN_BACKUP_AGE_IDENTITY"
# Services that run restore-side tasks (verify, the restore drill) and so hold the age private key.
# No other service may: the scheduler, api-server, dag-processor and triggerer never decrypt.
RESTORE_SIDE_SERVICES = ("airflow-worker",)
# Shapes only (Bech32 alphabet); not real keys.
RECIPIENTS = ("age1" + "q" * 58, "age1" + "p" * 58)
IDENTITIES = ("AGE-SECRET-KEY-1" + "Q" * 58, "AGE-SECRET-KEY-1" + "P" * 58)


def raw_env(name: str) -> dict:
    """A service's environment as written (merge keys resolved, `${...}` not yet interpolated)."""
    svc = load_compose()["x-airflow-common"] if name == "x-airflow-common" else services()[name]
    return svc.get("environment") or {}


def test_encryption_recipients_are_public_env_driven_and_off_by_default():
    raw = raw_env("x-airflow-common")["PGBACKUP_ENCRYPTION_RECIPIENTS"]
    assert "${PGBACKUP_ENCRYPTION_RECIPIENTS" in raw, "the recipients must come from the environment"
    assert interpolate(raw) == "", "a fresh checkout has no recipients: not encrypted, and every run says so"
    both = ",".join(RECIPIENTS)
    assert interpolate(raw, {"PGBACKUP_ENCRYPTION_RECIPIENTS": both}) == both
    # Public keys: every component that loads the config sees the same setting.
    for name in AIRFLOW_RUNTIME_SERVICES:
        assert env_of(services()[name]).get("PGBACKUP_ENCRYPTION_RECIPIENTS") == "", name


def test_age_identity_is_only_on_the_restore_side_workers():
    assert IDENTITY_CONN_VAR not in raw_env("x-airflow-common"), (
        "the age private key must not be in x-airflow-common: every Airflow component would hold it")
    holders = sorted(name for name, svc in services().items() if IDENTITY_CONN_VAR in env_of(svc))
    assert holders == sorted(RESTORE_SIDE_SERVICES)
    # No private key committed, not even a demo one (a comment may show the prefix).
    assert not re.search(r"AGE-SECRET-KEY-1[02-9AC-HJ-NP-Z]{20,}", COMPOSE_FILE.read_text())


def test_age_identity_connection_reads_the_key_from_the_environment():
    for name in RESTORE_SIDE_SERVICES:
        raw = raw_env(name)[IDENTITY_CONN_VAR]
        assert "${BACKUP_AGE_IDENTITY" in raw, f"{name}: the identity must come from ${{BACKUP_AGE_IDENTITY}}"
        conn = json.loads(interpolate(raw))
        assert conn == {"conn_type": "generic", "password": ""}  # unset: verify names the empty connection
        one = json.loads(interpolate(raw, {"BACKUP_AGE_IDENTITY": IDENTITIES[0]}))
        assert one["password"] == IDENTITIES[0]
        # Two keys in one connection (e.g. during a rotation): a literal \n in .env becomes a newline.
        two = json.loads(interpolate(raw, {"BACKUP_AGE_IDENTITY": "\\n".join(IDENTITIES)}))
        assert two["password"].splitlines() == list(IDENTITIES)


def test_every_variable_is_documented_in_the_header():
    text = COMPOSE_FILE.read_text()
    header = text.split("\n---", 1)[0]
    body = text.replace("$$", "")  # `$$` is a literal dollar for the container's shell, not compose's
    used = {m[1] or m[2] for m in re.finditer(r"\$\{([A-Za-z_][A-Za-z0-9_]*)|\$([A-Za-z_][A-Za-z0-9_]*)", body)}
    assert {"PGBACKUP_ENCRYPTION_RECIPIENTS", "BACKUP_AGE_IDENTITY"} <= used
    undocumented = sorted(v for v in used if not re.search(rf"^# {re.escape(v)}\b|[ /]{re.escape(v)}\b", header,
                                                             re.M))
    assert not undocumented, f"variables used but not described in the header comment: {undocumented}"


def apt_packages(dockerfile: Path) -> list[str]:
    """Packages of every `apt-get install` in the Dockerfile's RUN instructions, in order."""
    packages: list[str] = []
    for keyword, args in dockerfile_instructions(dockerfile):
        if keyword == "RUN":
            for command in re.split(r"&&|;", args):
                words = shlex.split(command)
                if words[:2] == ["apt-get", "install"]:
                    packages += [w for w in words[2:] if not w.startswith("-")]
    return packages


def airflow_dockerfile() -> Path:
    build = load_compose()["x-airflow-common"].get("build")
    assert build, "the Airflow image is built from the Dockerfile"
    return build_paths(build)[1]


def test_the_image_has_the_age_binary():
    """Backup workers encrypt and restore-side workers decrypt with Debian's `age`: the image must install it.
    (The Airflow image; glimpse-db's Dockerfile.db is the database server's and never encrypts.)"""
    dockerfile = airflow_dockerfile()
    packages = set(apt_packages(dockerfile))
    assert "age" in packages, f"{dockerfile.name}: apt-get install age is missing (found {sorted(packages)})"


# --------------------------------------------------------------------------- WAL archiving (PITR)

MINIO_ENDPOINT = "http://minio:9000"
WAL_TOOLS = "/opt/pg-dataops/wal-tools"


def c_settings(service: dict) -> dict[str, str]:
    command = service.get("command")
    if isinstance(command, str):
        command = shlex.split(command)
    return dict(arg.split("=", 1) for prev, arg in zip(command, command[1:], strict=False) if prev == "-c")


def rendered_settings(endpoint_url: str | None) -> dict[str, str]:
    """The settings of `python -m pg_dataops.pitr.archiving --target glimpse [--endpoint-url ...]`, as values
    a `-c name=value` option takes (the conf file's quotes removed)."""
    from pg_dataops.common.config import load_config
    from pg_dataops.pitr.archiving import render_conf

    out = {}
    for line in render_conf(load_config(environ={}), "glimpse", endpoint_url=endpoint_url).splitlines():
        if line.startswith("#"):
            continue
        name, value = (part.strip() for part in line.split("=", 1))
        if value.startswith("'"):
            value = value[1: value.rindex("'")].replace("''", "'")
        else:
            value = value.split("#", 1)[0].strip()
        out[name] = value
    return out


def test_glimpse_db_archives_with_the_shipped_settings_against_minio():
    actual = c_settings(services()["glimpse-db"])
    expected = rendered_settings(MINIO_ENDPOINT)
    assert {name: actual.get(name) for name in expected} == expected
    argv = shlex.split(actual["archive_command"])
    assert argv[0] == f"{WAL_TOOLS}/bin/barman-cloud-wal-archive" and argv[-3:] == [
        "s3://glimpse-backups/database/wal", "glimpse", "%p"]
    assert argv[argv.index("--endpoint-url") + 1] == MINIO_ENDPOINT
    assert "--gzip" in argv and argv[argv.index("--encryption") + 1] == "AES256"
    # The file we ship for real hosts is the same block without the endpoint.
    assert {k: v for k, v in rendered_settings(None).items() if k != "archive_command"} == {
        k: v for k, v in expected.items() if k != "archive_command"}


def test_glimpse_db_archives_where_airflow_reads_and_with_credentials_from_the_environment():
    svc = services()["glimpse-db"]
    env = env_of(svc)
    raw = svc["environment"]
    assert "${MINIO_ROOT_USER" in raw["AWS_ACCESS_KEY_ID"] and "${MINIO_ROOT_PASSWORD" in raw["AWS_SECRET_ACCESS_KEY"]
    s3 = json.loads(env_of(services()["airflow-worker"])["AIRFLOW_CONN_BACKUP_S3"])
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], env["AWS_DEFAULT_REGION"]) == (
        s3["login"], s3["password"], s3["extra"]["region_name"])
    command = " ".join(str(a) for a in svc["command"])
    assert s3["extra"]["endpoint_url"] in command  # the same MinIO the workers restore from
    assert env["AWS_SECRET_ACCESS_KEY"] not in command and "AWS_" not in command  # never on the command line
    init = " ".join(services()["minio-init"]["entrypoint"])
    assert "mc mb --ignore-existing local/glimpse-backups" in init  # the bucket archive_command ships to
    assert svc["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    assert "wal_archive" not in (load_compose().get("volumes") or {}), "the local WAL copy volume is gone"
    assert not any("/archive" in str(v) for v in svc.get("volumes") or [])


def test_glimpse_db_image_is_postgres_15_with_the_wal_tools():
    svc = services()["glimpse-db"]
    context, dockerfile = build_paths(svc["build"])
    assert dockerfile.name == "Dockerfile.db" and context == REPO_ROOT
    assert is_pinned(svc["image"]) and svc["image"].startswith("pg-dataops-glimpse-db:15")
    instructions = dockerfile_instructions(dockerfile)
    froms = [args for keyword, args in instructions if keyword == "FROM"]
    assert len(froms) == 1 and re.fullmatch(r"postgres:15\.\d+-bookworm", froms[0]), froms
    assert "python3-venv" in apt_packages(dockerfile)
    assert ("COPY", "scripts/install-wal-tools.sh /usr/local/bin/install-wal-tools.sh") in instructions
    assert ("RUN", f"/usr/local/bin/install-wal-tools.sh {WAL_TOOLS}") in instructions
    # The server's major version is the one the worker's client and server binaries match.
    assert "postgresql-15" in apt_packages(airflow_dockerfile())


def test_the_worker_image_can_run_scratch_recovery_servers_and_the_wal_tools():
    from pg_dataops.common.config import load_config

    dockerfile = airflow_dockerfile()
    packages = apt_packages(dockerfile)
    assert {"postgresql-15", "postgresql-client-15", "zstd", "age", "python3-venv"} <= set(packages), packages
    runs = [args for keyword, args in dockerfile_instructions(dockerfile) if keyword == "RUN"]
    # No Debian "main" cluster in the image: postgresql-common is configured before postgresql-15 arrives.
    install_run = next(r for r in runs if "postgresql-15" in r)
    assert install_run.index("create_main_cluster = false") < install_run.index("postgresql-15")
    assert install_run.index("postgresql-common") < install_run.index("create_main_cluster")
    assert f"/usr/local/bin/install-wal-tools.sh {WAL_TOOLS}" in runs
    assert load_config(environ={}).pitr.wal_tools_bin == f"{WAL_TOOLS}/bin"
    # The worker runs the image built from this Dockerfile.
    worker = services()["airflow-worker"]
    assert build_paths(worker["build"])[1] == dockerfile and worker["image"] == "pg-dataops-airflow:3.3.2"


def test_the_install_script_is_what_make_and_both_images_run():
    script = REPO_ROOT / "scripts" / "install-wal-tools.sh"
    assert script.stat().st_mode & 0o111, "scripts/install-wal-tools.sh must be executable"
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "scripts/install-wal-tools.sh $(WAL_TOOLS)" in makefile and f"WAL_TOOLS ?= {WAL_TOOLS}" in makefile
    text = script.read_text()
    assert f'DEST="${{1:-{WAL_TOOLS}}}"' in text
    assert "runuser -u postgres" in text  # it proves the postgres user can run the tools


def test_minio_accepts_server_side_encryption():
    import base64

    raw = services()["minio"]["environment"]["MINIO_KMS_SECRET_KEY"]
    assert raw.startswith("${MINIO_KMS_SECRET_KEY:-"), "the key must be overridable from the environment"
    name, _, key = interpolate(raw).partition(":")
    assert re.fullmatch(r"[a-z0-9-]+", name) and len(base64.b64decode(key, validate=True)) == 32
