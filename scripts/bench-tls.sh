#!/usr/bin/env bash
# TLS against plaintext: `diam bench --inflight 256` against one `diam serve`
# (separate processes) listening on both, runs alternating in one go.
#
#   scripts/bench-tls.sh [PAIRS] [SECONDS]      (default 4 pairs of 10 s)
#
# Certificates (a CA, a server and a client, EC P-256) are made with the
# openssl CLI in a temporary directory. Prints one line per run and the
# means; the release binary is built first.
set -euo pipefail
cd "$(dirname "$0")/.."
pairs=${1:-4}
secs=${2:-10}
cargo build --release -q -p diam
D=$PWD/target/release/diam
dir=$(mktemp -d)
trap 'kill "${serve:-}" 2>/dev/null || true; rm -rf "$dir"' EXIT
cd "$dir"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 -subj "/CN=Bench CA" 2>/dev/null
for n in server client; do
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $n.key -out $n.csr -subj "/CN=$n.bench.test" 2>/dev/null
  printf "subjectAltName=DNS:$n.bench.test,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n" >$n.ext
  openssl x509 -req -in $n.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $n.pem -days 2 -extfile $n.ext 2>/dev/null
done
$D serve --listen 127.0.0.1:0 --tls-listen 127.0.0.1:0 --origin-host server.bench.test --origin-realm bench.test \
  --allow '*.bench.test' --tls-cert server.pem --tls-key server.key --tls-ca ca.pem >serve.out 2>serve.err &
serve=$!
for _ in $(seq 50); do grep -q listening serve.out 2>/dev/null && break; sleep 0.1; done
plain=$(grep -o '"addr":"[^"]*"' serve.out | head -1 | cut -d'"' -f4)
tls=$(grep -o '"tls_addr":"[^"]*"' serve.out | cut -d'"' -f4)
tlsargs=(--tls-cert client.pem --tls-key client.key --tls-ca ca.pem)
for i in $(seq "$pairs"); do
  for mode in plain tls; do
    if [ $mode = tls ]; then peer="aaas://$tls"; extra=("${tlsargs[@]}"); else peer=$plain; extra=(); fi
    $D bench --peer "$peer" "${extra[@]}" --inflight 256 --duration "$secs" --json \
      --origin-host client.bench.test --origin-realm bench.test >$mode.$i.json
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[2], sys.argv[3], d['rps'], 'req/s, errors', d['errors_total'], 'timeouts', d['timeouts'], 'p50/p99 us', d['latency_us']['p50'], d['latency_us']['p99'])" $mode.$i.json $mode $i
  done
done | tee runs.txt
python3 - <<'PY'
rows = [l.split() for l in open("runs.txt")]
mean = lambda m: sum(int(r[2]) for r in rows if r[0] == m) / max(1, sum(1 for r in rows if r[0] == m))
p, t = mean("plain"), mean("tls")
print(f"mean plain {p:,.0f} req/s, TLS {t:,.0f} req/s: TLS at {100 * t / p:.0f} % of plaintext")
PY
