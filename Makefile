# Whistle: `make run` starts the bot, `make test` runs the whole suite.
# Each creates the virtualenv in .venv and installs what it needs first.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= $(if $(wildcard config.toml),config.toml,config.example.toml)
PYTEST_ARGS ?=
# The PostgreSQL half of the suite runs against this server (it creates and drops
# a database per test). REQUIRE_PG=1 (set by .ci/run) makes its absence an error.
PG_TEST_URL ?= postgresql+asyncpg://postgres@127.0.0.1:5432/test
REQUIRE_PG ?=

.PHONY: run test venv venv-test lock clean catalogs browser proxy

# What running needs, pinned with hashes in requirements.lock; the test tools on top
# from requirements-test.lock. Both are made from pyproject.toml by `make lock`.
$(BIN)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

$(BIN)/.installed-test: $(BIN)/.installed requirements-test.lock
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-test.lock
	touch $@

venv: $(BIN)/.installed

venv-test: $(BIN)/.installed-test

# Re-resolve both lock files to the newest releases pyproject.toml allows (run it, run the
# tests, commit the two files): this is how the pinned versions are kept current.
lock: venv
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes \
	  --upgrade --quiet --custom-compile-command "make lock" -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --extra test --universal --python-version 3.11 \
	  --generate-hashes --upgrade --quiet --custom-compile-command "make lock" \
	  -o requirements-test.lock

run: venv
	$(BIN)/python -m bot --config $(CONFIG) run

# Browser tests drive Debian's Chromium; fonts-noto-cjk renders the Chinese pages and charts.
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -d /usr/share/fonts/opentype/noto ]; then \
	  echo "== installing chromium and fonts-noto-cjk (Debian packages) =="; \
	  $(if $(filter 0,$(shell id -u)),,sudo) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium fonts-noto-cjk >/dev/null \
	  || { $(if $(filter 0,$(shell id -u)),,sudo) apt-get update -q >/dev/null && \
	       $(if $(filter 0,$(shell id -u)),,sudo) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium fonts-noto-cjk >/dev/null; }; \
	fi

# tests/test_proxy.py runs the nginx file of docs/deploy.md in front of the bot (Debian's nginx).
proxy:
	@if [ ! -x /usr/sbin/nginx ] && ! command -v nginx >/dev/null; then \
	  echo "== installing nginx (Debian package) =="; \
	  $(if $(filter 0,$(shell id -u)),,sudo) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx >/dev/null \
	  || { $(if $(filter 0,$(shell id -u)),,sudo) apt-get update -q >/dev/null && \
	       $(if $(filter 0,$(shell id -u)),,sudo) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx >/dev/null; }; \
	fi

test: venv-test browser proxy
	@echo "== test suite on SQLite =="
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	@if $(BIN)/python tests/pg_available.py $(PG_TEST_URL); then \
	  echo "== test suite on PostgreSQL ($(PG_TEST_URL)) =="; \
	  WHISTLE_TEST_DATABASE_URL=$(PG_TEST_URL) $(BIN)/python -m pytest $(PYTEST_ARGS); \
	elif [ -n "$(REQUIRE_PG)" ]; then \
	  echo "PostgreSQL is required here (REQUIRE_PG) but not available"; exit 1; \
	else \
	  echo "NOTE: PostgreSQL not available: only the SQLite half of the suite ran."; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache var

# Re-extract translatable texts and update both catalogs (then translate zh_Hans).
catalogs: venv
	$(BIN)/python locale/sync.py
