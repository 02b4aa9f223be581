# Audit Sentinel. `make demo` and `make test` install what is missing themselves (see scripts/deps.sh).
.PHONY: deps build test demo bench fuzz chaos clean

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

# The crash test in its long form: 20 random SIGKILLs of three instances (make test runs 3), then
# 50 000 simulated histories (make test runs 10 000).
chaos: deps
	swift build --product audit-sentinel
	@bash scripts/chaos.sh 20 6000
	swift build -c release --product audit-sentinel-sim
	./.build/release/audit-sentinel-sim --schedules $${SIM_SCHEDULES:-50000} --base-seed 100001

# The libFuzzer targets for longer than `make test` runs them.
fuzz: deps
	@bash scripts/fuzz.sh $(FUZZ_SECONDS)

clean:
	rm -rf .build .build-fuzz .build-librdkafka .build-logs .bench
