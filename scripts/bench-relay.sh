#!/usr/bin/env bash
# Relay overhead: the standard workload (`diam bench --inflight 256`, CCR app
# 4) through three paths, every process separate, all on 127.0.0.1:
#
#   direct  diam bench -> diam serve
#   relay   diam bench -> diam relay -> diam serve
#   relay1  the same, the relay with --threads 1 (a current-thread runtime)
#   fd      diam bench -> freeDiameterd 1.2.1 (rt_default.fdx) -> diam serve
#
#   scripts/bench-relay.sh [ROUNDS] [SECONDS]     (default 3 rounds of 10 s)
#
# Each round runs the three once, in that order, so the systems alternate
# over the session. Prints one line per run, then a JSON summary: mean req/s
# per system and the ratios relay/direct and relay/freeDiameterd.
#
# Everything runs inside one private network namespace (unshare -n, needs
# root): freeDiameterd refuses to start on a machine whose only addresses
# are loopback (it needs one for Host-IP-Address), so the namespace gets an
# isolated bridge holding 198.51.100.10/32 besides lo (a dummy interface
# where the kernel has the module); nothing is routed anywhere, and all
# traffic goes to 127.0.0.1. freeDiameterd ignores a loopback ListenOn and
# listens on every address of the namespace, which is only reachable from
# inside it. The direct and relay runs are in the same namespace, so the
# three are comparable.
#
# freeDiameterd's configuration: interop/freediameter/fd-conf.sh (identity
# relay.fd.test, realm fd.test, so that Destination-Realm localdomain is not
# its own; acl_wl lets *.localdomain in; ConnectPeer to the serve with
# No_TLS) plus rt_default.fdx with the rule
#   dr="localdomain" : "serve.localdomain" += 100 ;
# No dictionary extension is loaded: a relay forwards the CCR without
# knowing the DCCA AVPs.
#
# Needs: cargo, freeDiameterd and freediameter-extensions, iproute2,
# util-linux unshare, python3.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
rounds=${1:-3}
secs=${2:-10}
inflight=256

if [[ ${BENCH_RELAY_NETNS:-} != inside ]]; then
    for tool in freeDiameterd unshare ip python3; do
        command -v "$tool" >/dev/null || { echo "bench-relay: $tool not found" >&2; exit 1; }
    done
    (cd "$ROOT" && cargo build --release -p diam)
    if ! unshare -n true 2>/dev/null; then
        echo "bench-relay: cannot create a network namespace (unshare -n needs root)" >&2
        exit 1
    fi
    exec env BENCH_RELAY_NETNS=inside unshare -n -- bash "$0" "$rounds" "$secs"
fi

# --- inside the namespace ---------------------------------------------------
ip link set lo up
if ip link add brl0 type dummy 2>/dev/null || ip link add brl0 type bridge; then
    ip addr add 198.51.100.10/32 dev brl0
    ip link set brl0 up
fi

D=$ROOT/target/release/diam
dir=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

# Waits (bounded) for a line matching $2 in file $1.
wait_for() {
    for _ in $(seq 150); do
        grep -q -- "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "bench-relay: no '$2' in $1:" >&2
    cat "$1" >&2
    exit 1
}
addr_of() { grep -o '"addr":"[^"]*"' "$1" | head -n1 | cut -d'"' -f4; }

"$D" serve --listen 127.0.0.1:0 --origin-host serve.localdomain >"$dir/serve.out" 2>"$dir/serve.err" &
pids+=($!)
wait_for "$dir/serve.out" '"listening"'
serve=$(addr_of "$dir/serve.out")

"$D" relay --listen 127.0.0.1:0 --route "localdomain=$serve" >"$dir/relay.out" 2>"$dir/relay.err" &
pids+=($!)
wait_for "$dir/relay.out" '"listening"'
wait_for "$dir/relay.out" '"peer_up","peer":"serve.localdomain"'
relay=$(addr_of "$dir/relay.out")

"$D" relay --listen 127.0.0.1:0 --threads 1 --origin-host diam-relay1.localdomain \
    --route "localdomain=$serve" >"$dir/relay1.out" 2>"$dir/relay1.err" &
pids+=($!)
wait_for "$dir/relay1.out" '"listening"'
wait_for "$dir/relay1.out" '"peer_up","peer":"serve.localdomain"'
relay1=$(addr_of "$dir/relay1.out")

fd_port=3868
conf=$("$ROOT/interop/freediameter/fd-conf.sh" "$dir" relay.fd.test "$fd_port" \
    --allow localdomain --connect "serve.localdomain:${serve##*:}")
echo 'dr="localdomain" : "serve.localdomain" += 100 ;' >"$dir/rt_default.conf"
rt_default=/usr/lib/freeDiameter/rt_default.fdx
[[ -f $rt_default ]] || rt_default=$(dpkg -L freediameter-extensions | grep '/rt_default\.fdx$' | head -n1)
printf 'LoadExtension = "%s" : "%s";\n' "$rt_default" "$dir/rt_default.conf" >>"$conf"
freeDiameterd -c "$conf" >"$dir/fd.log" 2>&1 &
pids+=($!)
wait_for "$dir/fd.log" "-> 'STATE_OPEN'.*'serve.localdomain'"
fd=127.0.0.1:$fd_port

echo "bench-relay: $rounds rounds of $secs s at --inflight $inflight; serve $serve, diam relay $relay, freeDiameterd $fd" >&2
for i in $(seq "$rounds"); do
    for sys in direct relay relay1 fd; do
        case $sys in
        direct) peer=$serve ;;
        relay) peer=$relay ;;
        relay1) peer=$relay1 ;;
        fd) peer=$fd ;;
        esac
        out=$dir/$sys.$i.json
        "$D" bench --peer "$peer" --inflight "$inflight" --duration "$secs" --json >"$out" 2>"$dir/$sys.$i.err" || {
            echo "bench-relay: diam bench via $sys failed:" >&2
            cat "$out" "$dir/$sys.$i.err" >&2
            exit 1
        }
        python3 - "$out" "$sys" "$i" >>"$dir/runs.jsonl" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
r = {"system": sys.argv[2], "round": int(sys.argv[3]), "rps": d["rps"],
     "requests": d["requests"], "answers": d["answers"], "errors": d["errors_total"],
     "timeouts": d["timeouts"], "result_codes": d["result_codes"],
     "p50_us": d["latency_us"]["p50"], "p99_us": d["latency_us"]["p99"]}
print(json.dumps(r))
print(f"round {r['round']} {r['system']:<6} {r['rps']:>7} req/s  p50 {r['p50_us']:>6} us  p99 {r['p99_us']:>6} us"
      f"  errors {r['errors']}  timeouts {r['timeouts']}  result codes {r['result_codes']}", file=sys.stderr)
PY
    done
done

# The serve's own count of what it answered, against the clients' 2001s.
kill -TERM "${pids[0]}"
wait "${pids[0]}" 2>/dev/null || true
python3 - "$dir/runs.jsonl" "$dir/serve.out" "$secs" "$inflight" <<'PY'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
stopped = [json.loads(l) for l in open(sys.argv[2]) if '"stopped"' in l]
mean = lambda xs: sum(xs) / len(xs) if xs else 0
def stats(s):
    rs = [r for r in runs if r["system"] == s]
    return {"runs": [r["rps"] for r in rs], "mean_rps": round(mean([r["rps"] for r in rs])),
            "mean_p50_us": round(mean([r["p50_us"] for r in rs])), "mean_p99_us": round(mean([r["p99_us"] for r in rs])),
            "errors": sum(r["errors"] for r in rs), "timeouts": sum(r["timeouts"] for r in rs)}
systems = {"direct": stats("direct"), "diam_relay": stats("relay"), "diam_relay_threads_1": stats("relay1"),
           "freediameterd": stats("fd")}
d, r, r1, f = (systems[k]["mean_rps"] for k in ("direct", "diam_relay", "diam_relay_threads_1", "freediameterd"))
ok_2001 = sum(r.get("result_codes", {}).get("2001", 0) for r in runs)
summary = {
    "duration_s": float(sys.argv[3]), "inflight": int(sys.argv[4]), "rounds": len(runs) // 4,
    "systems": systems,
    "ratio_relay_over_direct": round(r / d, 3) if d else None,
    "ratio_relay_over_freediameterd": round(r / f, 3) if f else None,
    "ratio_relay_threads_1_over_direct": round(r1 / d, 3) if d else None,
    "ratio_relay_threads_1_over_freediameterd": round(r1 / f, 3) if f else None,
    "client_2001_total": ok_2001,
    "serve_answers_total": stopped[0]["answers"] if stopped else None,
}
# Every 2001 a client got was produced by the one serve (counted there).
summary["counts_agree"] = summary["serve_answers_total"] == ok_2001
print(json.dumps(summary, indent=2))
sys.exit(0 if summary["counts_agree"] else 1)
PY
