#!/usr/bin/env bash
# Installs Barman's cloud WAL tools (barman-cloud-wal-archive, -wal-restore, -check-wal-archive) in a venv
# that the `postgres` OS user can execute, for archive_command on the database host and restore_command
# on the Airflow worker's scratch instance. Built from the system's /usr/bin/python3 (never a
# pyenv/conda interpreter under a user's home, which postgres cannot read).
#
# usage: scripts/install-wal-tools.sh [DEST]        (default /opt/pg-dataops/wal-tools)
# Idempotent: an existing venv with the same pins is kept. Runs as root or with sudo; Dockerfile and
# Dockerfile.db run it too. WAL_TOOLS_PYTHON picks another system interpreter (3.8+, with venv).
#
# On a database host: copy this script there, run it, then add include/config/postgresql-pitr.conf
# (python -m pg_dataops.pitr.archiving --target NAME) to postgresql.conf and restart PostgreSQL.
set -euo pipefail
umask 022  # directories we create must be traversable by postgres, whatever the caller's umask

DEST="${1:-/opt/pg-dataops/wal-tools}"
PYTHON="${WAL_TOOLS_PYTHON:-/usr/bin/python3}"
HERE="$(cd "$(dirname "$0")/.." && pwd)"
PINS="barman==3.19.1 psycopg2-binary==2.9.13 boto3==1.44.8 botocore==1.44.8 s3transfer==0.19.3 jmespath==1.1.0 urllib3==2.8.0 python-dateutil==2.9.0.post0 six==1.17.0"
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo

if [ -x "$DEST/bin/barman-cloud-wal-archive" ] && [ "$(cat "$DEST/.pins" 2>/dev/null)" = "$PINS" ]; then
    $SUDO touch "$DEST/.pins"  # newer than this script: make's $(WAL_TOOLS)/.pins target is satisfied
    echo "WAL tools already installed in $DEST"
    exit 0
fi
if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv
fi
$SUDO rm -rf "$DEST"
$SUDO mkdir -p "$DEST"
$SUDO "$PYTHON" -m venv "$DEST"
# --no-deps: barman declares psycopg2 (a source build); psycopg2-binary is the same module, prebuilt.
# The caller's pip settings that would install elsewhere or constrain differently are dropped (the Airflow
# image sets some); the index and proxy settings are kept.
$SUDO env -u PIP_USER -u PIP_TARGET -u PIP_PREFIX -u PIP_ROOT -u PIP_CONSTRAINT -u PIP_REQUIREMENT \
    -u PIP_REQUIRE_VIRTUALENV -u PYTHONPATH -u PYTHONUSERBASE \
    "$DEST/bin/pip" install -q --no-cache-dir --no-deps $PINS
$SUDO chmod -R a+rX "$DEST"
# The point of the venv: the postgres OS user runs these (archive_command, restore_command). Prove it as
# that user when it exists (on the Airflow worker the scratch servers run as the worker's own user).
AS_POSTGRES=()
if id postgres >/dev/null 2>&1 && [ "$(id -un)" != postgres ]; then
    if [ "$(id -u)" = 0 ]; then AS_POSTGRES=(runuser -u postgres --); else AS_POSTGRES=(sudo -u postgres); fi
fi
for tool in barman-cloud-wal-archive barman-cloud-wal-restore barman-cloud-check-wal-archive; do
    if ! "${AS_POSTGRES[@]}" "$DEST/bin/$tool" --version >/dev/null; then
        echo "error: $DEST/bin/$tool does not run${AS_POSTGRES:+ as postgres} (check that every directory above" \
             "$DEST is readable and searchable by it, e.g. chmod a+rx $(dirname "$DEST"))" >&2
        exit 1
    fi
done
echo "$PINS" | $SUDO tee "$DEST/.pins" >/dev/null  # last: a venv that failed the check is redone next time
echo "WAL tools installed in $DEST ($("$DEST/bin/barman-cloud-wal-archive" --version 2>&1))"
