# The two commands (see README): `make demo` runs the demo, `make test` runs the tests. Both set themselves up.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test setup bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	@mkdir -p out
	$(BIN)/iot-dsl validate workflows/*.yaml
	$(BIN)/iot-dsl compile workflows/plant.yaml -o out/plant.plan.json
	$(BIN)/iot-dsl run workflows/plant.yaml --simulate --devices 400 --duration 10m --seed 7 --out out/demo.jsonl

test: $(STAMP)
	$(BIN)/python -m pytest --json-report --json-report-file=pytest_results.json \
		--cov=iot_dsl --cov-branch --cov-report=term --cov-report=json:coverage.json
	$(BIN)/python .ci/coverage_gate.py coverage.json

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) out .coverage coverage.json .pytest_cache
