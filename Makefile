# Audit Sentinel. `make test` installs what is missing itself (see scripts/deps.sh).
.PHONY: deps build test bench fuzz clean

FUZZ_SECONDS ?= 600

deps:
	@bash scripts/deps.sh

build: deps
	swift build

test: deps
	@bash scripts/test.sh

# Benchmarks (release build); figures as a table and in .bench/results.json.
bench: deps
	swift build -c release --product audit-sentinel-bench
	./.build/release/audit-sentinel-bench

# The libFuzzer targets for longer than `make test` runs them.
fuzz: deps
	@bash scripts/fuzz.sh $(FUZZ_SECONDS)

clean:
	rm -rf .build .build-fuzz .build-librdkafka .build-logs .bench
