# Every target builds its own virtual environment first, so a fresh clone needs only `make demo`
# or `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The policy pack's own environment (pulumi-policy pins protobuf 5.x; policy/README.md).
POLICY_VENV := policy/venv
POLICY_STAMP := $(POLICY_VENV)/.installed

.PHONY: demo test lint bench loadtest clean

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

$(POLICY_STAMP): policy/requirements.txt
	$(PYTHON) -m venv $(POLICY_VENV)
	$(POLICY_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(POLICY_VENV)/bin/python -m pip install --quiet -r policy/requirements.txt
	touch $(POLICY_STAMP)

## demo: replay bundled Falco alerts through the real handler into emulated Security Hub (moto)
demo: $(STAMP)
	$(PY) -m handlers demo

## test: lint, the policy pack itself over gRPC, the GitHub workflows against GitHub's schema and
## zizmor's audit (both offline), the load test, then the whole test suite (handler against moto,
## program under Pulumi mocks, policy checks)
test: $(STAMP) $(POLICY_STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(POLICY_VENV)/bin/python policy/smoke.py
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(VENV)/bin/zizmor --offline --no-progress .github/workflows
	$(PY) bench/loadtest.py
	$(PY) -m pytest -n 2

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

## bench: per-alert cost next to the decode floor; findings/s, CPU share and cost at 256 MB;
## then the storm benchmark (10,000 repeats of one alert: findings, counts, calls, DynamoDB cost)
bench: $(STAMP)
	$(PY) bench/handler_bench.py
	$(PY) bench/storm_bench.py

## loadtest: many concurrent invocations against Security Hub's quota (emulated, with an outage),
## Lambda's retries and on-failure queue, then redrive; fails if any alert is lost
loadtest: $(STAMP)
	$(PY) bench/loadtest.py

clean:
	rm -rf $(VENV) $(POLICY_VENV) .pytest_cache .ruff_cache .hypothesis
