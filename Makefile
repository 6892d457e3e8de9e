# facegen — the README's commands. `make demo` and `make test` install into .venv first when needed.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install demo test bench lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) -m facegen.demo --out out/demo

test: install
	$(PY) -m pytest -q tests

bench: install
	$(PY) bench/build_data.py --identities 16

lint: install
	$(PY) -m ruff check platform tests jobs serve bench

clean:
	rm -rf out .pytest_cache
