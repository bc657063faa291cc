#!/usr/bin/env bash
# Fetch uPlot's release files (MIT) from the npm registry into benchmarks/data/uplot/ for the chart
# library comparison in benchmarks/bench_dashboard.py --chart-libs. Pinned; nothing is vendored into
# the package (the dashboard keeps its own canvas chart: see benchmarks/README.md for the figures).
set -euo pipefail
VERSION="${UPLOT_VERSION:-1.6.32}"
DEST="$(cd "$(dirname "$0")/.." && pwd)/benchmarks/data/uplot"
if [ -f "$DEST/package/dist/uPlot.iife.min.js" ] && grep -q "\"version\": \"$VERSION\"" "$DEST/package/package.json"; then exit 0; fi
command -v npm >/dev/null 2>&1 || { echo "npm not found: sudo apt-get install npm" >&2; exit 1; }
rm -rf "$DEST" && mkdir -p "$DEST"
(cd "$DEST" && npm pack --silent "uplot@$VERSION" >/dev/null && tar xzf "uplot-$VERSION.tgz")
echo "uPlot $VERSION in $DEST/package (licence: $DEST/package/LICENSE)"
