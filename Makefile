# sagaflow: `make` alone lists the targets. The local infrastructure is in dev/
# (see the README's "Local infrastructure").
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# What the Go tests, the chaos suite and the benchmark connect to. Override on
# the command line or in the environment; KAFKA_BROKERS=3 brings up (and
# points at) the 3-node cluster instead of the single node.
KAFKA_BROKERS ?= 1
ifeq ($(KAFKA_BROKERS),3)
SAGAFLOW_KAFKA ?= 127.0.0.1:19092,127.0.0.1:19094,127.0.0.1:19096
endif
SAGAFLOW_KAFKA ?= 127.0.0.1:19092
SAGAFLOW_REDIS ?= 127.0.0.1:16379
export SAGAFLOW_KAFKA SAGAFLOW_REDIS KAFKA_BROKERS

GO ?= go
# staticcheck v0.8.2 is release 2026.2.2, which builds and runs with Go 1.26.
# (The proxy only serves semver tags, so "@2025.1.1" style versions fail.)
STATICCHECK_VERSION ?= v0.8.2
TEST_FLAGS ?= -race -count=1 -timeout 20m
# The chaos run of `make chaos` and of `make test` (CI-sized: under 5 minutes,
# 2,000 to 4,000 orders: the API sheds what the system cannot carry through
# the faults, so more is offered than ends; every fault kind the schedule
# reaches). A long run:
#   make chaos CHAOS_FLAGS='-duration 80m -orders 100000 -rate 50 -every 15s -drain 5m'
CHAOS_FLAGS ?= -duration 150s -rate 35 -every 7s

.PHONY: help up down status logs test vet lint bench demo chromium chaos failover

help: ## list the targets
	@echo "usage: make TARGET   (KAFKA_BROKERS=3 for the 3-node Kafka)"
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-8s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

up: ## start Kafka and Redis (dev/up.sh) and wait until they answer
	@dev/up.sh --brokers $(KAFKA_BROKERS)

down: ## stop the Kafka and Redis that dev/ started; data stays in .cache/
	@dev/down.sh

status: ## say whether Kafka and Redis are up, with pids, ports and logs
	@dev/status.sh

logs: ## print the last lines of the Kafka and Redis logs
	@dev/logs.sh

vet: ## go vet
	$(GO) vet ./...

chromium: ## install Debian's chromium (for the browser test) when it is missing
	@dev/chromium.sh

test: up chromium vet ## start the infrastructure, go vet, then all tests with -race (the 3-node failover tests last)
	$(GO) test $(TEST_FLAGS) -skip '^TestFailover' ./...
	@echo "== the idempotency suite again, on the demo's embedded Redis (miniredis) =="
	SAGAFLOW_REDIS=embedded $(GO) test -count=1 ./idempotency/ ./idempotency/hashset/
	@echo "== the chaos suite, CI-sized (make chaos) =="
	@$(MAKE) --no-print-directory chaos
	@echo "== the failover tests, on the 3-node Kafka (make failover) =="
	@$(MAKE) --no-print-directory failover

# The failover tests kill and pause brokers, so they run apart from every
# other test, on their own 3-node cluster (dev/up.sh --brokers 3 stops the
# single node; `make up` brings it back), and one package at a time (-p 1):
# one of them pauses all of Kafka.
FAILOVER_KAFKA := 127.0.0.1:19092,127.0.0.1:19094,127.0.0.1:19096
# Only the packages that have failover tests: linking a -race test binary for
# each of the others, one at a time, to find nothing to run cost every CI run
# about a minute (56 s on a quiet machine).
FAILOVER_PKGS = $(shell find . \( -path ./.cache -o -path ./.git \) -prune -o -name '*_test.go' -print | \
	xargs -r grep -l '^func TestFailover' | xargs -r -n1 dirname | sort -u)
failover: ## the 3-node Kafka: coordinators, brokers and all of Kafka killed or paused under the loop, the API and the system (docs/failover.md)
	@pkgs='$(FAILOVER_PKGS)'; [[ -n $$pkgs ]] || { echo "failover: no package has a TestFailover test" >&2; exit 1; }
	@dev/up.sh --brokers 3
	SAGAFLOW_KAFKA=$(FAILOVER_KAFKA) SAGAFLOW_KAFKA_CONTROL=$(CURDIR)/dev/kafka.sh $(GO) test $(TEST_FLAGS) -p 1 -run '^TestFailover' $(FAILOVER_PKGS)

chaos: up ## the system as processes under seeded faults, then the invariants checked (docs/chaos.md); reports in .cache/chaos
	$(GO) run ./cmd/sagaflow chaos -kafka-control dev/kafka.sh $(CHAOS_FLAGS)

lint: ## gofmt (fails on any unformatted file), go vet, staticcheck
	@unformatted=$$(find . -path ./.cache -prune -o -path ./.git -prune -o -name testdata -prune \
		-o -name '*.go' -print | xargs -r gofmt -l); \
	if [[ -n $$unformatted ]]; then \
		echo "gofmt: these files need gofmt -w:"; echo "$$unformatted"; exit 1; \
	fi
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

bench: up ## the system as separate processes, driven by sagaflow bench (dev/bench.sh); results in .cache/bench
	@dev/bench.sh

demo: ## try sagaflow in one process, no infrastructure needed
	$(GO) run ./cmd/sagaflow demo
