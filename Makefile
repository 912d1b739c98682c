# Recon: the two commands a new user runs are `make demo` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv demo test test-fast lint extension bench clean

venv: $(STAMP)

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $(STAMP)

# Runs the jobs headless on inputs it makes; writes out/demo.blend and out/demo*.png.
# `make demo BODY_PHOTO=path` fits the body to your own photo of a person.
demo: venv
	$(PY) tools/demo.py --out out $(if $(BODY_PHOTO),--body-photo "$(BODY_PHOTO)")

test: venv
	$(PY) -m pytest

test-fast: venv
	$(PY) -m pytest -m "not blender and not slow"

lint: venv
	$(PY) -m ruff check .

# The installable extension zip (tests and dev files left out, see blender_manifest.toml).
extension: venv
	$(PY) tools/build_extension.py --out dist

bench: venv
	$(PY) bench/deform.py
	$(PY) bench/sfm.py
	$(PY) bench/import_points.py

clean:
	rm -rf out dist .pytest_cache
