#!/usr/bin/env bash
# Install Debian's headless Chromium for the browser tests when it is missing.
# Playwright drives it through executable_path; we never run `playwright install`.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium for the browser tests (apt-get)..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
    echo "chromium not found: browser tests will be skipped (install it: sudo apt-get install chromium)" >&2
fi
