# The bureau's two commands are `make demo` and `make test`; everything else is a step of them.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV   := .venv
PY     := $(VENV)/bin/python
PYTEST := $(VENV)/bin/pytest
STACK  := deploy/local/stack.sh
SVCS   := deploy/local/services.sh

.PHONY: help deps stack-up stack-down stack-status stack-reset services-up services-down \
        demo test test-unit test-integration test-e2e lint format bench bench-pipeline bench-sim-electrical clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

deps: ## install what is missing: Debian packages, uv, the venv, Kafka jars
	bash deploy/local/bootstrap.sh

stack-up: deps ## start Postgres, Kafka, SoftHSM token, pcscd with virtual readers
	bash $(STACK) up

stack-down: ## stop the local stack (data stays in .run/)
	bash $(SVCS) down || true
	bash $(STACK) down

stack-status: ## one line per component
	bash $(STACK) status
	bash $(SVCS) status || true

stack-reset: ## stop everything and wipe .run/ data (keeps downloaded jars)
	bash $(SVCS) down || true
	bash $(STACK) reset

services-up: stack-up ## start every bureau service and the card feeder
	bash $(SVCS) up

services-down: ## stop the bureau services
	bash $(SVCS) down

DEMO_ISSUER ?= demo-bank
DEMO_CARDS  ?= 50

# The demo stops what it started afterwards; KEEP_RUNNING=1 leaves the bureau up to explore
# (then `make stack-down`).
demo: deps ## a demo batch of cards through the whole bureau, ending in reconciliation
	@started=0; \
	if ! bash $(STACK) status --quiet; then bash $(STACK) up; started=1; fi; \
	rc=0; { source .run/env.sh \
	  && $(PY) -m services.keymgmt ceremony demo-keys --emv --issuer $(DEMO_ISSUER) \
	  && bash $(SVCS) up \
	  && $(PY) -m demo --issuer $(DEMO_ISSUER) --cards $(DEMO_CARDS); } || rc=$$?; \
	if [ "$(KEEP_RUNNING)" != 1 ]; then \
	  bash $(SVCS) down; if [ $$started = 1 ]; then bash $(STACK) down; fi; \
	else echo "bureau left running: logs in .run/logs, 'make stack-down' stops it"; fi; \
	exit $$rc

# The test run starts the components it needs and stops, after, those it started.
test: deps ## unit, integration and e2e tests on the real local stack
	@started=0; \
	if ! bash $(STACK) status --quiet; then bash $(STACK) up; started=1; fi; \
	rc=0; $(PYTEST) -q -p no:cacheprovider tests || rc=$$?; \
	if [ $$started = 1 ]; then bash $(SVCS) down || true; bash $(STACK) down; fi; \
	exit $$rc

test-unit: ## unit tests only (no stack needed)
	$(PYTEST) -q tests/unit

test-integration: stack-up ## integration tests on the real stack
	$(PYTEST) -q tests/integration

test-e2e: stack-up ## the whole bureau end to end
	$(PYTEST) -q tests/e2e

lint: deps ## ruff and mypy strict
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy services shared vcard tests bench demo

format: ## apply ruff's formatting and safe fixes
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: stack-up ## benchmarks that print their figures as ratios to a raw baseline
	$(PY) -m bench.bus

CARDS ?= 10000
bench-pipeline: stack-up ## one batch of CARDS (10000) through the whole bureau vs the devices' rate
	$(PY) -m bench.pipeline --cards $(CARDS)

SIM_CARDS ?= 40
bench-sim-electrical: stack-up ## a SIM batch (SIM_CARDS, 40) through a station on 1 and 4 readers vs raw APDUs
	flock /tmp/bureau-stack.lock $(PY) -m bench.electrical --product sim --cards $(SIM_CARDS)

clean: stack-reset ## everything the stack made, and the caches
	rm -rf .pytest_cache .mypy_cache .ruff_cache
