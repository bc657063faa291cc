#!/usr/bin/env bash
# Watch an existing TensorBoard logdir with `lightning-stream serve`, then query it with curl.
#
#   bash examples/watch_logdir.sh [LOGDIR]
#
# Without LOGDIR it writes a small one (two runs, two tags, 50 steps) with tensorboardX
# into a temporary directory. It starts the server on a free port, reads the URL it
# prints, curls /health and /api/runs, shows three live points from `lightning-stream
# tail`, then stops the server with SIGTERM (a clean stop: the registry entry goes away).
# Needs: the package installed (`lightning-stream` on PATH), curl, and python with tensorboardX.
set -euo pipefail

PYTHON="${PYTHON:-python3}"
WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

LOGDIR="${1:-$WORK/logs}"
if [[ $# -eq 0 ]]; then
    "$PYTHON" - "$LOGDIR" <<'PY'
import math, sys
from tensorboardX import SummaryWriter

for run in ("version_0", "version_1"):
    with SummaryWriter(f"{sys.argv[1]}/{run}") as writer:
        for step in range(50):
            writer.add_scalar("train/loss", math.exp(-step / 20), step)
            writer.add_scalar("val/acc", 1 - math.exp(-step / 10), step)
PY
    echo "wrote a small logdir at $LOGDIR"
fi

lightning-stream serve "$LOGDIR" >"$WORK/serve.out" 2>"$WORK/serve.err" &
SERVER_PID=$!

URL=""
for _ in $(seq 1 300); do  # up to 30 s for the first read of a big logdir
    URL="$(grep -o 'http://[^ ]*' "$WORK/serve.out" | head -n 1 || true)"
    [[ -n "$URL" ]] && break
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        cat "$WORK/serve.err" >&2
        echo "lightning-stream serve exited early" >&2
        exit 1
    fi
    sleep 0.1
done
[[ -n "$URL" ]] || { echo "no URL from lightning-stream serve after 30 s" >&2; exit 1; }
URL="${URL%/}"
echo "server: $URL"

echo "--- curl $URL/health"
curl -sS --fail "$URL/health"
echo
echo "--- curl $URL/api/runs"
curl -sS --fail "$URL/api/runs"
echo
echo "--- lightning-stream health"
lightning-stream health "$URL" >/dev/null && echo healthy

# A point written now shows up live in `tail`.
lightning-stream tail "$URL" --tag 'train/*' --count 3 --duration 20 >"$WORK/tail.out" &
TAIL_PID=$!
for _ in $(seq 1 100); do  # wait until tail is connected (the server counts SSE clients)
    SSE="$(curl -sS "$URL/health" | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["clients"]["sse"])')"
    [[ "$SSE" -ge 1 ]] && break
    sleep 0.1
done
"$PYTHON" - "$LOGDIR" <<'PY'
import sys
from tensorboardX import SummaryWriter

with SummaryWriter(f"{sys.argv[1]}/version_2") as writer:
    for step in range(3):
        writer.add_scalar("train/loss", 1.0 / (step + 1), step)
PY
wait "$TAIL_PID"
echo "--- lightning-stream tail $URL --tag 'train/*' --count 3"
cat "$WORK/tail.out"

kill -TERM "$SERVER_PID"
wait "$SERVER_PID"
SERVER_PID=""
echo "server stopped cleanly"
