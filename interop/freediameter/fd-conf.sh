#!/usr/bin/env bash
# Writes a freeDiameterd 1.2.1 configuration for a TCP-only, TLS-less peer
# listening on a high port, plus the acl_wl whitelist it loads.
#
#   interop/freediameter/fd-conf.sh DIR IDENTITY PORT [OPTIONS]
#
#   --realm R             Diameter realm (default: IDENTITY minus its first label)
#   --connect ID:PORT     add ConnectPeer = "ID" { ConnectTo = "127.0.0.1"; Port = PORT; No_TLS; };
#                         (repeatable)
#   --allow DOMAIN        whitelist *.DOMAIN in acl_wl (repeatable; default: the realm)
#   --tw S                TwTimer in seconds (default 6, the freeDiameter minimum)
#   --tc S                TcTimer in seconds (default 1)
#   --listen-on ADDR      add ListenOn = "ADDR"; (freeDiameter ignores loopback
#                         addresses here, see below)
#
# Writes DIR/IDENTITY.conf and DIR/IDENTITY.acl and prints the .conf path.
# Run the daemon with:  freeDiameterd -c DIR/IDENTITY.conf
#
# Notes on freeDiameter 1.2.1 (Debian package freediameterd):
#  * `SecPort = 0;` disables the TLS listener, so no TLS_Cred is needed.
#  * `ListenOn = "127.0.0.1";` is silently dropped (fd_ep_add_merge filters
#    loopback addresses), and with no usable ListenOn the server binds
#    0.0.0.0:PORT. The daemon also needs at least one non-loopback local
#    address for Host-IP-Address, or it refuses to start ("Unable to find the
#    address(es) of the local system"). scripts/capture-fixtures.sh therefore
#    runs it in a private network namespace (unshare -n) whose only non-loopback
#    address is 198.51.100.10/32 on an isolated bridge, so nothing outside can
#    reach the wildcard listener; all traffic goes to 127.0.0.1.
#  * acl_wl: peers not named in ConnectPeer are accepted only if whitelisted.
#    ALLOW_IPSEC is what lets a peer whose CER carries no Inband-Security-Id or
#    NO_INBAND_SECURITY (0) in; ALLOW_OLD_TLS covers Inband-Security-Id TLS.
#  * TwTimer must be >= 6.
set -euo pipefail

if [[ $# -lt 3 ]]; then
    sed -n '2,16p' "$0" >&2
    exit 2
fi
dir=$1 identity=$2 port=$3
shift 3
realm=${identity#*.}
tw=6
tc=1
connects=()
allows=()
listen=()
while [[ $# -gt 0 ]]; do
    case $1 in
    --realm) realm=$2; shift 2 ;;
    --connect) connects+=("$2"); shift 2 ;;
    --allow) allows+=("$2"); shift 2 ;;
    --tw) tw=$2; shift 2 ;;
    --tc) tc=$2; shift 2 ;;
    --listen-on) listen+=("$2"); shift 2 ;;
    *) echo "fd-conf.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[[ ${#allows[@]} -gt 0 ]] || allows=("$realm")

acl_wl=""
for d in /usr/lib/freeDiameter /usr/lib/x86_64-linux-gnu/freeDiameter; do
    if [[ -f $d/acl_wl.fdx ]]; then acl_wl=$d/acl_wl.fdx; break; fi
done
if [[ -z $acl_wl ]]; then
    acl_wl=$(dpkg -L freediameter-extensions 2>/dev/null | grep '/acl_wl\.fdx$' | head -n1 || true)
fi
[[ -n $acl_wl ]] || { echo "fd-conf.sh: acl_wl.fdx not found (apt install freediameter)" >&2; exit 1; }

mkdir -p "$dir"
conf=$dir/$identity.conf
acl=$dir/$identity.acl
{
    printf 'ALLOW_OLD_TLS ALLOW_IPSEC'
    for d in "${allows[@]}"; do printf ' *.%s' "$d"; done
    printf '\n'
} >"$acl"
{
    printf 'Identity = "%s";\n' "$identity"
    printf 'Realm = "%s";\n' "$realm"
    printf 'Port = %s;\n' "$port"
    printf 'SecPort = 0;\n'
    printf 'No_SCTP;\n'
    printf 'No_IPv6;\n'
    printf 'Prefer_TCP;\n'
    for a in "${listen[@]}"; do printf 'ListenOn = "%s";\n' "$a"; done
    printf 'TcTimer = %s;\n' "$tc"
    printf 'TwTimer = %s;\n' "$tw"
    printf 'LoadExtension = "%s" : "%s";\n' "$acl_wl" "$acl"
    for c in "${connects[@]}"; do
        printf 'ConnectPeer = "%s" { ConnectTo = "127.0.0.1"; Port = %s; No_TLS; };\n' "${c%:*}" "${c##*:}"
    done
} >"$conf"
echo "$conf"
