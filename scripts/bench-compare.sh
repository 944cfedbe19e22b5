#!/usr/bin/env bash
# Separate-process comparison: the standard workload (DESIGN.md, "Standard
# benchmark workload") with client and server as separate processes, one TCP
# connection on 127.0.0.1, N requests in flight, beside the `diameter` crate
# 0.7.1 (diameter-rs) and a raw TCP echo of fixed 200-byte frames in the same
# run:
#
#   raw           compare_peer raw-server  <- compare_peer raw-client
#   diameter-rs   compare_peer drs-server  <- compare_peer drs-client
#   diam          diam serve               <- diam bench
#   diam-NAME     the same with the flags of each DIAM_VARIANTS entry
#
#   scripts/bench-compare.sh [ROUNDS] [SECONDS]    (default 3 rounds of 5 s)
#
# Environment:
#   INFLIGHT       in-flight levels (default "1 16 256")
#   DIAM_VARIANTS  extra diam runs, NAME:FLAGS separated by ';', the flags
#                  given to both diam serve and diam bench (default
#                  "t1:--threads 1;t2:--threads 2"; empty for none). A
#                  variant whose flags neither --help lists is skipped with a
#                  message on stderr.
#   WARMUP_MS      warm-up of the raw and diameter-rs clients before their
#                  window (default 0: diam bench has none, so by default all
#                  three count from their first request)
#
# For each level and round every system runs once, in an order rotated by
# round, each run with a fresh server and client. One line per run goes to
# stderr; then, per level, a table on stdout of median req/s, p50 and p99 (µs)
# per system with the ratios diam/diameter-rs and diam/raw (req/s) and
# diam/raw (p99) for every diam row, and at the end one JSON object with all
# medians and ratios. A run whose client fails, or reports failures, errors
# or timeouts, is reported as failed and left out of the medians (its count
# is in the table and the JSON); the script then exits 1.
#
# The raw echo is the physical reference: the loopback and syscall cost of
# moving the same number of frames of about a CCR's size, with no parsing.
# compare_peer (crates/diam/examples/compare_peer.rs) holds the raw and the
# diameter-rs halves; the diameter-rs code is the one benches/compare.rs (the
# in-process comparison) runs.
#
# Needs: cargo, python3.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
rounds=${1:-3}
secs=${2:-5}
read -r -a levels <<<"${INFLIGHT:-1 16 256}"
variants_spec=${DIAM_VARIANTS-t1:--threads 1;t2:--threads 2}
warmup_ms=${WARMUP_MS:-0}

command -v python3 >/dev/null || { echo "bench-compare: python3 not found" >&2; exit 1; }
(cd "$ROOT" && cargo build --release -p diam --bin diam --example compare_peer)
D=$ROOT/target/release/diam
P=$ROOT/target/release/examples/compare_peer

dir=$(mktemp -d)
server_pid=
client_pid=
cleanup() {
    for p in $client_pid $server_pid; do
        kill "$p" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The systems, in table order; variant flags by system name.
systems=(raw diameter-rs diam)
declare -A flags=([diam]="")
serve_help=$("$D" serve --help)
bench_help=$("$D" bench --help)
IFS=';' read -r -a specs <<<"$variants_spec"
for spec in "${specs[@]}"; do
    [[ -n ${spec// /} ]] || continue
    name=${spec%%:*}
    vflags=${spec#*:}
    if [[ $name == "$spec" || -z $name ]]; then
        echo "bench-compare: DIAM_VARIANTS entry '$spec' is not NAME:FLAGS" >&2
        exit 2
    fi
    missing=
    for f in $vflags; do
        [[ $f == --* ]] || continue
        grep -q -- "${f%%=*}\b" <<<"$serve_help" || missing+=" serve:$f"
        grep -q -- "${f%%=*}\b" <<<"$bench_help" || missing+=" bench:$f"
    done
    if [[ -n $missing ]]; then
        echo "bench-compare: skipping variant diam-$name ($vflags): not in --help of$missing" >&2
        continue
    fi
    systems+=("diam-$name")
    flags[diam-$name]=$vflags
done

# Waits (bounded, 15 s) for the listening line of server $1 (output file $2)
# and prints its address.
wait_listening() {
    local pid=$1 out=$2
    for _ in $(seq 150); do
        if grep -q '"event":"listening"' "$out" 2>/dev/null; then
            grep -o '"addr":"[^"]*"' "$out" | head -n1 | cut -d'"' -f4
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "bench-compare: no listening line from the server:" >&2
    cat "$out" "$out.err" >&2 || true
    return 1
}

# Stops the server: SIGTERM, then (after 5 s) SIGKILL.
stop_server() {
    [[ -n $server_pid ]] || return 0
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
}

# run SYSTEM INFLIGHT ROUND: one run; appends its normalised line to runs.jsonl.
run() {
    local sys=$1 n=$2 i=$3
    local tag=$dir/$sys.$n.$i
    local -a vf
    read -r -a vf <<<"${flags[$sys]:-}"
    case $sys in
    raw) "$P" raw-server --listen 127.0.0.1:0 >"$tag.srv" 2>"$tag.srv.err" & ;;
    diameter-rs) "$P" drs-server --listen 127.0.0.1:0 >"$tag.srv" 2>"$tag.srv.err" & ;;
    diam | diam-*)
        "$D" serve --listen 127.0.0.1:0 --origin-host server.example.net --origin-realm example.net "${vf[@]}" \
            >"$tag.srv" 2>"$tag.srv.err" &
        ;;
    esac
    server_pid=$!
    local addr rc=0
    addr=$(wait_listening "$server_pid" "$tag.srv") || exit 1
    case $sys in
    raw) "$P" raw-client --peer "$addr" --inflight "$n" --duration "$secs" --warmup-ms "$warmup_ms" ;;
    diameter-rs) "$P" drs-client --peer "$addr" --inflight "$n" --duration "$secs" --warmup-ms "$warmup_ms" ;;
    diam | diam-*)
        "$D" bench --peer "$addr" --inflight "$n" --duration "$secs" --json \
            --origin-host client.example.com --origin-realm example.com --destination-realm example.net "${vf[@]}"
        ;;
    esac >"$tag.out" 2>"$tag.err" &
    client_pid=$!
    wait "$client_pid" || rc=$?
    client_pid=
    stop_server
    python3 - "$tag.out" "$sys" "$n" "$i" "$rc" "$tag.err" >>"$dir/runs.jsonl" <<'PY'
import json, re, sys
out, system, n, rnd, rc, err = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
r = {"system": system, "inflight": n, "round": rnd, "ok": False}
try:
    lines = [l for l in open(out) if l.strip()]
    d = json.loads(lines[-1])
except (OSError, IndexError, ValueError) as e:
    d, r["problem"] = None, f"no report ({e.__class__.__name__})"
if d is not None:
    if "latency_us" in d:  # diam bench
        errors = d.get("errors_total", d.get("errors", 0))
        errors = errors if isinstance(errors, int) else sum(errors.values())
        ok_2001 = d.get("result_codes", {}).get("2001", 0)
        r.update(rps=d["rps"], p50=d["latency_us"]["p50"], p99=d["latency_us"]["p99"], answers=d["answers"],
                 requests=d["requests"], failures=errors + d["timeouts"] + (d["answers"] - ok_2001),
                 errors=errors, timeouts=d["timeouts"])
    else:  # compare_peer
        r.update(rps=d["rps"], p50=d["p50"], p99=d["p99"], answers=d["answers"], failures=d["failures"])
    problems = []
    if rc != 0:
        problems.append(f"client exit status {rc}")
    if r["failures"]:
        problems.append(f"{r['failures']} failures")
    if not r["answers"]:
        problems.append("no answers")
    r["ok"] = not problems
    if problems:
        r["problem"] = ", ".join(problems)
elif rc != 0:
    r["problem"] += f", client exit status {rc}"
if not r["ok"]:
    try:
        r["stderr_tail"] = re.sub(r"\x1b\[[0-9;]*m", "", open(err).read())[-400:]
    except OSError:
        pass
print(json.dumps(r))
if "rps" in r:
    line = (f"inflight {n:>4} round {rnd} {system:<12} {r['rps']:>9.0f} req/s  p50 {r['p50']:>6} us"
            f"  p99 {r['p99']:>6} us  answers {r['answers']}  failures {r['failures']}")
else:
    line = f"inflight {n:>4} round {rnd} {system:<12} FAILED"
if not r["ok"]:
    line += f"  FAILED: {r['problem']}"
    if r.get("stderr_tail"):
        line += "\n    " + r["stderr_tail"].strip().replace("\n", "\n    ")
print(line, file=sys.stderr)
PY
}

echo "bench-compare: ${levels[*]} in flight; $rounds round(s) of $secs s; systems ${systems[*]}" >&2
for n in "${levels[@]}"; do
    for i in $(seq "$rounds"); do
        k=${#systems[@]}
        for j in $(seq 0 $((k - 1))); do
            run "${systems[$(((j + i - 1) % k))]}" "$n" "$i"
        done
    done
done

python3 - "$dir/runs.jsonl" "$rounds" "$secs" "$warmup_ms" "${systems[@]}" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
rounds, secs, warmup_ms, systems = int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5:]
levels = sorted({r["inflight"] for r in runs})
med = lambda xs: statistics.median(xs) if xs else None
ratio = lambda a, b: round(a / b, 3) if a is not None and b else None
summary = {"rounds": rounds, "duration_s": secs, "warmup_ms": warmup_ms, "levels": {}}
failed_total = 0
for n in levels:
    level = {}
    for s in systems:
        rs = [r for r in runs if r["system"] == s and r["inflight"] == n]
        good = [r for r in rs if r["ok"]]
        failed_total += len(rs) - len(good)
        level[s] = {"runs": len(rs), "failed_runs": len(rs) - len(good),
                    "rps": [r["rps"] for r in good],
                    "median_rps": med([r["rps"] for r in good]),
                    "median_p50_us": med([r["p50"] for r in good]),
                    "median_p99_us": med([r["p99"] for r in good])}
    raw, drs = level["raw"], level["diameter-rs"]
    ratios = {}
    for s in systems:
        if s == "diam" or s.startswith("diam-"):
            m = level[s]
            ratios[s] = {"rps_over_diameter_rs": ratio(m["median_rps"], drs["median_rps"]),
                         "rps_over_raw": ratio(m["median_rps"], raw["median_rps"]),
                         "p99_over_raw": ratio(m["median_p99_us"], raw["median_p99_us"])}
    summary["levels"][str(n)] = {"systems": level, "ratios": ratios}

    fmt = lambda v, spec: format("-", ">" + spec.lstrip(">").rstrip("f").split(".")[0]) if v is None else format(v, spec)
    print(f"\nin flight {n}: medians of {rounds} run(s) of {secs:g} s")
    print(f"  {'system':<14} {'req/s':>10} {'p50 us':>8} {'p99 us':>8} {'failed':>6}"
          f"  {'/diameter-rs':>12} {'/raw':>6} {'p99/raw':>8}")
    for s in systems:
        m = level[s]
        row = (f"  {s:<14} {fmt(m['median_rps'], '10.0f')} {fmt(m['median_p50_us'], '>8')} "
               f"{fmt(m['median_p99_us'], '>8')} {m['failed_runs']:>6}")
        if s in ratios:
            q = ratios[s]
            row += (f"  {fmt(q['rps_over_diameter_rs'], '12.2f')} {fmt(q['rps_over_raw'], '6.2f')}"
                    f" {fmt(q['p99_over_raw'], '8.2f')}")
        print(row)
summary["failed_runs"] = failed_total
print()
print(json.dumps(summary))
sys.exit(1 if failed_total else 0)
PY
