# Audit Sentinel. `make test` and `make demo` install what is missing themselves (see scripts/deps.sh).
.PHONY: deps build test clean

deps:
	@bash scripts/deps.sh

build: deps
	swift build

test: deps
	@bash scripts/test.sh

clean:
	rm -rf .build .build-librdkafka .build-logs
