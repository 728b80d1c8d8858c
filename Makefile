# CipherFed: two commands. `make demo` and `make test` set up .venv when needed, then run.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# torch is pinned here (CPU build, fast to install); pyproject.toml admits any torch 2.x.
TORCH_PIN ?= torch==2.13.0
ROUNDS ?= 20
PRIVACY ?= none

.PHONY: demo test lint typecheck check venv clean protos bench

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_PIN)"
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m cipherfed.cli demo --rounds $(ROUNDS) --out runs/demo --privacy $(PRIVACY)

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

check: lint typecheck test

protos: $(STAMP)
	$(PY) scripts/gen_protos.py

bench: $(STAMP)
	$(PY) scripts/bench_crypto.py --params 1000000 --participants 13 --json runs/bench_crypto.json

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
