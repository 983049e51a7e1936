# Both entry points create .venv and install what they need; nothing else is assumed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?= -n 2

.PHONY: test demo install lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[onnx,data,dev]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS) tests

demo: $(STAMP)
	$(VENV)/bin/reluswap sites --model torchvision:resnet18 --image-size 64
	$(VENV)/bin/reluswap activations

lint: $(STAMP)
	$(VENV)/bin/ruff check converters worker service reluswap tests

clean:
	rm -rf $(VENV) build *.egg-info
