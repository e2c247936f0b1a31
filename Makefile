# Quick start:  make demo  |  make test
# Both create .venv in the repo (if missing) and install videococa into it first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed

.PHONY: demo test bench install clean browser

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m videococa demo

test: $(STAMP) browser
	$(PY) -m pytest -q

# The web UI's tests drive Debian's chromium through its chromedriver. Installed here when we are root and apt
# works; otherwise those tests say why they did not run (and fail under CI=true).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	    || echo "make: chromium/chromedriver not installed: the browser tests will be skipped"; }

bench: $(STAMP)
	$(PY) bench/encode.py
	$(PY) bench/decode.py
	$(PY) bench/search.py
	$(PY) bench/finetune.py
	$(PY) bench/temporal.py
	$(PY) bench/memory.py
	$(PY) bench/raydata.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info src/*.egg-info
