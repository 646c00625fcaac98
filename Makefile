# pgflow — top-level tasks.  `make help` lists them.
#
# Every target that needs something installs it when missing: Debian packages
# (PostgreSQL 15 server, pgTAP, pg_prove) through apt when run as root, and a
# virtualenv in .venv with the Python package (binary extra) and the dev group.

SHELL       := /bin/bash
PG_CONFIG   ?= pg_config
PYTHON      ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
CLUSTER     := $(PY) -m pgflow.testing.cluster run --reuse-env --
APT_PKGS    := postgresql-15 postgresql-client-15 postgresql-15-pgtap pgtap postgresql-15-cron pgbouncer
PGTAP_FILES  = $(shell find tests/pgtap -name '*.test.sql' | sort)
EXTVERSION   = $(shell sed -n "s/^default_version *= *'\(.*\)'/\1/p" extension/pgflow.control)
# released versions (frozen extension/sql/pgflow--X.Y.Z.sql), oldest first
RELEASED     = $(shell ls extension/sql 2>/dev/null | sed -n 's/^pgflow--\([0-9.]*\)\.sql$$/\1/p' | sort -V)
PKG_SQL      := tools/pgflow/sql

.DEFAULT_GOAL := help
.PHONY: help prereqs venv build install test check-db test-sql test-upgrade test-py test-isolation test-matrix lint demo bench chaos release clean screenshots

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 14

prereqs: ## install missing Debian packages (PostgreSQL 15, pgTAP, pg_prove, pg_cron, PgBouncer, Node.js + npm, chromium + chromedriver)
	@missing=""; \
	command -v $(PG_CONFIG) >/dev/null && [ -x "$$($(PG_CONFIG) --bindir)/initdb" ] || missing="$$missing postgresql-15 postgresql-client-15"; \
	command -v pg_prove >/dev/null || missing="$$missing pgtap"; \
	command -v $(PG_CONFIG) >/dev/null && [ -f "$$($(PG_CONFIG) --sharedir)/extension/pgtap.control" ] || missing="$$missing postgresql-15-pgtap"; \
	command -v $(PG_CONFIG) >/dev/null && [ -f "$$($(PG_CONFIG) --sharedir)/extension/pg_cron.control" ] || missing="$$missing postgresql-15-cron"; \
	[ -x /usr/sbin/pgbouncer ] || command -v pgbouncer >/dev/null || missing="$$missing pgbouncer"; \
	command -v node >/dev/null && command -v npm >/dev/null || { missing="$$missing nodejs npm"; node_pkgs="nodejs npm"; }; \
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || { missing="$$missing chromium chromium-driver"; browser_pkgs="chromium chromium-driver"; }; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "missing packages:$$missing — install them with: sudo apt-get install$$missing" >&2; exit 1; fi; \
	  echo "installing$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PKGS) $$node_pkgs $$browser_pkgs >/dev/null; \
	fi

venv: $(VENV)/.installed ## create .venv with the package (editable, prebuilt psycopg) and the dev group

# --group needs pip >= 25.1 (PEP 735 dependency groups): upgrade it first
$(VENV)/.installed: pyproject.toml setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[binary]' --group dev
	@touch $@

build: ## build the extension install script from extension/src (and copy the scripts into the package)
	@$(MAKE) --no-print-directory -C extension PG_CONFIG=$(PG_CONFIG)
	@$(MAKE) --no-print-directory package-sql

# The Python package ships the versioned scripts for `pgflow install` / `pgflow
# upgrade` (plain path): the control file, extension/sql/* and the built script.
package-sql:
	@mkdir -p $(PKG_SQL)
	@cp -p extension/pgflow.control $(wildcard extension/sql/pgflow--*.sql) extension/build/pgflow--$(EXTVERSION).sql $(PKG_SQL)/
	@for f in $(PKG_SQL)/pgflow--*.sql; do \
	  n=$${f##*/}; [ -f extension/sql/$$n ] || [ $$n = pgflow--$(EXTVERSION).sql ] || rm -f $$f; done

install: prereqs ## build and install the extension into PostgreSQL (PG_CONFIG=... picks which)
	@$(MAKE) --no-print-directory -C extension PG_CONFIG=$(PG_CONFIG) install >/dev/null
	@$(MAKE) --no-print-directory package-sql
	@echo "installed pgflow into $$($(PG_CONFIG) --sharedir)/extension"

test: prereqs venv install lint ## everything: lint, pgTAP and pytest on a throwaway cluster
	@$(CLUSTER) $(MAKE) --no-print-directory check-db

check-db: test-sql test-upgrade test-py test-isolation # (inside a cluster: PGHOST etc. set)

test-sql: ## pgTAP suites (needs PGHOST etc.; `make test` provides a cluster)
	@PGOPTIONS='-c client_min_messages=warning' psql -qX -v ON_ERROR_STOP=1 -c 'DROP DATABASE IF EXISTS pgflow_tap' -c 'CREATE DATABASE pgflow_tap' >/dev/null
	@psql -qX -v ON_ERROR_STOP=1 -d pgflow_tap -c 'CREATE EXTENSION pgtap' -c 'CREATE EXTENSION pgflow' >/dev/null
	@pg_prove --dbname pgflow_tap --failures $(PGTAP_FILES)

test-upgrade: ## pgTAP suites on a database upgraded from the oldest released version (needs PGHOST etc.)
	@oldest='$(firstword $(RELEASED))'; \
	if [ -z "$$oldest" ]; then echo "test-upgrade: no released version in extension/sql yet"; exit 0; fi; \
	PGOPTIONS='-c client_min_messages=warning' psql -qX -v ON_ERROR_STOP=1 -c 'DROP DATABASE IF EXISTS pgflow_tap_upgraded' -c 'CREATE DATABASE pgflow_tap_upgraded' >/dev/null && \
	psql -qX -v ON_ERROR_STOP=1 -d pgflow_tap_upgraded -c 'CREATE EXTENSION pgtap' \
	  -c "CREATE EXTENSION pgflow VERSION '$$oldest'" -c 'ALTER EXTENSION pgflow UPDATE' >/dev/null && \
	now=$$(psql -qXAt -d pgflow_tap_upgraded -c "SELECT extversion FROM pg_extension WHERE extname = 'pgflow'") && \
	if [ "$$now" != "$(EXTVERSION)" ]; then echo "test-upgrade: ALTER EXTENSION pgflow UPDATE from $$oldest ended at $$now, not $(EXTVERSION)" >&2; exit 1; fi && \
	echo "pgTAP on a database upgraded from $$oldest to $(EXTVERSION):" && \
	pg_prove --dbname pgflow_tap_upgraded --failures $(PGTAP_FILES)

test-isolation: ## isolation specs of concurrent protocol calls (needs PGHOST etc.; `make test` provides a cluster)
	@PG_CONFIG=$(PG_CONFIG) extension/test/run-isolation.sh

test-py: venv ## pytest suites (starts its own cluster when PGHOST is unset)
	@PGFLOW_REQUIRE_DB=1 $(PY) -m pytest -q tests/py

test-matrix: prereqs venv build ## pgTAP suite + non-superuser install on PostgreSQL 14-18 (MATRIX_ARGS=--majors 16,18)
	@command -v npm >/dev/null || { \
	  if [ "$$(id -u)" != 0 ]; then echo "npm is missing (it fetches the servers): sudo apt-get install npm" >&2; exit 1; fi; \
	  echo "installing npm"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null; }
	@$(PY) tools/scripts/pg-matrix $(MATRIX_ARGS)

lint: venv ## ruff (lint + format check) and mypy --strict
	@$(PY) -m ruff check tools tests/py examples bench chaos
	@$(PY) -m ruff format --check tools tests/py examples bench chaos
	@$(PY) -m mypy

golden: venv ## regenerate golden SQL files and the --help blocks of docs/reference/cli.md
	@PGFLOW_UPDATE_GOLDEN=1 $(PY) -m pytest -q tests/py/golden tests/py/cli/test_cli_reference.py

screenshots: prereqs venv install ## refresh docs/img/*.png: the dashboard's pages in headless chromium
	@PGFLOW_REQUIRE_DB=1 PGFLOW_REQUIRE_BROWSER=1 PGFLOW_SCREENSHOTS=docs/img $(CLUSTER) $(PY) -m pytest -q tests/py/ui/test_browser.py

demo: prereqs venv install ## run an example flow end to end on a throwaway cluster (UI=1: then serve pgflow ui on it until Ctrl-C)
	@PGFLOW_DEMO_UI=$(if $(filter 1,$(UI)),1,) $(CLUSTER) $(PY) examples/demo.py

bench: prereqs venv install ## benchmark on a throwaway durable cluster (BENCH_ARGS=--quick)
	@$(PY) -m bench $(BENCH_ARGS)

chaos: prereqs venv install ## kill workers / restart PostgreSQL under load, check invariants (CHAOS_ARGS=--short)
	@$(PY) -m chaos $(CHAOS_ARGS)

release: prereqs venv ## freeze the current version into extension/sql and start the next (NEXT=x.y.z; see CONTRIBUTING.md)
	@PG_CONFIG=$(PG_CONFIG) $(PYTHON) tools/scripts/release $(if $(NEXT),--next $(NEXT))
	@$(MAKE) --no-print-directory build
	@$(MAKE) --no-print-directory golden >/dev/null  # golden files name the tools' version
	@echo "regenerated the golden files (they name the version)"

clean: ## remove build products and the virtualenv
	@$(MAKE) --no-print-directory -C extension clean >/dev/null
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache $(PKG_SQL) build dist tools/*.egg-info
