# Every target builds its own virtual environment first, so a fresh clone needs only `make demo`
# or `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

## demo: replay bundled Falco alerts through the real handler into emulated Security Hub (moto)
demo: $(STAMP)
	$(PY) -m handlers demo

## test: lint, then the whole test suite (handler against moto, program under Pulumi mocks)
test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -n 2

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

## bench: per-alert cost next to the decode floor; findings/s, CPU share and cost at 256 MB
bench: $(STAMP)
	$(PY) bench/handler_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
