# Tollway: `make run` serves the quickstart gateway; `make test` runs every test tier.
# Each target installs what it needs on first use (virtualenv, control-plane binaries) and says so.

# The virtualenv's interpreter: the distribution's CPython when it can make virtualenvs (Debian builds it with PGO
# and LTO and links the interpreter statically; the image's python:3.11-slim is PGO+LTO too), else python3 on PATH.
# A from-source build without --enable-optimizations (pyenv's default) ran the gateway 9% slower per request and
# up to 30% slower on object-heavy code. `make PYTHON=...` chooses another; a venv of another base is remade.
SYSTEM_PYTHON := $(shell /usr/bin/python3 -c 'import sys, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && echo /usr/bin/python3)
PYTHON ?= $(or $(SYSTEM_PYTHON),python3)
VENV := .venv
BIN := $(VENV)/bin
BASE := $(shell $(PYTHON) -c 'import sys; print(sys.base_prefix)' 2>/dev/null)
STAMP := $(VENV)/.installed-$(shell (cat pyproject.toml; echo $(BASE)) | cksum | cut -d' ' -f1)

.PHONY: install run test test-unit e2e controlplane redis clients lint format clean image e2e-kind chart-crds bench bench-quick bench-profile reliability-report bench-lb

install: $(STAMP)

$(STAMP): pyproject.toml
	@echo ">> setting up the virtualenv in $(VENV) (first run only)"
	@test -x $(BIN)/python && $(BIN)/python -c 'import sys; sys.exit(sys.base_prefix != "$(BASE)")' \
		|| { echo ">> making it from $(PYTHON) ($(BASE))"; $(PYTHON) -m venv --clear $(VENV); }
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

run: install
	@scripts/run-quickstart.sh

test: install controlplane redis clients
	@$(BIN)/pytest tests
	@$(BIN)/pytest e2e

test-unit: install redis clients
	@$(BIN)/pytest tests

controlplane:
	@e2e/controlplane/build.sh

# The reliability tier (also part of test-unit) with its figures written into docs/reliability.md.
reliability-report: install redis
	@$(BIN)/python scripts/reliability-report.py

e2e: install controlplane
	@$(BIN)/pytest e2e

lint: install
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .
	@$(BIN)/mypy dataplane/tollway_dataplane dataplane/tollway_contract dataplane/tollway_kube dataplane/tollway_mock operator/tollway_operator cli/tollway_cli

format: install
	@$(BIN)/ruff format .
	@$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis

redis:
	@scripts/ensure-redis.sh

# Real clients the tests drive (Claude Code, Codex CLI): pinned in the script, from npm, into ~/.cache/tollway/npm/.
clients:
	@scripts/ensure-clients.sh >/dev/null

IMAGE ?= tollway/tollway:dev

image:
	docker build -t $(IMAGE) .

# For users with Docker: a kind cluster, the image, the chart with an in-cluster mock LLM, smoke tests, cleanup.
e2e-kind: install
	@IMAGE=$(IMAGE) e2e/kind/run.sh

# The chart ships crds/ verbatim; tests fail when the copies drift.
chart-crds:
	cp crds/*.yaml helm/tollway/crds/

# Side-by-side benchmark (direct, nginx, Tollway, LiteLLM, Portkey); peers are installed into ~/.cache/tollway/bench.
# Then the inference-aware balancing simulation (about three more minutes).
bench: install
	@$(BIN)/python bench/run.py
	@$(BIN)/python bench/inference_lb.py

# Inference-aware balancing: round-robin, least-load and prefix-affinity over four simulated model servers.
bench-lb: install
	@$(BIN)/python bench/inference_lb.py

bench-quick: install
	@$(BIN)/python bench/run.py --quick

bench-profile: install
	@$(BIN)/python bench/run.py --profile
