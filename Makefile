# Two commands for a fresh machine:
#   make demo   create .venv, install morphgen, render a small dataset and a preview sheet
#   make test   create .venv, install morphgen with test extras, run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(PY) -m pip
# A CPU build of torch; kept unless a torch is already importable in the venv.
TORCH  ?= torch==2.13.0

.PHONY: install demo test bench clean-demo

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[test]"
	# facenet-pytorch pins old torch/numpy: take its code and MTCNN weights only.
	$(PIP) install -q --no-deps "facenet-pytorch==2.6.0"
	touch $@

# install also byte-compiles our own modules (quick when they are up to date): an editable
# install is compiled on import only where Python may write .pyc files, not under
# PYTHONDONTWRITEBYTECODE=1, and compiling them again took 0.1-0.15 s of every command.
install: $(VENV)/.installed
	$(PY) -m compileall -q morphgen cli recognition

demo: install
	$(VENV)/bin/morphgen render --ids 20 --per-id 10 --out demo_out/dataset --overwrite
	$(VENV)/bin/morphgen preview --out demo_out/preview.png
	@echo "demo: images in demo_out/dataset/images, contact sheet demo_out/preview.png"

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) benchmarks/bench_render.py

clean-demo:
	rm -rf demo_out
