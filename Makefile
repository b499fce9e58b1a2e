# Berth: `make run` starts every service with embedded defaults; `make test` runs the suite.
# `make lint` runs ruff (lint and format check) and mypy (settings in pyproject.toml). All create .venv, install the package
# and generate the gRPC code first.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROTOS := $(wildcard protos/*.proto)
GEN    := services/common/rpc/blobstore_pb2.py
# Debian packages the tests drive as real peers and clients (postgresql: a throwaway server for
# the search index's PostgreSQL runs).
APT_TOOLS := skopeo docker-registry wrk postgresql redis-server

.PHONY: install proto run run-s3 lint test bench tools clean

install: $(STAMP) $(GEN)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,lint]'
	touch $@

# Generated code is never edited by hand; the -I mapping gives it package-qualified imports.
$(GEN): $(PROTOS) $(STAMP)
	$(PY) -m grpc_tools.protoc -Iservices/common/rpc=protos --python_out=. --grpc_python_out=. --pyi_out=. $(PROTOS)

proto: $(GEN)

# config/berth.yml has the flavors dev (default, auth off) and secure (token auth).
BERTH_CONFIG ?= $(or $(DOCKER_REGISTRY_CONFIG),config/berth.yml)

run: install
	$(VENV)/bin/berth --config $(BERTH_CONFIG) run

# The scale-out configuration on one machine: blobs in S3 (a local moto server), Redis as the
# metadata cache, blob GETs redirected to presigned URLs; at http://127.0.0.1:5000 like `make run`.
run-s3: install
	@command -v redis-server >/dev/null || $(MAKE) tools
	DOCKER_REGISTRY_CONFIG=$(BERTH_CONFIG) $(PY) scripts/run_s3.py

tools:
	@missing=""; for t in skopeo docker-registry wrk docker-compose redis-server; do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v kubectl >/dev/null || missing="$$missing kubernetes-client"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_TOOLS) $$(command -v kubectl >/dev/null || echo kubernetes-client) >/dev/null \
	      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose >/dev/null; \
	  else echo "missing:$$missing (install: apt-get install $(APT_TOOLS) docker-compose kubernetes-client)"; exit 1; fi; \
	fi

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: install tools
	$(PY) -m pytest

bench: install tools
	$(PY) bench/run.py --start-berth --with-cache --with-direct --s3
	$(PY) bench/search_bench.py

clean:
	rm -rf $(VENV) $(GEN) services/common/rpc/*_pb2*.py* .pytest_cache
