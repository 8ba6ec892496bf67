# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Each creates .venv when missing and installs the project (fast when already installed).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.allseg-installed

.PHONY: install demo test lint bench eval fuzz docs-check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Reinstall only when the dependency list changes; the package itself is editable.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/allseg demo

test: install
	$(BIN)/ruff check src tests bench fuzz tools
	$(BIN)/python -m pytest -q -n 2

lint: install
	$(BIN)/ruff check src tests bench fuzz tools

bench: install
	$(BIN)/python bench/run.py

# Headline accuracy of the bundled model and the classical baseline (bench/eval/).
eval: install
	bash bench/evaluate.sh

# Run every allseg command of README.md and docs/ (tiny trainings; ~15 min).
docs-check: install
	$(BIN)/python tools/docs_check.py

# Longer coverage-guided fuzzing of every input surface (FUZZ_SECONDS in total).
FUZZ_SECONDS ?= 300
fuzz: install
	$(BIN)/python -m pip install -q -e '.[fuzz]'
	bash fuzz/run.sh $(FUZZ_SECONDS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache demo_out
