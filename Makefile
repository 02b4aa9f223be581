# Audit Sentinel. `make demo` and `make test` install what is missing themselves (see scripts/deps.sh).
.PHONY: deps build test demo bench fuzz clean

FUZZ_SECONDS ?= 600

deps:
	@bash scripts/deps.sh

build: deps
	swift build

test: deps
	@bash scripts/test.sh

# The pipeline on an embedded mock Kafka cluster with simulated traffic; ends by itself (DEMO_ARGS to tune).
demo: deps
	swift build --product audit-sentinel
	./.build/debug/audit-sentinel demo $(DEMO_ARGS)

# Benchmarks (release build, mock cluster and tansu); a table, and the figures in .bench/results.json.
bench: deps
	@bash scripts/bench.sh $(BENCH_SUITES)

# The libFuzzer targets for longer than `make test` runs them.
fuzz: deps
	@bash scripts/fuzz.sh $(FUZZ_SECONDS)

clean:
	rm -rf .build .build-fuzz .build-librdkafka .build-logs .bench
