# The release build the benchmarks measure, sourced by scripts/bench.sh and scripts/profile-e2e.sh: as the
# Dockerfile builds the shipped binary, with the Swift runtime and Foundation linked statically
# (`--static-swift-stdlib`), in .build-static so that the release build `make test` makes in .build is not
# redone with other flags. `release_build PRODUCT` builds one product; $RELEASE_BIN is where it lands.
RELEASE_BIN=.build-static/release
release_build() {
  swift build -c release --static-swift-stdlib --scratch-path .build-static --product "$1" 2>&1 | grep -vE '^\[[0-9]+/[0-9]+\] ' || true
  [ -x "$RELEASE_BIN/$1" ] || { echo "release build of $1 failed" >&2; return 1; }
}
