# facegen — the README's commands. `make demo` and `make test` install into .venv first when needed.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# `make demo PRESET=tiny-open`: the same chain on the license-clean face stack (face.model: dlib)
PRESET ?= tiny
# `make learn LEARN_ARGS="--set face.model=dlib"`: the world's methods on the CC0 face stack (out/bench/learn-dlib.json)
LEARN_ARGS ?=
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install browser demo test learn bench bench-gpu lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) -m facegen.cluster.demo --preset $(PRESET) --out out/demo

# The web-page test drives Debian's Chromium; as root on Debian it is installed here, elsewhere that test is skipped.
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } \
	  || echo "note: could not install chromium — the browser test will be skipped"; \
	else echo "note: no /usr/bin/chromium — the browser test will be skipped (apt-get install chromium chromium-driver)"; fi

# The fast tier (tiny models), then the real-shape tier (random weights in SD2.1-base / SDXL-base shapes).
test: install browser
	$(PY) -m pytest -q -m "not realshape" --durations=20 tests
	$(PY) -m pytest -q -m realshape tests

# Does a face no model saw appear? The miniature world on the CPU (≈ 70 min on 2 cores the first time, 19 with the world
# cached; not part of `make test`). Exits 1 when a must-show figure falls short (`bench/learn.py --explore`: report only).
learn: install
	$(PY) bench/learn.py $(LEARN_ARGS)

bench: install
	$(PY) bench/build_data.py --identities 16
	$(PY) bench/train.py --steps 30
	$(PY) bench/serve.py

# One JSON record on a CUDA GPU (≈ 8 min); `$(PY) bench/gpu.py --dry-run` checks the same code on the CPU.
bench-gpu: install
	$(PY) bench/gpu.py

lint: install
	$(PY) -m ruff check platform tests jobs serve bench

clean:
	rm -rf out .pytest_cache
