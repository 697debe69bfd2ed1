# Set-up is automatic: every target below creates .venv and installs what it needs first.
#   make demo   run the default sweep into the run store, then serve the dashboard
#   make test   run the whole test suite (unit, notebooks, browser)
#   make lab    JupyterLab on the notebooks, with the `workbench` kernel
VENV    ?= .venv
PYTHON  ?= python3
# The CPU wheel of torch 2.13.0 is cached on the team's machines; `make TORCH=torch` for the newest.
TORCH   ?= torch==2.13.0
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
ADDRESS ?= localhost
PORT    ?= 5006

.PHONY: setup demo seed sweep serve test test-fast lab chromium clean-store

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m ipykernel install --sys-prefix --name workbench --display-name "Python (workbench)"
	touch $(STAMP)

chromium:
	@command -v chromium >/dev/null || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium; }

# The shipped runs (data/demo: GPU runs measured on an H200, benchmark results, CPU runs) join
# the local store; runs already there are skipped.
seed: setup
	$(PY) -m workbench.cli runs import-store data/demo/runs.sqlite

# The default sweep: dense baselines of the reference models; runs that already
# succeeded in the store are skipped, so a second `make demo` starts serving at once.
sweep: setup
	$(PY) -m workbench.cli sweep notebooks/baseline.ipynb --skip-existing \
	  -p dataset mnist1d -p steps 1000 -g model mlp -g width 32,64,128,256,512
	$(PY) -m workbench.cli sweep notebooks/baseline.ipynb --skip-existing \
	  -p dataset mnist1d -p steps 1000 -g model mixer -g width 16,32,64
	$(PY) -m workbench.cli sweep notebooks/monarch_train.ipynb --skip-existing \
	  -p model mixer -p dataset mnist1d -p steps 1000 -p width 64 -p nblocks "[4,16]"

serve: setup
	$(PY) -m workbench.cli serve --address $(ADDRESS) --port $(PORT)

demo: seed sweep serve

test: setup chromium
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not browser and not notebook"

lab: setup
	$(PY) -m workbench.cli lab

clean-store:
	rm -rf data/store
