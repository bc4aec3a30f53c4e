# jsonp-cors-bridge: `make run` serves the bridge with its demo upstream; `make test` runs every check.
PYTHON ?= python3
BRIDGE_BIND ?= 127.0.0.1:8000
DEMO_BIND   ?= 127.0.0.1:8001
PAGE_BIND   ?= 127.0.0.1:8002
# Not exported: `make test` would hand its own value down to the `make run` a test starts.
DEMO_URL := http://$(DEMO_BIND)/
# The comparison page's origins, wherever PAGE_BIND puts it: wsgi.ini's [cors] allow_origins reads them.
PAGE_ORIGINS := http://$(PAGE_BIND) http://localhost:$(lastword $(subst :, ,$(PAGE_BIND)))
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# acorn, for the ES3 parse check of legacy_client/legacy-client.js (pinned by its package-lock.json)
NODE_STAMP := legacy_client/node_modules/.installed

.PHONY: install lock run test lint typecheck pytest bench cache-tests clean

# The exact versions the suite passed with (requirements.lock), then the project itself without
# resolving anything again. `make lock` refreshes the lock from pyproject.toml in a fresh venv.
$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet --upgrade pip
	.venv-lock/bin/pip install --quiet -e '.[test,bench]'
	{ echo "# make lock: pyproject.toml's dependencies with extras test and bench, as resolved $$(date -u +%F)"; \
	  .venv-lock/bin/pip freeze --exclude-editable; } > requirements.lock
	rm -rf .venv-lock

$(NODE_STAMP): legacy_client/package.json legacy_client/package-lock.json
	cd legacy_client && npm ci --no-audit --no-fund
	touch $(NODE_STAMP)

run: install
	@DEMO_URL=$(DEMO_URL) PAGE_ORIGINS="$(PAGE_ORIGINS)" $(BIN)/python app.py --config wsgi.ini --check
	@$(BIN)/python -m bridge.site.demo --bind $(DEMO_BIND) & demo=$$!; \
	DEMO_URL=$(DEMO_URL) PAGE_ORIGINS="$(PAGE_ORIGINS)" $(BIN)/python -m bridge.site.page \
		--config wsgi.ini --bind $(PAGE_BIND) \
		--bridge http://$(BRIDGE_BIND) & page=$$!; \
	trap 'kill $$demo $$page 2>/dev/null' EXIT INT TERM; \
	$(BIN)/python -m bridge.site.demo --bind $(DEMO_BIND) --wait 60 || exit 1; \
	echo ""; \
	echo "  bridge:        http://$(BRIDGE_BIND)/   (try: curl http://$(BRIDGE_BIND)/cors/demo/)"; \
	echo "  demo upstream: $(DEMO_URL)"; \
	echo "  compare page:  http://$(PAGE_BIND)/   (CORS and JSONP side by side, on another origin)"; \
	echo ""; \
	DEMO_URL=$(DEMO_URL) PAGE_ORIGINS="$(PAGE_ORIGINS)" $(BIN)/python app.py --config wsgi.ini \
		--bind $(BRIDGE_BIND)

lint: install
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy

pytest: install $(NODE_STAMP)
	$(BIN)/python -m pytest

test: lint typecheck pytest

# Not part of make test: timings are benchmarks, not tests. BENCH_ARGS="--rounds 7 --keys 100000"
bench: install bench/node_modules/.package-lock.json
	$(BIN)/python bench/run.py $(BENCH_ARGS)

bench/node_modules/.package-lock.json: bench/package-lock.json
	npm ci --prefix bench --no-audit --no-fund

# Not part of make test: the public HTTP caching suite (cache-tests.fyi) through the bridge, scored
# beside its published caches. The suite is a git clone kept outside this repo, found offline:
# make cache-tests CACHE_TESTS_DIR=/path/to/cache-tests (run.py says how to get it when it is missing).
CACHE_TESTS_DIR ?= ../cache-tests
cache-tests: install bench/cache_tests/node_modules/.package-lock.json
	$(BIN)/python bench/cache_tests/run.py --suite $(CACHE_TESTS_DIR) $(CACHE_TESTS_ARGS)

bench/cache_tests/node_modules/.package-lock.json: bench/cache_tests/package-lock.json
	npm ci --prefix bench/cache_tests --no-audit --no-fund

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache test-results legacy_client/node_modules
