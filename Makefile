# jsonp-cors-bridge: `make run` serves the bridge with its demo upstream; `make test` runs every check.
PYTHON ?= python3
BRIDGE_BIND ?= 127.0.0.1:8000
DEMO_BIND   ?= 127.0.0.1:8001
export DEMO_URL ?= http://$(DEMO_BIND)/
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test lint typecheck pytest bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: install
	@$(BIN)/python app.py --config wsgi.ini --check
	@$(BIN)/python -m bridge.demo --bind $(DEMO_BIND) & demo=$$!; \
	trap 'kill $$demo 2>/dev/null' EXIT INT TERM; \
	echo ""; \
	echo "  bridge:        http://$(BRIDGE_BIND)/   (try: curl http://$(BRIDGE_BIND)/cors/demo/)"; \
	echo "  demo upstream: $(DEMO_URL)"; \
	echo ""; \
	$(BIN)/python app.py --config wsgi.ini --bind $(BRIDGE_BIND)

lint: install
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/python -m pytest

test: lint typecheck pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache test-results
