# The two README commands:
#   make run    set up a virtualenv, install, run the main job on the embedded sample digits
#   make test   set up (with test tools, Horovod, the Fashion-MNIST files), lint, run the tests
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
# Horovod 0.28.1, the last release, builds unchanged against TensorFlow 2.15..2.18 only.
TF_PIN := tensorflow-cpu==2.18.1
SPEC ?= configs/mnist_1p.yaml

.PHONY: run test test-slow setup setup-dev horovod data lint pytest docs-check bench image-check clean

run: setup
	$(PY) -m launcher $(SPEC)

test: setup-dev lint pytest

setup: $(VENV)/.setup
$(VENV)/.setup: setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -e '.[cpu]' '$(TF_PIN)'
	touch $@

setup-dev: setup $(VENV)/.setup-dev horovod data
$(VENV)/.setup-dev: setup.py
	$(PIP) install -q -e '.[cpu,dev]' '$(TF_PIN)'
	touch $@

# Horovod with Gloo, without MPI, compiled against the venv's TensorFlow (about 2-4 minutes).
horovod: $(VENV)/.horovod
$(VENV)/.horovod: $(VENV)/.setup
	HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
	HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 MAKEFLAGS=-j2 \
	$(PIP) install -q --no-build-isolation --no-cache-dir 'horovod==0.28.1'
	$(PY) -c "import horovod.tensorflow"
	touch $@

# Real Fashion-MNIST IDX files (Debian package) for the IDX reader and the memory benchmark.
data:
	@test -d /usr/share/datasets/fashion-mnist || { \
	  command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; } \
	  || echo "note: dataset-fashion-mnist not installed (needs root and apt); its tests will be skipped"; }

lint: setup-dev
	$(VENV)/bin/ruff check .
	# What a rank runs must work on the Python 3.7.5 of CANN's TensorFlow images; the k8s client,
	# the benchmarks and the tests run on the developer's machine (3.9+).
	$(VENV)/bin/vermin --target=3.7- --violations --no-tips --eval-annotations common job launcher rank_table csgm
	$(VENV)/bin/vermin --target=3.9- --violations --no-tips --eval-annotations k8s bench tests

# Two test processes, whole files each (module fixtures are built once): most tests wait on
# subprocesses, sockets and grace periods, so two of them share the 2 cores well (docs/benchmarks.md).
PYTEST_WORKERS ?= 2
pytest: setup-dev
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile --durations=15 -m "not slow" tests

# The measurement-sized tests `make test` leaves out (the 100-epoch two-rank convergence check).
test-slow: setup-dev
	$(PY) -m pytest -q -m slow tests

# Every shell command of README.md, configs/README.md and docs/ run or checked (seconds; part of `make test`).
docs-check: setup-dev
	$(PY) -m pytest -q tests/test_docs.py

bench: setup-dev
	$(PY) -m bench.all

# Do the image's requirements install from PyPI for both stacks on aarch64 and x86_64, Python 3.7?
# Needs the network (not part of `make test`) and pip >= 24 (k8s/image/check_wheels.py).
image-check: setup
	$(PIP) install -q 'pip>=24' packaging
	$(PY) k8s/image/check_wheels.py

clean:
	rm -rf $(VENV) runs build *.egg-info
