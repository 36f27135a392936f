#!/usr/bin/env bash
# Installs what `deno task bench` needs on a fresh Debian machine (run as root): the test
# dependencies (Deno via npx, the npm packages in deno.lock, procps) and nats-server, the
# benchmark peer. The Debian package may register a system service; the benchmark never
# uses it: it starts its own nats-server on a free loopback port. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh nats-server
nats-server --version
echo "install-bench-deps: ok"
