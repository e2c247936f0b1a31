# Quick start:  make demo  |  make test
# Both create .venv in the repo (if missing) and install videococa into it first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed

.PHONY: demo test bench install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m videococa demo

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/encode.py
	$(PY) bench/decode.py
	$(PY) bench/search.py
	$(PY) bench/finetune.py
	$(PY) bench/memory.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info src/*.egg-info
