# Two commands do all set-up on a fresh machine:
#   make demo   - installs everything, runs configs/demo.json offline through real claude instances
#   make test   - installs everything, runs the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install test demo lint typecheck bench clean chromium iproute2

install: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# The pinned Claude Code CLI, project-local (never global): node_modules/.bin/claude
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	node_modules/.bin/claude --version
	touch $@

# The HTML report's browser test needs Debian's chromium: installed here as root (CI);
# otherwise that test fails saying how to install it.
chromium:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; \
	else \
		echo "chromium missing and not root: install Debian's chromium (apt-get install chromium)"; \
	fi

# The fleet's network-namespace tests need iproute2's ip (and root): installed here as root
# (CI); otherwise those tests are skipped, saying why.
iproute2:
	@if command -v ip >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iproute2; \
	else \
		echo "ip missing and not root: the network-namespace tests are skipped (apt-get install iproute2)"; \
	fi

# The suite on TEST_WORKERS processes (pytest-xdist; each with its own embedded Postgres);
# the slowest tests are listed at the end.
TEST_WORKERS ?= 2
test: install chromium iproute2
	$(BIN)/ruff check coordinator runner tests bench scripts
	$(BIN)/mypy
	$(BIN)/pytest -n $(TEST_WORKERS) --durations=25

lint: install
	$(BIN)/ruff check coordinator runner tests bench scripts
	$(BIN)/ruff format --check coordinator runner tests bench scripts

typecheck: install
	$(BIN)/mypy

# The run, then its HTML report (written also when an instance did not complete).
demo: install
	@status=0; \
	$(BIN)/coordinator run --config configs/demo.json --offline \
		--output .demo-workspace/demo-results.json || status=$$?; \
	$(BIN)/coordinator report --results .demo-workspace/demo-results.json \
		--html .demo-workspace/demo-report.html >/dev/null && \
	echo "HTML report: $(CURDIR)/.demo-workspace/demo-report.html"; \
	exit $$status

bench: install
	$(BIN)/python -m bench.stream_throughput
	$(BIN)/python -m bench.scale
	$(BIN)/python -m bench.budget_latency
	$(BIN)/python -m bench.db_writes
	$(BIN)/python -m bench.barrier_release
	$(BIN)/python -m bench.real_cli
	$(BIN)/python -m bench.report

clean:
	rm -rf $(VENV) node_modules .mypy_cache .pytest_cache .ruff_cache
