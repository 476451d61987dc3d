# switchboard — run `make help` for the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

GO                  ?= go
BIN                 := bin/switchboard
STATICCHECK_VERSION := v0.8.2
# Test flags; e.g. make test TESTFLAGS='-run Reply -v'
TESTFLAGS           ?=

.PHONY: help
help: ## Show the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build bin/switchboard
	$(GO) build -o $(BIN) ./cmd/switchboard

.PHONY: run
# A signing secret for local development only, so Reply-To webhooks work out
# of the box; production sets its own (switchboard's README: Webhooks).
DEV_WEBHOOK_SECRET  := whsec_ZGV2ZWxvcG1lbnQtb25seS1ub3QtYS1zZWNyZXQ=
run: build ## Run the gateway on :8080 and the demo echo responder against local Postgres and RabbitMQ
	@./$(BIN) echo 'workflow.#' 'orion.#' & echo_pid=$$!; \
	trap 'kill $$echo_pid 2>/dev/null; wait $$echo_pid 2>/dev/null' EXIT; \
	SWITCHBOARD_WEBHOOK_SECRETS="$${SWITCHBOARD_WEBHOOK_SECRETS:-$(DEV_WEBHOOK_SECRET)}" ./$(BIN) serve --insecure-no-auth

.PHONY: testdeps
testdeps: ## Install test-only npm packages: standardwebhooks and cloudevents, the independent checkers of webhooks and events
	@if [ -d webhook/testdata/standardwebhooks/node_modules/standardwebhooks ]; then :; \
	elif command -v npm >/dev/null; then cd webhook/testdata/standardwebhooks && npm ci --no-audit --no-fund; \
	else echo "testdeps: npm not found; the Standard Webhooks interoperability test will skip (and fail under CI=true)"; fi
	@if [ -d gateway/testdata/cloudevents/node_modules/cloudevents ]; then :; \
	elif command -v npm >/dev/null; then cd gateway/testdata/cloudevents && npm ci --no-audit --no-fund; \
	else echo "testdeps: npm not found; the CloudEvents SDK interoperability tests will skip (and fail under CI=true)"; fi

.PHONY: test
test: testdeps ## Run every test with -race against the real Postgres and RabbitMQ
	$(GO) test -race -count=1 $(TESTFLAGS) ./...

.PHONY: test-faults
test-faults: ## Run the fault suite on throwaway RabbitMQ and Postgres instances (add TESTFLAGS=-v for its summary lines)
	$(GO) test -race -tags faults -count=1 -timeout 20m $(TESTFLAGS) ./faults/...

.PHONY: lint
lint: ## go vet, gofmt and staticcheck (fetched through the module proxy)
	$(GO) vet ./...
	$(GO) vet -tags faults ./...
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt would change:"; echo "$$unformatted"; exit 1; fi
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

.PHONY: migrate
migrate: ## Apply database migrations (SWITCHBOARD_DATABASE_URL) and exit
	$(GO) run ./cmd/switchboard migrate

.PHONY: clean
clean: ## Remove build output
	rm -rf bin

# Extra bench flags; e.g. make bench BENCHFLAGS='-json bench.json'
BENCHFLAGS          ?=

.PHONY: bench
bench: ## Benchmark the gateway against the naive direct path (all modes, 64 clients, 5000 requests)
	$(GO) run ./cmd/bench -mode all -clients 64 -requests 5000 -warmup 500 $(BENCHFLAGS)

.PHONY: bench-quick
bench-quick: ## A small benchmark run, under 30 s
	$(GO) run ./cmd/bench -mode all -clients 8 -requests 300 -warmup 50 -timeout 60s $(BENCHFLAGS)

# Long-polls parked at once by bench-scale; e.g. make bench-scale WAITERS=5000
WAITERS             ?= 20000

.PHONY: bench-scale
bench-scale: ## Park WAITERS (20000) long-polls (HTTP/2 h2c; BENCHFLAGS=-scale-proto=http1 for one connection each), then wake them: RSS per waiter, wake-up latency
	$(GO) run ./cmd/bench -mode scale -waiters $(WAITERS) $(BENCHFLAGS)

.PHONY: bench-plot
bench-plot: ## Sweep longpoll and baseline over 1-128 clients: docs/bench-sweep.csv and docs/bench-latency.png
	@mkdir -p docs
	$(GO) run ./cmd/bench -mode sweep -sweep-clients 1,2,4,8,16,32,64,128 -sweep-requests 2000 -sweep-warmup 200 \
		-sweep-csv docs/bench-sweep.csv -sweep-png docs/bench-latency.png $(BENCHFLAGS)

# Time per fuzz target; e.g. make fuzz FUZZTIME=5m. Minimizing each new
# corpus entry is capped too: the handlers' random ids and clocks make
# coverage vary between runs, and the default 60s cap stalls the fuzzer.
FUZZTIME            ?= 30s
FUZZMINIMIZETIME    ?= 5s
FUZZFLAGS            = -run='^$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZETIME)

.PHONY: fuzz
fuzz: ## Run each fuzz target for FUZZTIME (default 30s), one after another
	$(GO) test $(FUZZFLAGS) -fuzz='^FuzzRoutingKey$$' ./api/
	$(GO) test $(FUZZFLAGS) -fuzz='^FuzzHeaders$$' ./api/
	$(GO) test $(FUZZFLAGS) -fuzz='^FuzzSubmitHandler$$' ./api/
	$(GO) test $(FUZZFLAGS) -fuzz='^FuzzPostReply$$' ./api/
	$(GO) test $(FUZZFLAGS) -fuzz='^FuzzReplyFromDelivery$$' ./gateway/
	$(GO) test $(FUZZFLAGS) -fuzz='^FuzzHeaderInt$$' ./gateway/
