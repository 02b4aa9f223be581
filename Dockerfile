# Audit Sentinel container image: built with the Swift toolchain and Debian's librdkafka-dev, run on a
# slim Debian with only librdkafka's runtime. (No Docker engine runs where this project is developed: the
# file is checked by tests for its structure, not built there.)

# The librdkafka the test suite runs the mock-cluster suite with (Debian bookworm's), pinned in both stages so
# that the image runs exactly what was built and tested (a test compares it with the test machine's).
ARG LIBRDKAFKA_DEBIAN_VERSION=2.0.2-1

# --- build stage -------------------------------------------------------------------------------------------
FROM swift:6.3-bookworm AS build
ARG LIBRDKAFKA_DEBIAN_VERSION
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      "librdkafka-dev=${LIBRDKAFKA_DEBIAN_VERSION}" "librdkafka1=${LIBRDKAFKA_DEBIAN_VERSION}" zlib1g-dev pkg-config libcurl4-openssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so that source edits do not refetch them.
COPY Package.swift ./
RUN swift package resolve
COPY Sources Sources
COPY Tests Tests
RUN swift build -c release --product audit-sentinel --static-swift-stdlib \
 && install -D "$(swift build -c release --show-bin-path)/audit-sentinel" /out/audit-sentinel

# --- runtime stage -----------------------------------------------------------------------------------------
# The Swift runtime and Foundation are linked in; the binary still loads librdkafka, libcurl (Foundation's
# networking part, which the HTTP endpoint's library imports) and libstdc++ (the Swift runtime's).
FROM debian:bookworm-slim
ARG LIBRDKAFKA_DEBIAN_VERSION
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "librdkafka1=${LIBRDKAFKA_DEBIAN_VERSION}" libcurl4 libstdc++6 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin sentinel
COPY --from=build /out/audit-sentinel /usr/local/bin/audit-sentinel
COPY Config /etc/audit-sentinel
WORKDIR /etc/audit-sentinel
USER 10001
# In a container the metrics endpoint must listen beyond loopback to be scraped.
ENV AUDIT_SENTINEL_CONFIG=/etc/audit-sentinel/audit-sentinel.toml \
    AUDIT_SENTINEL_RULES_PATHS=/etc/audit-sentinel/rules \
    AUDIT_SENTINEL_HTTP_LISTEN=0.0.0.0:9464 \
    AUDIT_SENTINEL_LOG_FORMAT=json
EXPOSE 9464
HEALTHCHECK --interval=10s --timeout=5s --retries=3 CMD ["audit-sentinel", "healthcheck", "--address", "127.0.0.1:9464"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["audit-sentinel"]
CMD ["run"]
