#!/usr/bin/env bash
# Runs the whole test suite, interop with real peers included.
#
# Installs the real peers when they are missing (Debian packages, needs
# root for apt-get): freeDiameterd, tshark, Wireshark's dictionaries and
# Erlang/OTP diameter and ssl; python-diameter (PyPI) with pip. With the
# peers required (DIAM_REQUIRE_PEERS=1, set here), an interop test whose
# peer is missing fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=()
command -v freeDiameterd >/dev/null || packages+=(freediameter)
command -v tshark >/dev/null || packages+=(tshark)
[ -f /usr/share/wireshark/diameter/dictionary.xml ] || packages+=(libwireshark-data)
command -v erl >/dev/null || packages+=(erlang-base)
command -v diameterc >/dev/null || packages+=(erlang-diameter erlang-dev)
ls /usr/lib/erlang/lib/ssl-* >/dev/null 2>&1 || packages+=(erlang-ssl)
command -v tcpdump >/dev/null || packages+=(tcpdump)

if [ ${#packages[@]} -gt 0 ]; then
  echo "test.sh: installing missing peers: ${packages[*]}" >&2
  if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: need root to apt-get install ${packages[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >&2
fi

# python-diameter (PyPI), the third independent stack: pip, not apt.
if ! python3 -c 'import diameter' >/dev/null 2>&1; then
  echo "test.sh: installing missing peer: python-diameter==0.9.0 (pip)" >&2
  python3 -m pip install --quiet python-diameter==0.9.0 >&2 \
    || python3 -m pip install --quiet --break-system-packages python-diameter==0.9.0 >&2
fi

export DIAM_REQUIRE_PEERS=1
cargo test --workspace --locked "$@"
