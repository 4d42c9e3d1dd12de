# The same targets CI runs. PYTHON is the venv's interpreter.
PYTHON ?= .venv/bin/python

.PHONY: check lint typecheck test gen bench

check: lint typecheck test

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

typecheck:
	$(PYTHON) -m mypy

test:
	$(PYTHON) -m pytest

gen:
	$(PYTHON) scripts/gen_protos.py
	$(PYTHON) scripts/gen_completions.py

bench:
	$(PYTHON) benchmarks/run.py
