# Two commands do everything: `make demo` (the whole lifecycle on the embedded default) and
# `make test`. Everything else here is what those two are made of.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.8
export MLOPS_HOME ?= $(CURDIR)/.mlops
export PYTHONPATH := $(CURDIR)
export PATH := $(CURDIR)/$(BIN):$(PATH)
export DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true
export GX_ANALYTICS_ENABLED := false

.PHONY: install browser lock demo up serve test lint bench clean

# The stamp is newer than requirements.txt once the venv matches it, so a second run is a no-op.
# Bytecode is compiled at install (pip does this, uv does not by default): where
# PYTHONDONTWRITEBYTECODE is set, every task would otherwise recompile each module it imports.
$(VENV)/.installed: requirements.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(BIN)/uv || $(BIN)/pip install -q uv==$(UV_VERSION)
	$(BIN)/uv pip sync --compile-bytecode --python $(BIN)/python requirements.txt
	@touch $@

# `mlops`, the command line (include/mlops/cli.py), on the venv's PATH.
$(BIN)/mlops: Makefile $(VENV)/.installed
	@printf '#!/bin/sh\nPYTHONPATH="$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH}" exec "$(CURDIR)/$(BIN)/python" -m include.mlops.cli "$$@"\n' > $@
	@chmod +x $@

install: $(VENV)/.installed $(BIN)/mlops

# The browser test drives Debian's chromium: `playwright install` would download a browser (and
# fails offline). Installed from Debian's registry when missing (as root, or with sudo).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	} || { echo "chromium is missing and could not be installed: apt-get install -y chromium" >&2; exit 1; }

lock:
	@test -x $(BIN)/uv || (test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); $(BIN)/pip install -q uv==$(UV_VERSION))
	$(BIN)/uv pip compile --python-version 3.11 requirements.in -o requirements.txt

demo: install
	$(BIN)/python -m include.mlops.local.demo

up: install
	$(BIN)/python -m include.mlops.local.stack up

serve: install
	$(BIN)/python -m include.mlops.serving

test: install browser
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(MLOPS_HOME)
