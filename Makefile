# repurify: the two set-up commands are `make run` and `make test`; both create the
# virtual environment from the pinned lock file first if it is missing or outdated.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.repurify-installed
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: run test install lint dvc-yaml lock bench clean-env

run: $(STAMP)  ## whole pipeline on the default profile (params.yaml: profile)
	dvc repro

test: $(STAMP)  ## unit + end-to-end tests
	@python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: treating as a failure"; rc=1; fi; \
	exit $$rc

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml examples/repurify-blur/pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "repurify needs Python 3.11, found " + sys.version.split()[0]'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --quiet --disable-pip-version-check --no-deps -e .
	$(BIN)/python -m pip install --quiet --quiet --disable-pip-version-check --no-deps -e examples/repurify-blur
	touch $(STAMP)

lint: $(STAMP)
	ruff check .
	python -m workflow.dag --check
	snakemake --lint

dvc-yaml: $(STAMP)  ## regenerate dvc.yaml from workflow/dag.py
	python -m workflow.dag

lock:  ## re-resolve requirements.lock (needs `uv`)
	uv pip compile pyproject.toml --extra dev -o requirements.lock --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 --no-emit-index-url --no-emit-find-links \
	  --custom-compile-command "make lock" $(LOCK_FLAGS)

bench: $(STAMP)  ## speed benchmarks -> benchmarks/results.json and results.md
	python -m benchmarks

clean-env:
	rm -rf $(VENV)
