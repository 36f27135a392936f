#!/usr/bin/env bash
# Installs what `deno task bench` needs on a fresh Debian machine (run as root): the test
# dependencies (Deno via npx, the npm packages in deno.lock, procps) and the benchmark peers
# and tools: nats-server, serf (the gossip peer) and tcpdump (gossip traffic at the socket;
# the capture needs root or CAP_NET_RAW). The Debian packages may register system services;
# the benchmark never uses them: it starts its own nats-server and serf agents on free
# loopback ports. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh nats-server serf tcpdump
nats-server --version
serf version | head -n 1
tcpdump --version | head -n 1
echo "install-bench-deps: ok"
