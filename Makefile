# Whistle: `make run` starts the bot, `make test` runs the whole suite.
# Each creates the virtualenv in .venv and installs what it needs first.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= $(if $(wildcard config.toml),config.toml,config.example.toml)
PYTEST_ARGS ?=

.PHONY: run test venv clean catalogs

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

venv: $(BIN)/.installed

run: venv
	$(BIN)/python -m bot --config $(CONFIG) run

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Re-extract translatable texts into locale/whistle.pot and update both catalogs.


clean:
	rm -rf $(VENV) .pytest_cache var

# Re-extract translatable texts and update both catalogs (then translate zh_Hans).
catalogs: venv
	$(BIN)/python locale/sync.py
