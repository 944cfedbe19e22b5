#!/usr/bin/env bash
# Writes a freeDiameterd 1.2.1 configuration for a peer listening on a high
# port (TCP only; TLS-less unless --tls is given), plus the acl_wl whitelist
# it loads.
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
#   --tls CERT KEY CA     enable TLS: TLS_Cred = "CERT", "KEY"; TLS_CA = "CA";
#                         (PEM files, written as absolute paths; see TLS notes)
#   --sec-port P          SecPort = P; the TLS-first (RFC 6733) listening port
#                         (needs --tls; default 0 = no TLS listener, even with --tls)
#   --tls-prio S          TLS_Prio = "S"; GnuTLS priority string (needs --tls;
#                         default: not written, freeDiameter then uses "NORMAL"),
#                         e.g. "NORMAL:-VERS-TLS1.3" to force TLS 1.2
#   --connect-tls ID:PORT add ConnectPeer = "ID" { ConnectTo = "127.0.0.1"; Port = PORT; };
#                         TLS-first: TLS handshake right after the TCP connect,
#                         then CER/CEA inside TLS (needs --tls; repeatable)
#   --connect-inband ID:PORT
#                         add ConnectPeer = "ID" { ConnectTo = "127.0.0.1"; Port = PORT; TLS_old_method; };
#                         RFC 3588 in-band TLS: clear CER with Inband-Security-Id
#                         1 (TLS) only, TLS handshake after a CEA that carries
#                         Inband-Security-Id 1 (needs --tls; repeatable)
#   --allow-inband DOMAIN whitelist *.DOMAIN with ALLOW_OLD_TLS only, i.e. require
#                         in-band TLS from those peers (a separate acl_wl line;
#                         DOMAIN must not also be covered by --allow, see below;
#                         repeatable; when given without --allow, the realm is
#                         no longer whitelisted by default)
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
#
# TLS notes (freeDiameter 1.2.1 + GnuTLS 3.7.9, checked in its source and live):
#  * TLS_Cred: the daemon refuses to start unless its own certificate verifies
#    against TLS_CA and matches its Identity (gnutls_x509_crt_check_hostname on
#    Identity: SAN DNS or, without SAN, CN). The CERT file must be sorted
#    (leaf first) and so must the CA file. EC P-256 and RSA 2048 keys both
#    work, PKCS#8 or traditional PEM, unencrypted.
#  * TLS_Prio default "NORMAL": TLS 1.3 and 1.2 are negotiated (1.3 when the
#    peer offers it); 1.0/1.1 are also allowed by GnuTLS's NORMAL.
#  * As TLS server (SecPort, or in-band after its CEA) it always requires a
#    client certificate (GNUTLS_CERT_REQUIRE) and verifies it against TLS_CA;
#    it does NOT compare the client certificate with the CER's Origin-Host.
#  * As TLS client (--connect-tls, --connect-inband) it sends SNI = the
#    ConnectPeer identity and requires the server certificate to verify
#    against TLS_CA and to match that identity (SAN DNS / CN; an IP SAN is
#    not enough).
#  * A peer that connects to the SecPort must still be whitelisted (ConnectPeer
#    or acl_wl); any acl_wl flags (or none) do once TLS is in place.
#  * In-band TLS as server (peer's CER carries Inband-Security-Id 1): the peer
#    must be whitelisted with ALLOW_OLD_TLS and *without* ALLOW_IPSEC
#    (--allow-inband). With both flags (what --allow writes) acl_wl downgrades
#    to IPsec (no TLS): the CEA carries no Inband-Security-Id, so the link
#    would stay clear (OTP's diameter refuses it: no_common_security). Entries for the same name merge their flags, and
#    a `*.DOMAIN` entry supersedes more specific ones, so keep --allow and
#    --allow-inband domains disjoint.
#  * A rejected TLS peer gets no alert: the socket is just closed (with TLS
#    1.3 the client has already finished its side of the handshake by then).
#  * freeDiameterd 1.2.1 aborts (p_psm.c:447: Assertion `cur_state !=
#    STATE_OPEN_HANDSHAKE' failed) when an in-band TLS handshake fails, as
#    client or as server (e.g. untrusted or misnamed certificate). Failed
#    TLS-first handshakes are logged and survived.
#  * Do not write the global `TLS_old_method;`: it would make every
#    ConnectPeer (even --connect-tls) use in-band TLS on the given port.
set -euo pipefail

if [[ $# -lt 3 ]]; then
    sed -n '2,37p' "$0" >&2
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
tls=()
sec_port=0
tls_prio=""
connects_tls=()
connects_inband=()
allows_inband=()
abspath() { printf '%s/%s' "$(cd "$(dirname "$1")" && pwd)" "$(basename "$1")"; }
while [[ $# -gt 0 ]]; do
    case $1 in
    --realm) realm=$2; shift 2 ;;
    --connect) connects+=("$2"); shift 2 ;;
    --allow) allows+=("$2"); shift 2 ;;
    --tw) tw=$2; shift 2 ;;
    --tc) tc=$2; shift 2 ;;
    --listen-on) listen+=("$2"); shift 2 ;;
    --tls)
        [[ $# -ge 4 ]] || { echo "fd-conf.sh: --tls needs CERT KEY CA" >&2; exit 2; }
        for f in "$2" "$3" "$4"; do
            [[ -f $f ]] || { echo "fd-conf.sh: --tls: $f: no such file" >&2; exit 2; }
        done
        tls=("$(abspath "$2")" "$(abspath "$3")" "$(abspath "$4")"); shift 4 ;;
    --sec-port) sec_port=$2; shift 2 ;;
    --tls-prio) tls_prio=$2; shift 2 ;;
    --connect-tls) connects_tls+=("$2"); shift 2 ;;
    --connect-inband) connects_inband+=("$2"); shift 2 ;;
    --allow-inband) allows_inband+=("$2"); shift 2 ;;
    *) echo "fd-conf.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[[ ${#allows[@]} -gt 0 || ${#allows_inband[@]} -gt 0 ]] || allows=("$realm")
if [[ ${#tls[@]} -eq 0 ]]; then
    for o in sec_port:--sec-port tls_prio:--tls-prio; do
        v=${o%%:*}
        if [[ -n ${!v} && ${!v} != 0 ]]; then echo "fd-conf.sh: ${o#*:} needs --tls" >&2; exit 2; fi
    done
    if [[ ${#connects_tls[@]} -gt 0 || ${#connects_inband[@]} -gt 0 ]]; then
        echo "fd-conf.sh: --connect-tls/--connect-inband need --tls" >&2; exit 2
    fi
fi

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
    if [[ ${#allows_inband[@]} -gt 0 ]]; then
        printf 'ALLOW_OLD_TLS'
        for d in "${allows_inband[@]}"; do printf ' *.%s' "$d"; done
        printf '\n'
    fi
} >"$acl"
{
    printf 'Identity = "%s";\n' "$identity"
    printf 'Realm = "%s";\n' "$realm"
    printf 'Port = %s;\n' "$port"
    printf 'SecPort = %s;\n' "$sec_port"
    if [[ ${#tls[@]} -gt 0 ]]; then
        printf 'TLS_Cred = "%s", "%s";\n' "${tls[0]}" "${tls[1]}"
        printf 'TLS_CA = "%s";\n' "${tls[2]}"
        [[ -z $tls_prio ]] || printf 'TLS_Prio = "%s";\n' "$tls_prio"
    fi
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
    for c in "${connects_tls[@]}"; do
        printf 'ConnectPeer = "%s" { ConnectTo = "127.0.0.1"; Port = %s; };\n' "${c%:*}" "${c##*:}"
    done
    for c in "${connects_inband[@]}"; do
        printf 'ConnectPeer = "%s" { ConnectTo = "127.0.0.1"; Port = %s; TLS_old_method; };\n' "${c%:*}" "${c##*:}"
    done
} >"$conf"
echo "$conf"
