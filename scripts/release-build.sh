# The release build the benchmarks measure, sourced by scripts/bench.sh and scripts/profile-e2e.sh: as the
# Dockerfile builds the shipped binary, with the Swift runtime and Foundation linked statically
# (`--static-swift-stdlib`), in .build-static so that the release build `make test` makes in .build is not
# redone with other flags. `release_build PRODUCT` builds one product; $RELEASE_BIN is where it lands.
RELEASE_BIN=.build-static/release
release_build() {
  # A failed build must stop the bench, not leave it measuring the binary of an earlier build.
  local log
  if ! log=$(swift build -c release --static-swift-stdlib --scratch-path .build-static --product "$1" 2>&1); then
    printf '%s\n' "$log" >&2
    echo "release build of $1 failed" >&2
    return 1
  fi
  printf '%s\n' "$log" | grep -vE '^\[[0-9]+/[0-9]+\] ' || true
}
