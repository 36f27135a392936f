#!/usr/bin/env bash
# Installs what `deno task bench` needs on a fresh Debian machine (run as root): the test
# dependencies (Deno via npx, the npm packages in deno.lock, procps) and nats-server, the
# benchmark peer. The Debian package may register a system service; the benchmark never
# uses it: it starts its own nats-server on a free loopback port. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
export NO_COLOR=1 DENO_NO_UPDATE_CHECK=1

bash scripts/install-test-deps.sh

APT_PACKAGES=(nats-server)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-bench-deps: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
nats-server --version
echo "install-bench-deps: ok"
