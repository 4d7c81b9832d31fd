# modelrollout: every target installs what it needs into .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: demo test unit fuzz lint bench bench-smoke e2e lab prometheus servers clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[lab,test]'
	touch $(STAMP)

# Real model servers (MLServer, KServe's ModelServer, BentoML) for tests/presets/test_real_servers.py, one
# venv each under $(SERVERS): their pins clash with the operator's and with each other's.
SERVERS ?= .venv-servers

$(SERVERS)/%/.installed: servers/%.txt
	test -x $(SERVERS)/$*/bin/python || $(PYTHON) -m venv $(SERVERS)/$*
	$(SERVERS)/$*/bin/pip install --quiet -r servers/$*.txt
	touch $@

servers: $(SERVERS)/mlserver/.installed $(SERVERS)/kserve/.installed $(SERVERS)/bentoml/.installed

# The lab needs the real Prometheus server (Debian's package).
prometheus:
	@command -v prometheus >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  else echo "Prometheus is missing: run 'sudo apt-get install prometheus' (or put a prometheus binary on PATH)"; exit 1; fi; }

demo: $(STAMP) prometheus
	$(VENV)/bin/modelrollout-lab demo --png demo-timeline.png

lab: $(STAMP) prometheus
	$(VENV)/bin/modelrollout-lab up

test: $(STAMP) prometheus servers
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -p no:cacheprovider -n 3 --dist loadfile

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

# The state-machine test of issue 22, long: thousands of random interleavings (CI runs a few dozen).
fuzz: $(STAMP)
	MODELROLLOUT_FUZZ=long $(PY) -m pytest -q -p no:cacheprovider tests/unit/test_state_machine.py

lint: $(STAMP)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/hadolint Dockerfile

bench: $(STAMP) prometheus
	$(PY) -m benchmarks.run

e2e: $(STAMP)
	bash tests/e2e/kind-e2e.sh

clean:
	rm -rf $(VENV) $(SERVERS) demo-timeline.png .pytest_cache
