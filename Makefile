# Hybrid Audio — every target sets up what it needs from nothing.
# `make test` and `make run` are the two commands a newcomer needs (see README.md).

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXTRAS ?= piper,test,bench

.PHONY: help setup system-deps demo test test-fast run bench lint format clean docs-screenshot

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml scripts/find-python.sh
	@python=$$(scripts/find-python.sh) || exit 1; \
	  echo "using $$python"; \
	  [ -x $(PY) ] || $$python -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	@touch $(STAMP)

setup: $(STAMP)  ## create .venv and install the project with its extras

system-deps:  ## Debian packages the tests and benchmarks use (sox: an independent WAV writer; chromium: the dashboard's browser tests)
	scripts/apt-ensure.sh sox sox
	scripts/apt-ensure.sh chromium chromium

test: setup system-deps  ## the whole suite (unit, property, integration)
	$(PY) -m pytest

test-fast: setup  ## unit tests only, in seconds (installs sox: its tests fail, not skip, without it)
	scripts/apt-ensure.sh sox sox
	$(PY) -m pytest -m "not slow"

HOST ?= 127.0.0.1
PORT ?= 8000
# Server processes (`--workers`): one per CPU, at most 2 by default. Each loads its own voice
# and dashboard; a page and its websocket may reach different workers, and every worker serves
# the dashboard alike (offline). More for a busy API, e.g. WORKERS=4; WORKERS=1 to debug.
CPUS := $(shell getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
WORKERS ?= $(if $(filter 0 1,$(CPUS)),1,2)

run: setup  ## start the API on http://$(HOST):$(PORT) (docs at /docs) with $(WORKERS) server processes; Piper, local files, SQLite
	$(VENV)/bin/hybrid-audio-server --host $(HOST) --port $(PORT) --workers $(WORKERS) --log-level info

demo: setup  ## synthesize two stems, assemble a message and print its byte-diff proof
	$(VENV)/bin/hybrid-audio-merge

bench: setup system-deps  ## run benchmarks/ and write benchmarks/results/*.json
	$(PY) benchmarks/bench_bitmerge.py
	$(PY) benchmarks/bench_generation.py
	$(PY) benchmarks/bench_assembly.py
	$(PY) benchmarks/bench_api.py
	$(PY) benchmarks/bench_dashboard.py
	$(PY) benchmarks/bench_auth_timing.py
	$(PY) benchmarks/bench_storage.py
	$(PY) benchmarks/bench_campaign.py
	$(PY) benchmarks/bench_sound.py
	$(PY) benchmarks/bench_scale.py

docs-screenshot: setup system-deps  ## refresh docs/assemble.png from the browser test's Assemble page
	UPDATE_DOCS_SCREENSHOT=1 $(PY) -m pytest -q tests/test_dashboard_browser.py -k proves_every_byte

lint: setup  ## ruff check + format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup  ## apply ruff format and safe fixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:  ## remove the venv and generated files
	rm -rf $(VENV) output logs stems .pytest_cache .ruff_cache .hypothesis

# CLI shortcuts: the `hybrid-audio` client against a running server (`make run`; the URL
# comes from HYBRID_AUDIO_API_URL, default http://127.0.0.1:8000).
.PHONY: cli-generate cli-assemble cli-cache cli-rotation cli-storage cli-campaign cli-pronounce

cli-generate: setup  ## hybrid-audio generate $(ARGS), e.g. make cli-generate ARGS="name Jose --extended"
	$(VENV)/bin/hybrid-audio generate $(ARGS)

cli-assemble: setup  ## hybrid-audio assemble $(ARGS), e.g. ARGS="template Jose Hilton --template double_anchor"
	$(VENV)/bin/hybrid-audio assemble $(ARGS)

cli-cache: setup  ## hybrid-audio cache $(ARGS), e.g. make cli-cache ARGS="list --extended"
	$(VENV)/bin/hybrid-audio cache $(ARGS)

cli-rotation: setup  ## hybrid-audio rotation $(ARGS), e.g. make cli-rotation ARGS="pairs-stream --count 5"
	$(VENV)/bin/hybrid-audio rotation $(ARGS)

cli-storage: setup  ## hybrid-audio storage $(ARGS), e.g. make cli-storage ARGS="sync push --wait"
	$(VENV)/bin/hybrid-audio storage $(ARGS)

cli-campaign: setup  ## hybrid-audio campaign $(ARGS), e.g. ARGS="run recipients.csv --template double_anchor --wait --out campaign.zip"
	$(VENV)/bin/hybrid-audio campaign $(ARGS)

cli-pronounce: setup  ## hybrid-audio pronounce $(ARGS), e.g. make cli-pronounce ARGS="set Nguyen --respelling Win"
	$(VENV)/bin/hybrid-audio pronounce $(ARGS)
