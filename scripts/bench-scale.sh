#!/usr/bin/env bash
# Scale: the cost of many peers on one client. The client (`diam bench`)
# connects to PEERS ports served by two `diam serve` processes (one listener
# and one node per port, `--listen 127.0.0.1:P1-P2`), sends REQS requests per
# peer spread round-robin, then holds every connection open HOLD seconds with
# no traffic (`--hold`). The same number of requests then goes to 100 peers,
# for the per-request CPU comparison. Everything is on 127.0.0.1, every
# process separate, watchdogs at their default Tw (30 s).
#
#   scripts/bench-scale.sh [PEERS] [HOLD] [REQS]   (default 10000 60 10)
#
# Environment:
#   BASE     first listening port (default 20000: ports BASE .. BASE+PEERS-1,
#            below Linux's ephemeral range, which the client's own
#            connections use)
#   RATE     requests per second, open loop (default 20000)
#   BENCH_FLAGS  extra flags for diam bench (e.g. "--threads 1")
#
# The machine's hard limit is 20,000 descriptors a process: a server needs
# two per peer (its listener and the connection), so each serve process
# takes half the ports; the client needs one per peer.
#
# Prints one JSON object: for both runs the requests, answers and the
# client's CPU seconds during the traffic (cpu_s from /proc/self/stat) and
# per request; for the large run the hold figures (connections open, TCP
# sockets established, the client's RSS and idle CPU over the hold), the
# client's RSS per connection (its whole RSS over the connections, so the
# process's own baseline is included) and the servers' (read halfway through
# the hold); and the ratio of CPU per request, PEERS over 100. Exits 1 when
# a run loses or fails a request, or a connection is not open at the end.
#
# Needs: cargo, python3.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
peers=${1:-10000}
hold=${2:-60}
reqs=${3:-10}
base=${BASE:-20000}
rate=${RATE:-20000}
read -r -a extra <<<"${BENCH_FLAGS:-}"
small=100

if ((peers < 2 * small || peers > 16384)); then
    echo "bench-scale: PEERS must be between $((2 * small)) and 16384" >&2
    exit 2
fi
command -v python3 >/dev/null || { echo "bench-scale: python3 not found" >&2; exit 1; }
(cd "$ROOT" && cargo build --release -p diam --bin diam)
D=$ROOT/target/release/diam

dir=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

half=$((peers / 2))
lo1=$base
hi1=$((base + half - 1))
lo2=$((base + half))
hi2=$((base + peers - 1))

# Starts a serve on ports $1-$2 and waits (bounded, 60 s) for its listening
# line.
serve() {
    local lo=$1 hi=$2 out=$dir/serve.$1
    (
        ulimit -n 20000
        exec "$D" serve --listen "127.0.0.1:$lo-$hi" --origin-host "server-$lo.example.net" \
            --origin-realm example.net --max-connections 4
    ) >"$out" 2>"$out.err" &
    pids+=($!)
    local pid=$!
    for _ in $(seq 600); do
        grep -q '"event":"listening"' "$out" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "bench-scale: serve on $lo-$hi did not start:" >&2
    cat "$out.err" >&2
    exit 1
}

# The serve processes' RSS, summed (bytes).
servers_rss() {
    local sum=0 kb
    for p in "${pids[@]}"; do
        kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
        sum=$((sum + kb * 1024))
    done
    echo "$sum"
}

serve "$lo1" "$hi1"
serve "$lo2" "$hi2"

# bench PEERS-SPEC REQUESTS OUT [--hold S]: one client run.
bench() {
    local spec=$1 total=$2 out=$3
    shift 3
    local secs
    secs=$(python3 -c "print($total / $rate)")
    (
        ulimit -n 20000
        exec "$D" bench --peer "$spec" --rate "$rate" --duration "$secs" --inflight 256 --json \
            --origin-host client.example.com --origin-realm example.com --destination-realm example.net \
            "${extra[@]}" "$@"
    ) >"$out" 2>"$out.err" || {
        echo "bench-scale: diam bench failed:" >&2
        tail -n 5 "$out.err" >&2
        exit 1
    }
}

total=$((peers * reqs))
echo "bench-scale: $peers peers on ports $lo1-$hi2, $reqs requests each at $rate/s, hold ${hold} s" >&2
# During the hold, the servers' RSS is read halfway through.
bench "127.0.0.1:$lo1-$hi1,127.0.0.1:$lo2-$hi2" "$total" "$dir/large.json" --hold "$hold" &
bench_pid=$!
sleep $((hold / 2 + total / rate + 5))
servers=$(servers_rss)
wait "$bench_pid"
echo "bench-scale: $small peers, the same $total requests" >&2
bench "127.0.0.1:$lo1-$((lo1 + small / 2 - 1)),127.0.0.1:$lo2-$((lo2 + small / 2 - 1))" "$total" "$dir/small.json"

python3 - "$dir/large.json" "$dir/small.json" "$peers" "$small" "$servers" <<'PY'
import json, sys
large, small = (json.loads(open(p).read().strip().splitlines()[-1]) for p in sys.argv[1:3])
peers, small_peers, servers_rss = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
ok = True
def run(d, n):
    global ok
    errors = sum(d["errors"].values()) if isinstance(d["errors"], dict) else d["errors"]
    lost = d["requests"] - d["answers"] - errors - d["timeouts"]
    ok2001 = d["result_codes"].get("2001", 0)
    if lost or errors or d["timeouts"] or ok2001 != d["requests"]:
        ok = False
    per_req = d["cpu_s"] / d["requests"] * 1e6 if d.get("cpu_s") is not None and d["requests"] else None
    return {"peers": n, "requests": d["requests"], "answers": d["answers"], "errors": errors,
            "timeouts": d["timeouts"], "answers_2001": ok2001, "duration_s": d["duration_s"],
            "cpu_s": d.get("cpu_s"), "cpu_us_per_request": per_req and round(per_req, 2)}
r = {"large": run(large, peers), "small": run(small, small_peers)}
h = large.get("hold") or {}
r["hold"] = h
conns = h.get("connections_open") or 0
if conns:
    r["client_rss_per_connection"] = round(h["rss_bytes"] / conns)
    r["servers_rss_per_connection"] = round(servers_rss / conns)
    if conns < peers:
        ok = False
a, b = r["large"]["cpu_us_per_request"], r["small"]["cpu_us_per_request"]
if a and b:
    r["cpu_per_request_ratio"] = round(a / b, 3)
r["ok"] = ok
print(json.dumps(r, indent=1))
sys.exit(0 if ok else 1)
PY
