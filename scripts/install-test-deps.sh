#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine (run as root):
# Deno from the npm registry (cached by npx), the npm packages in deno.lock, and the
# Debian packages listed below plus any named as arguments. Safe to run again.
# Usage: scripts/install-test-deps.sh [EXTRA_DEBIAN_PACKAGE]...
set -euo pipefail
cd "$(dirname "$0")/.."
export NO_COLOR=1 DENO_NO_UPDATE_CHECK=1

# Debian packages the tests use. Services are started by the tests that need them.
APT_PACKAGES=(procps dnsmasq-base rabbitmq-server mosquitto systemd-journal-remote "$@")

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-test-deps: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Deno itself, then every npm dependency pinned in deno.lock.
npx -y deno@2.9.6 --version >/dev/null
npx -y deno@2.9.6 install --frozen
echo "install-test-deps: ok"
