# ptycho-k3 developer commands. Each target creates/uses .venv and installs what it needs.
#   make demo   simulate a small dataset, train briefly, reconstruct, write pictures
#   make test   the whole suite once per backend (tensorflow, torch, jax) + cross-backend tests
#   make bench  speed / memory / quality benchmarks per backend
#   make lint   ruff
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BACKENDS ?= tensorflow torch jax
PYTEST_ARGS ?=
STAMP := $(VENV)/.ptycho-k3-installed

export TF_CPP_MIN_LOG_LEVEL ?= 2
export TF_ENABLE_ONEDNN_OPTS ?= 0
export PYTHONUNBUFFERED = 1

.PHONY: install test test-backend test-cross demo bench lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# torch first, pinned: a plain `torch` requirement can pull a multi-GB CUDA build.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[all,dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	@set -e; start=$$(date +%s); \
	for b in $(BACKENDS); do \
	  echo "=== pytest under KERAS_BACKEND=$$b ==="; \
	  KERAS_BACKEND=$$b $(PY) -m pytest -m "not crossbackend and not slow" -p no:cacheprovider $(PYTEST_ARGS); \
	done; \
	echo "=== cross-backend agreement (one subprocess per backend) ==="; \
	$(PY) -m pytest -m crossbackend -p no:cacheprovider $(PYTEST_ARGS); \
	echo "=== whole suite: $$(( $$(date +%s) - start )) s ==="

demo: $(STAMP)
	@echo "make demo: the end-to-end demo (simulate -> train -> reconstruct -> pictures) arrives with the CLI (issue 5)."
	@echo "For now it checks that the physics core imports under each backend:"
	@for b in $(BACKENDS); do KERAS_BACKEND=$$b $(PY) -c "import keras, ptycho_k3.physics as p; print(keras.backend.backend(), 'ok:', len(p.__all__), 'physics functions')"; done

bench: $(STAMP)
	@echo "benchmarks/ arrives with issue 6"

lint: $(STAMP)
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .hypothesis
