#!/usr/bin/env bash
# Installs Debian's chromium for the headless check of `tailor report`
# (`cargo test --test show -- --ignored report_renders_in_headless_chromium`).
# Needs root (or sudo) and the Debian package mirrors; tailor itself never needs a browser.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  echo "chromium is installed: $(command -v chromium)"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium
command -v chromium
