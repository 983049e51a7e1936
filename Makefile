# Both entry points create .venv and install what they need; nothing else is assumed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?= -n 2

.PHONY: test demo install lint clean deploy-check bench-api bench-gpu

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[onnx,data,tracking,dev]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS) tests

# The main job end to end through HTTP: pretrain (cached), serve, POST /finetune, follow, download
# model.onnx, run it in onnxruntime, print the metrics, stop (reluswap/commands/demo.py).
demo: $(STAMP)
	$(VENV)/bin/reluswap demo

# Dockerfile (hadolint) and docker-compose.yml (docker-compose v1) without a Docker engine.
deploy-check:
	.ci/check-deploy

# A ~5 s load run against the API of a freshly started embedded deployment (see bench/README.md).
bench-api: $(STAMP)
	$(PY) bench/api_load.py --start-embedded --seconds 5

# On a CUDA machine: the fused ConvReLU tests at full shapes, then the benchmarks behind the speed
# targets (results in bench/results/; each JSON has a "targets" entry). Not part of CI: it has no GPU.
bench-gpu: $(STAMP)
	$(PY) -m pytest -q tests/test_convrelu_fused.py
	$(PY) bench/convrelu_conv.py --device cuda --dtype bfloat16
	$(PY) bench/activation_throughput.py --device cuda --compile --sizes 16MB,1GB
	$(PY) bench/finetune_throughput.py --device cuda

lint: $(STAMP)
	$(VENV)/bin/ruff check converters worker service reluswap tests

clean:
	rm -rf $(VENV) build *.egg-info
