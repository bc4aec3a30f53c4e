# jsonp-cors-bridge: `make run` serves the bridge with its demo upstream; `make test` runs every check.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# acorn, for the ES3 parse check of legacy_client/legacy-client.js (pinned by its package-lock.json)
NODE_STAMP := legacy_client/node_modules/.installed

.PHONY: install run test lint typecheck pytest bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

$(NODE_STAMP): legacy_client/package.json legacy_client/package-lock.json
	cd legacy_client && npm ci --no-audit --no-fund
	touch $(NODE_STAMP)

run: install
	@$(BIN)/python app.py --config wsgi.ini --check
	@$(BIN)/python -m bridge.demo --bind 127.0.0.1:8001 & demo=$$!; \
	trap 'kill $$demo 2>/dev/null' EXIT INT TERM; \
	echo ""; \
	echo "  bridge:        http://127.0.0.1:8000/        (try: curl http://127.0.0.1:8000/cors/demo/)"; \
	echo "  demo upstream: http://127.0.0.1:8001/"; \
	echo ""; \
	$(BIN)/python app.py --config wsgi.ini

lint: install
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy

pytest: install $(NODE_STAMP)
	$(BIN)/python -m pytest

test: lint typecheck pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache test-results legacy_client/node_modules
