#!/usr/bin/env bash
# Install Debian's Node.js for the dashboard's unit tests (`node --test tests/js`) when it is missing.
# No npm packages are needed: the tests import the dashboard's ES modules directly.
set -euo pipefail
if command -v node >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing nodejs for the dashboard unit tests (apt-get)..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs >/dev/null
else
    echo "node not found: install it (sudo apt-get install nodejs) to run the dashboard unit tests" >&2
    exit 1
fi
