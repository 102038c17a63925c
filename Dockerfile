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
RUN apt-get update \
  && apt-get install -y --no-install-recommends postgresql-client-15 age \
  && apt-get autoremove -yqq --purge \
  && apt-get clean \
  && rm -rf /var/lib/apt/lists/*

USER airflow
# Create the local backup root as the airflow user so that the `backups` named volume
# mounted here picks up airflow ownership the first time it is populated.
RUN mkdir -p /opt/airflow/backups

COPY requirements.txt constraints.txt /
# Pinning apache-airflow alongside the requirements stops pip from silently upgrading or
# downgrading Airflow while it resolves the project's dependencies.
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /requirements.txt -c /constraints.txt
