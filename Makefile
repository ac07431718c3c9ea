# Bastion — `make run` serves on http://127.0.0.1:8400, `make test` runs the whole suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8400

.PHONY: run test lint bench install clean screenshots

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml
	$(BIN)/pip install -q -e '.[test,lint]'
	touch $@

install: $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/bastion init
	@printf '\n%s\n' "Data directory: $${BASTION_DATA_DIR:-$(CURDIR)/.bastion} (BASTION_DATA_DIR); every bastion command must use the same one."
	@printf '%s\n' "Create your first organisation, in another terminal:"
	@printf '  %s\n' "cd $(CURDIR)$${BASTION_DATA_DIR:+ && export BASTION_DATA_DIR=$$BASTION_DATA_DIR}"
	@printf '  %s\n' "echo 'correct-horse-battery-staple' | $(BIN)/bastion org create Acme --admin-email admin@example.com --admin-password-stdin --json"
	@printf '  %s\n\n' "$(BIN)/bastion apikey create --org <org_id> --name first-key --role admin --json"
	$(BIN)/bastion serve --host $(HOST) --port $(PORT)

test: $(VENV)/.installed-dev
	bash scripts/test.sh

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	BASTION_DATA_DIR=$$(mktemp -d) sh -c '$(BIN)/bastion init >/dev/null && $(BIN)/alembic check'

$(VENV)/.installed-bench: $(VENV)/.installed-dev pyproject.toml
	$(BIN)/pip install -q -e '.[test,lint,bench]'
	touch $@

bench: $(VENV)/.installed-bench
	$(BIN)/python -m bench.run

# Retake docs/console/*.png from the console's browser tests (needs Debian's chromium).
screenshots: $(VENV)/.installed-dev
	BASTION_CONSOLE_SCREENSHOTS=1 $(BIN)/pytest -q -p no:cacheprovider tests/console/test_browser_pages.py tests/console/test_browser_agent_pages.py tests/console/test_browser_approvals.py tests/console/test_browser_compliance.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
