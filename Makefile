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
# pytest-xdist workers per stage (tests/conftest.py gives each one compute thread); 0 = no xdist.
TEST_WORKERS ?= 2
STAMP := $(VENV)/.ptycho-k3-installed

export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED = 1
# Tests run TensorFlow without oneDNN's reordered kernels, for tighter cross-backend parity;
# the commands, the demo and the benchmarks keep it on (TensorFlow's default), as users run them
# (ptycho_k3/backend.py lists every framework setting).
TEST_ENV := TF_ENABLE_ONEDNN_OPTS=0

# Iterations of refinement after the PINN in the demo (each takes ~0.1 s on 1024 patterns).
DEMO_REFINE ?= 20
define DEMO_SUMMARY
import json, sys
m = json.load(open(sys.argv[1]))
print(f"{'SSIM':<10}{'amplitude':>10}{'phase':>8}")
for name, part in (("PINN", m["start"]), ("refined", m)):
    print(f"{name:<10}{part['amplitude']['ssim']:>10.3f}{part['phase']['ssim']:>8.3f}")
endef
export DEMO_SUMMARY

.PHONY: install test test-backend test-cross demo bench lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# torch first, pinned: a plain `torch` requirement can pull a multi-GB CUDA build.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[all,dev,ptychodus]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	@set -e; start=$$(date +%s); \
	for b in $(BACKENDS); do \
	  echo "=== pytest under KERAS_BACKEND=$$b ==="; \
	  $(TEST_ENV) KERAS_BACKEND=$$b $(PY) -m pytest -m "not crossbackend and not slow" -p no:cacheprovider -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS); \
	done; \
	echo "=== cross-backend agreement (one subprocess per backend) ==="; \
	$(TEST_ENV) $(PY) -m pytest -m crossbackend -p no:cacheprovider -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS); \
	echo "=== whole suite: $$(( $$(date +%s) - start )) s ==="

demo: $(STAMP)
	@set -e; start=$$(date +%s); out=demo_outputs; backend=$${DEMO_BACKEND:-torch}; \
	echo "=== 1/3 simulate a small dataset (lines object with phase, N 64, 1024 patterns) ==="; \
	$(VENV)/bin/ptycho-simulate --object lines --N 64 --n_images 1024 --nphotons 1e9 --seed 0 \
	  --output_dir $$out/data --backend $$backend; \
	echo "=== 2/3 train PtychoPINN ($$backend, 512 groups, 10 epochs) ==="; \
	$(VENV)/bin/ptycho-train --train_data_file $$out/data/train.npz --test_data_file $$out/data/test.npz \
	  --N 64 --n_groups 512 --nepochs 10 --batch_size 16 --seed 0 --backend $$backend \
	  --output_dir $$out/train; \
	echo "=== 3/3 reconstruct the test scan: PINN, then $(DEMO_REFINE) iterations of refinement ==="; \
	$(VENV)/bin/ptycho-infer --model_path $$out/train --test_data $$out/data/test.npz \
	  --output_dir $$out/inference --backend $$backend --refine_iterations $(DEMO_REFINE) \
	  --compare_flat; \
	echo ""; echo "make demo: done in $$(( $$(date +%s) - start )) s. Pictures:"; \
	for f in $$out/inference/reconstructed_amplitude.png $$out/inference/reconstructed_phase.png \
	         $$out/inference/comparison_plot.png $$out/inference/convergence.png \
	         $$out/train/loss_curve.png; do echo "  $$f"; done; \
	echo "Metrics: $$out/inference/metrics.json   Model: $$out/train/wts.h5.zip"; \
	$(PY) -c "$$DEMO_SUMMARY" $$out/inference/metrics.json

bench: $(STAMP)
	$(PY) -m benchmarks.run $(BENCH_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .hypothesis
