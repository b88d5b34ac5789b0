# pg-feed: `make run` serves, `make test` tests; `make` alone lists the targets.

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.DEFAULT_GOAL := help
.PHONY: help install install-dev run dev serve db psql test lint format bench bench-smoke clean

help:
	@echo "make run      install what is needed and serve on http://127.0.0.1:5000"
	@echo "              (embedded PostgreSQL under instance/ unless DATABASE_URL is set)"
	@echo "make dev      the same with Werkzeug's reloader and debugger"
	@echo "make serve    production: gunicorn, FEED_SERVER_MODE=threaded (default) or gevent"
	@echo "              (DATABASE_URL required; no migrations)"
	@echo "make psql     psql on the database \`make run\` uses, running or not (the embedded"
	@echo "              one is started for the session and stopped after, unless in use)"
	@echo "make db       the embedded PostgreSQL alone, in the foreground until Ctrl-C"
	@echo "make test     run the whole test suite (real PostgreSQL, real sockets)"
	@echo "make lint     ruff check and format check"
	@echo "make bench    benchmarks against a bare LISTEN, a Redis queue and the previous"
	@echo "              version; what the feed costs writers (docs/BENCHMARKS.md)"
	@echo "make bench-smoke  a two-minute run of every benchmark section that counts rows"
	@echo "make install  create $(VENV) and install requirements.txt"
	@echo "make clean    remove $(VENV), instance/ (the embedded database) and caches"

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements-dev.txt $(VENV)/.installed
	$(PIP) install -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

run: install
	$(PY) app.py

dev: install
	FEED_DEBUG=1 $(PY) app.py

serve: install
	@test -n "$$DATABASE_URL" || { echo "make serve needs DATABASE_URL (run flask db upgrade first)" >&2; exit 2; }
	$(VENV)/bin/gunicorn -c deploy/gunicorn.conf.py app:app

db: install
	$(PY) -m feed.service.embedded_postgres db

psql: install
	$(PY) -m feed.service.embedded_postgres psql

test: install-dev
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install-dev
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

$(VENV)/.installed-bench: bench/requirements.txt $(VENV)/.installed
	$(PIP) install -r bench/requirements.txt
	touch $@

bench: $(VENV)/.installed-bench
	$(PY) -m bench $(BENCH_ARGS)

bench-smoke: $(VENV)/.installed-bench
	$(PY) -m bench --smoke $(BENCH_ARGS)

clean:
	rm -rf $(VENV) instance .pytest_cache .ruff_cache .coverage htmlcov
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
