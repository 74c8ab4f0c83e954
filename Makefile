# Hedgerow: the two commands that matter are `make demo` and `make test`.
.PHONY: bootstrap lock test lint demo bench bench-dns bench-hub bench-agent clean help

VENV := .venv
PY := $(VENV)/bin/python

help:
	@echo "make demo       run the DNS filter on a high port with demo lists"
	@echo "make test       bootstrap, then the whole test suite (warnings are errors)"
	@echo "make lint       ruff, mypy --strict and the import rules (.importlinter)"
	@echo "make bench      quick benchmarks: wire seal/open, DNS hot path (docs/benchmarks.md)"
	@echo "make bench-dns  hedgerow-dns vs dnsmasq and unbound with 1M domains, warm and cold cache (~10 min;"
	@echo "                BENCH_DNS_ARGS=--cold-only: only the cold-cache rounds, ~3 min)"
	@echo "make bench-hub  hub ingest through a real Mosquitto, SQLite and PostgreSQL"
	@echo "make bench-agent hedgerow-agent's memory and CPU, idle and under DNS load (~8 min; root)"
	@echo "make bootstrap  .venv with hedgerow and test tools; Debian packages when root"
	@echo "make lock       re-resolve requirements/lock.txt (pins + hashes) after editing pyproject.toml"
	@echo "                LOCK_ARGS=--upgrade moves every pin to the newest release;"
	@echo "                LOCK_ARGS='--upgrade-package NAME' moves one"

bootstrap:
	@scripts/bootstrap.sh

# requirements/lock.txt: every package .venv gets, pip and setuptools included, pinned with
# sha256 hashes, for Python 3.11 on Linux. pip-compile (pip-tools) runs from a throwaway venv
# against PyPI alone (local pip config, mirrors and find-links ignored), so the hashes are
# PyPI's. Without LOCK_ARGS it keeps the current pins and only adds or drops what
# pyproject.toml or requirements/venv.in changed.
LOCK := requirements/lock.txt
LOCK_PYTHON ?= python3.11
LOCK_INDEX ?= https://pypi.org/simple
PIP_TOOLS := pip-tools==7.6.2
LOCK_ARGS ?=

lock:
	@set -eu; \
	$(LOCK_PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || \
	    { echo "make lock: the lock is for Python 3.11; set LOCK_PYTHON" >&2; exit 1; }; \
	tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	export PIP_CONFIG_FILE=/dev/null; \
	unset PIP_FIND_LINKS PIP_EXTRA_INDEX_URL PIP_INDEX_URL PIP_CONSTRAINT PIP_REQUIRE_VIRTUALENV; \
	$(LOCK_PYTHON) -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/python" -m pip install -q --index-url $(LOCK_INDEX) $(PIP_TOOLS); \
	CUSTOM_COMPILE_COMMAND='make lock' "$$tmp/venv/bin/pip-compile" -q \
	    --generate-hashes --allow-unsafe --strip-extras --extra test \
	    --index-url $(LOCK_INDEX) --no-emit-index-url --no-emit-find-links $(LOCK_ARGS) \
	    -o $(LOCK) pyproject.toml requirements/venv.in; \
	echo "make lock: wrote $(LOCK); commit it with pyproject.toml, then make bootstrap"

test: bootstrap
	$(PY) -m pytest -W error $(PYTEST_ARGS)

lint: bootstrap
	$(VENV)/bin/ruff check --output-format concise common agent hub tests bench scripts
	$(VENV)/bin/mypy --strict common agent hub tests bench
	$(VENV)/bin/lint-imports --no-cache

demo: bootstrap
	$(PY) scripts/demo.py

bench: bootstrap
	$(PY) bench/wire.py
	$(PY) bench/dns_hotpath.py

BENCH_DNS_ARGS ?=
bench-dns: bootstrap
	$(PY) -m bench.dns.run $(BENCH_DNS_ARGS)

bench-hub: bootstrap
	$(PY) bench/hub_ingest.py
	$(PY) -m bench.hub.dashboard_load --envelopes 30000 --backend both

bench-agent: bootstrap
	$(PY) -m bench.agent_footprint

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
