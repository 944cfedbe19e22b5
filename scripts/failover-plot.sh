#!/usr/bin/env bash
# Failover under load, drawn: three `diam serve` processes A, B and C on
# 127.0.0.1, one `diam bench --peer A,B,C --duration 10 --inflight 256
# --retryable 0.5 --plot OUT.svg`; A is SIGKILLed 3 s into the run and
# started again on the same port at 5 s.
#
#   scripts/failover-plot.sh [OUT.svg]          (default docs/failover.svg)
#
# Prints the bench's key figures (requests, answers, errors, timeouts,
# retransmissions, failovers) and exits 1 unless
# requests == answers + errors_total + timeouts (nothing lost).
#
# A must come back on its own port, so its port is chosen first (bound to
# port 0 and released); B and C listen on port 0 and the script reads the
# bound address from each serve's first stdout line
# {"event":"listening","addr":"127.0.0.1:P"}.
#
# Needs: cargo, python3.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$ROOT/docs/failover.svg}
case $out in /*) ;; *) out=$PWD/$out ;; esac
mkdir -p "$(dirname "$out")"

(cd "$ROOT" && cargo build --release -p diam)
D=$ROOT/target/release/diam

dir=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits (bounded, 15 s) for a line matching $2 in file $1.
wait_for() {
    for _ in $(seq 150); do
        grep -q -- "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "failover-plot: no '$2' in $1:" >&2
    cat "$1" >&2
    exit 1
}
addr_of() { grep -o '"addr":"[^"]*"' "$1" | head -n1 | cut -d'"' -f4; }

# Starts a serve listening on $2 (127.0.0.1:PORT), output in $dir/$1.*;
# leaves its pid in $serve_pid and its bound address in $serve_addr.
start_serve() {
    local name=$1 listen=$2
    "$D" serve --listen "$listen" --origin-host "$name.localdomain" \
        >"$dir/$name.out" 2>"$dir/$name.err" &
    serve_pid=$!
    pids+=("$serve_pid")
    wait_for "$dir/$name.out" '"listening"'
    serve_addr=$(addr_of "$dir/$name.out")
}

port_a=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
start_serve a "127.0.0.1:$port_a"
pid_a=$serve_pid a=$serve_addr
start_serve b 127.0.0.1:0
b=$serve_addr
start_serve c 127.0.0.1:0
c=$serve_addr
echo "failover-plot: A $a, B $b, C $c; SIGKILL A at 3 s, restart at 5 s" >&2

"$D" bench --peer "$a,$b,$c" --duration 10 --inflight 256 --retryable 0.5 --json --plot "$out" \
    >"$dir/bench.json" 2>"$dir/bench.err" &
bench=$!
pids+=("$bench")
# The bench's clock starts once its connections are up; its first progress
# line is close enough to that start for a 3 s / 5 s schedule.
sleep 3
kill -KILL "$pid_a"
wait "$pid_a" 2>/dev/null || true
echo "failover-plot: A killed" >&2
sleep 2
mv "$dir/a.out" "$dir/a.1.out"
start_serve a "127.0.0.1:$port_a"
echo "failover-plot: A restarted on $serve_addr" >&2

status=0
wait "$bench" || status=$?
if [[ $status -ne 0 ]]; then
    echo "failover-plot: diam bench exited $status:" >&2
    cat "$dir/bench.json" "$dir/bench.err" >&2
    exit 1
fi

python3 - "$dir/bench.json" "$out" <<'PY'
import json, os, sys
d = json.load(open(sys.argv[1]))
keys = ["requests", "answers", "errors_total", "errors_retryable", "errors_non_retryable", "timeouts",
        "retransmissions", "retransmissions_answered", "reroutes", "failovers", "rps"]
for k in keys:
    print(f"{k:<26} {d.get(k)}")
print(f"{'latency_us p50 / p99':<26} {d['latency_us']['p50']} / {d['latency_us']['p99']}")
for peer, p in d.get("per_peer", {}).items():
    print(f"  {peer}: answers {p.get('answers')}, connections_lost {p.get('connections_lost')}, "
          f"reopened {p.get('reopened')}")
print(f"{'chart':<26} {sys.argv[2]} ({os.path.getsize(sys.argv[2])} bytes)")
ok = d["requests"] == d["answers"] + d["errors_total"] + d["timeouts"]
print("requests == answers + errors_total + timeouts:", "yes" if ok else "NO")
sys.exit(0 if ok else 1)
PY
