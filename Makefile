# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MODELS := models/manifest.json

.PHONY: demo test models lint bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

$(MODELS): $(STAMP)
	$(BIN)/reference-server build-models

models: $(MODELS)

test: $(MODELS)
	$(BIN)/python -m pytest -q

demo: $(MODELS)
	$(BIN)/reference-server selftest --model minilm --variant fp32 --variant int8
	$(BIN)/loadtest run scenarios/steady.toml --duration 20s

lint: $(STAMP)
	$(BIN)/ruff check loadtest reference_server tests benchmarks
	$(BIN)/ruff format --check loadtest reference_server tests benchmarks

bench: $(MODELS)
	$(BIN)/python benchmarks/server_throughput.py
	$(BIN)/python benchmarks/generator.py
	$(BIN)/python benchmarks/sampler.py

clean:
	rm -rf $(VENV) models build *.egg-info
