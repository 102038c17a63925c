# pg_dataops Airflow image.
#
# Extends the official image the way the Airflow docs recommend
# (https://airflow.apache.org/docs/docker-stack/build.html) instead of using
# _PIP_ADDITIONAL_REQUIREMENTS, which reinstalls packages every time a container starts.
#
# Build (docker-compose.yaml does this for you):  docker compose build
FROM apache/airflow:3.3.2-python3.11

USER root
# pg_dump / pg_restore / pg_basebackup matching the backup target (glimpse-db runs PostgreSQL 15).
# The official image is Debian bookworm and already has the PGDG apt repository configured
# (/etc/apt/sources.list.d/pgdg.list); bookworm also ships postgresql-client-15 itself, so
# this install works from either repository.
# NOTE: the base image already contains the newest `postgresql-client` from PGDG. The
# /usr/bin/pg_* wrappers (postgresql-common's pg_wrapper) pick the NEWEST installed major
# version, so call /usr/lib/postgresql/15/bin/<tool> when the exact client version matters.
#
# Point-in-time recovery (pg_pitr_restore, pg_pitr_drill) starts scratch PostgreSQL 15 servers on the
# worker: postgresql-15 brings the server binaries (/usr/lib/postgresql/15/bin/postgres, initdb,
# pg_ctl, pg_verifybackup). postgresql-common is installed first and told not to create the Debian
# "main" cluster: this image runs no server of its own. zstd compresses and decompresses base backups;
# age encrypts them. python3-venv is Debian's /usr/bin/python3 for the WAL tools' venv below.
RUN apt-get update \
  && apt-get install -y --no-install-recommends postgresql-common \
  && sed -ri 's/^#?[[:space:]]*create_main_cluster[[:space:]]*=.*$/create_main_cluster = false/' \
       /etc/postgresql-common/createcluster.conf \
  && apt-get install -y --no-install-recommends postgresql-client-15 postgresql-15 age zstd python3-venv \
  && apt-get autoremove -yqq --purge \
  && apt-get clean \
  && rm -rf /var/lib/apt/lists/*

# Barman's cloud WAL tools in /opt/pg-dataops/wal-tools (pitr.wal_tools_bin): barman-cloud-wal-restore is
# the scratch servers' restore_command, barman-cloud-check-wal-archive runs in pg_wal_archive_check. A venv
# of Debian's python3, readable and executable by every user (the worker runs as AIRFLOW_UID), separate
# from Airflow's own Python and packages.
COPY scripts/install-wal-tools.sh /usr/local/bin/install-wal-tools.sh
RUN /usr/local/bin/install-wal-tools.sh /opt/pg-dataops/wal-tools

USER airflow
# Create the local backup root as the airflow user so that the `backups` named volume
# mounted here picks up airflow ownership the first time it is populated.
RUN mkdir -p /opt/airflow/backups

COPY requirements.txt constraints.txt /
# Pinning apache-airflow alongside the requirements stops pip from silently upgrading or
# downgrading Airflow while it resolves the project's dependencies.
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /requirements.txt -c /constraints.txt
