# Skiff: build, run and test. `make run` and `make test` work on a fresh Debian 12 machine as root.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

CARGO    ?= cargo
DATA_DIR ?= /var/lib/skiff
BUILD    := build
VENV     := $(BUILD)/venv
SKIFF    := target/release/skiff

# Debian packages the project and its tests use (see docs/architecture.md, "Test fixtures").
DEB_PACKAGES := busybox-static docker-registry etcd-server etcd-client nftables iptables iproute2 \
	conntrack runc crun podman skopeo umoci hyperfine jq curl protobuf-compiler util-linux time \
	python3 python3-venv python3-pip ca-certificates wrk openssl

.PHONY: help deps build run test test-only bench lint fmt clean

help:
	@echo "make run    build and start a single-node cluster (DATA_DIR=$(DATA_DIR))"
	@echo "make test   install test dependencies, build, run every test"
	@echo "make deps | build | bench | lint | fmt | clean"

## deps: install missing Debian packages (apt-get update once, only when something is missing)
## and the Python kubernetes client in $(VENV).
deps:
	@missing=""; \
	for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "deps: installing packages needs root: run as root or install:$$missing" >&2; exit 1; fi; \
	  apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else echo "deps: Debian packages present"; fi
	@if ! $(VENV)/bin/python -c 'import kubernetes' 2>/dev/null; then \
	  echo "deps: creating $(VENV) with the Python kubernetes client"; \
	  mkdir -p $(BUILD); \
	  python3 -m venv $(VENV); \
	  $(VENV)/bin/pip install -q --disable-pip-version-check kubernetes; \
	else echo "deps: Python kubernetes client present"; fi

build:
	$(CARGO) build --release -p skiff
	ln -sf skiff target/release/skiff-runc

run: deps build
	@if ! $(SKIFF) server --help >/dev/null 2>&1; then \
	  echo "make run: \`skiff server\` does not exist yet (it arrives with the API server issue);"; \
	  echo "          nothing to start. Try \`$(SKIFF) info\` or \`$(SKIFF) --help\`."; \
	  exit 1; \
	fi
	@echo "starting skiff server with data dir $(DATA_DIR); the kubeconfig is $(DATA_DIR)/server/admin.kubeconfig"
	exec $(SKIFF) server --data-dir $(DATA_DIR)

## test: every test of the workspace (unit, integration, end-to-end) with nextest, then doctests.
## The tests drive the `skiff` binary cargo builds for them (CARGO_BIN_EXE_skiff), so the
## release build (`make build`, ~8 min on 2 cores) is not part of `make test`.
test: deps test-only

test-only:
	SKIFF_PYTHON=$(CURDIR)/$(VENV)/bin/python $(CARGO) nextest run --workspace --no-fail-fast
	$(CARGO) test --workspace --doc

bench: deps build
	SKIFF_PYTHON=$(CURDIR)/$(VENV)/bin/python bench/run.sh $(SKIFF)

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
	rm -rf $(BUILD)
