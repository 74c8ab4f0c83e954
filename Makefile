# Hedgerow: the two commands that matter are `make demo` and `make test`.
.PHONY: bootstrap test lint demo bench bench-dns bench-hub clean help

VENV := .venv
PY := $(VENV)/bin/python

help:
	@echo "make demo       run the DNS filter on a high port with demo lists"
	@echo "make test       bootstrap, then the whole test suite (warnings are errors)"
	@echo "make lint       ruff, mypy --strict and the import rules (.importlinter)"
	@echo "make bench      quick benchmarks: wire seal/open, DNS hot path (docs/benchmarks.md)"
	@echo "make bench-dns  hedgerow-dns vs dnsmasq and unbound with 1M domains (~7 min)"
	@echo "make bench-hub  hub ingest through a real Mosquitto, SQLite and PostgreSQL"
	@echo "make bootstrap  .venv with hedgerow and test tools; Debian packages when root"

bootstrap:
	@scripts/bootstrap.sh

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

bench-dns: bootstrap
	$(PY) -m bench.dns.run

bench-hub: bootstrap
	$(PY) bench/hub_ingest.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
