# The two commands of the README: `make demo` and `make test`. Both install what they need.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PG_MAJOR := 15
PG_BIN := /usr/lib/postgresql/$(PG_MAJOR)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP := $(VENV)/.installed
# Barman's cloud WAL tools in a venv the postgres user can execute (archive_command, restore_command).
WAL_TOOLS ?= /opt/pg-dataops/wal-tools
# The browser the browser tests drive (tests/browser): Debian's build, never Playwright's own download.
CHROMIUM := /usr/lib/chromium/chromium

.PHONY: deps wal-tools demo test test-unit bench airflow-ui standby lint clean

deps: $(STAMP) $(PG_BIN)/initdb /usr/bin/age /usr/bin/zstd $(CHROMIUM) $(WAL_TOOLS)/.pins

# Point-in-time recovery: on the database host (archive_command) and the Airflow worker (restore_command).
wal-tools:
	scripts/install-wal-tools.sh $(WAL_TOOLS)

$(WAL_TOOLS)/.pins: scripts/install-wal-tools.sh
	scripts/install-wal-tools.sh $(WAL_TOOLS)

# PostgreSQL 15 from Debian's packages, only when its binaries are missing.
$(PG_BIN)/initdb:
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq postgresql-$(PG_MAJOR) postgresql-client-$(PG_MAJOR)

# zstd compresses base backups (pg_basebackup's tar stream), only when missing.
/usr/bin/zstd:
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq zstd

# age (client-side encryption of backups), only when missing.
/usr/bin/age:
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq age

# Chromium from Debian's packages (the browser tests' browser), only when missing.
$(CHROMIUM):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium

# The venv, from pinned requirements (transitive pins in constraints.txt).
$(STAMP): requirements.txt requirements-dev.txt requirements-nodeps.txt constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, got " + sys.version' 
	@$(PYTHON) -m venv --help >/dev/null 2>&1 && $(PYTHON) -c 'import ensurepip' 2>/dev/null || { \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q -r requirements-dev.txt -c constraints.txt
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt -c constraints.txt
	touch $(STAMP)

demo: deps
	$(PY) scripts/demo.py

test: deps
	$(PY) -m pytest

test-unit: deps
	$(PY) -m pytest tests/unit

bench: deps
	$(PY) scripts/bench.py

# The real Airflow UI (api-server, scheduler, dag-processor, triggerer) on the demo stack.
airflow-ui: deps
	$(PY) scripts/demo.py --ui

# A local primary and its streaming standby (pg_standby_provision's code), left running for experiments;
# it prints both connection strings and the command that stops them.
standby: deps
	$(PY) scripts/standby.py

lint: deps
	$(VENV)/bin/ruff check dags plugins tests tools scripts
	$(VENV)/bin/ruff check --select AIR3 dags plugins

clean:
	rm -rf .demo .bench .pytest_cache
