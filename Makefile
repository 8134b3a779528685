# Felix's everyday commands. `make help` lists them.
GO ?= go
BIN ?= bin/felix
# the local PostgreSQL that the PostgreSQL tests, bench and reliability use
PGTEST ?= postgres://postgres@127.0.0.1:5432/test?sslmode=disable

.PHONY: help dev build start migrate demo test test-pg fuzz bench reliability ci

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

dev: ## run the gateway from source with debug logs (reads .env / .env.local)
	LOG_LEVEL=debug $(GO) run ./cmd/felix serve

build: ## build the binary into bin/felix
	$(GO) build -trimpath -o $(BIN) ./cmd/felix

start: build ## build, then run the gateway
	./$(BIN) serve

migrate: ## apply the database migrations
	$(GO) run ./cmd/felix migrate

demo: ## run Felix with zero configuration
	$(GO) run ./cmd/felix demo

test: ## run every test (PostgreSQL ones too when FELIX_TEST_DATABASE_URL is set)
	$(GO) test ./...

test-pg: ## run every test against the local PostgreSQL too, with the race detector
	FELIX_TEST_DATABASE_URL='$(PGTEST)' $(GO) test -race ./...

fuzz: ## fuzz each decoder with 300,000 inputs (a count, not a time: go.dev/issue/75804)
	for t in FuzzDecodeGenerate FuzzSplitObject FuzzAdminBody FuzzClientKey FuzzFraming FuzzKeyPatch FuzzUsageQuery FuzzCursor; do $(GO) test -tags fuzzing -run '^$$' -fuzz "^$$t\$$" -fuzztime 300000x -timeout 10m ./internal/server/ || exit 1; done

bench: ## benchmark Felix against a bare reverse proxy (see README, Performance)
	$(GO) run ./cmd/felix-bench --pg '$(PGTEST)'

reliability: ## fault suites, then the crash and multi-instance suites with a summary table
	FELIX_TEST_DATABASE_URL='$(PGTEST)' $(GO) test -count=1 -run 'TestTargetFaults|TestPausedBody|TestTargetRefuses|TestResetMidBody|TestStreaming|TestClientGone|TestStoreUnavailable|TestSettleFails|TestNoOverspend' ./internal/server/
	FELIX_TEST_DATABASE_URL='$(PGTEST)' $(GO) test -count=1 ./internal/e2e/ -args -report '$(CURDIR)/reliability.txt'
	@echo; echo "Reliability summary ($$(date -u +%F), $$(nproc) cores):"; cat reliability.txt

ci: ## what CI runs
	bash .ci/run
