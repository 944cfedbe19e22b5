//! Peer addresses: DiameterURIs (RFC 6733 §4.3.1) and `host:port`.
//!
//! A [`PeerAddr`] is what a user writes to name a peer's transport
//! address. Every form parses into one normalized value:
//!
//! | form | example |
//! |---|---|
//! | `host:port` | `ocs.example.net:3868` |
//! | IPv4 literal | `127.0.0.1:3868` |
//! | IPv6 literal | `[::1]:3868` |
//! | DiameterURI, no transport security | `aaa://ocs.example.net:3868;transport=tcp` |
//! | DiameterURI, TLS first | `aaas://ocs.example.net` |
//!
//! A DiameterURI without a port uses 3868 for `aaa://` and 5658 for
//! `aaas://`, the ports IANA registered for Diameter over TCP and over
//! TLS/TCP (RFC 6733 §4.3.1 and §11.4). Hostnames are kept as written
//! (lowercased) and resolved by the driver at each dial, so a DNS change
//! takes effect on the next connection.
//!
//! ```
//! use diam_proto::uri::{PeerAddr, Scheme, Transport};
//! let a: PeerAddr = "aaa://ocs.example.net;transport=tcp".parse()?;
//! assert_eq!((a.scheme(), a.port(), a.transport()), (Scheme::Aaa, 3868, Transport::Tcp));
//! assert_eq!(a.host(), "ocs.example.net");
//! let b: PeerAddr = "[::1]:3869".parse()?;
//! assert_eq!(b.to_string(), "[::1]:3869");
//! assert_eq!(PeerAddr::from(std::net::SocketAddr::from(([127, 0, 0, 1], 3868))).to_string(), "127.0.0.1:3868");
//! # Ok::<(), diam_proto::uri::AddrError>(())
//! ```

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// The port IANA registered for Diameter over TCP and SCTP (RFC 6733 §11.4).
pub const DIAMETER_PORT: u16 = 3868;
/// The port IANA registered for Diameter over TLS/TCP and DTLS/SCTP
/// (service name `diameters`, RFC 6733 §11.4).
pub const DIAMETER_TLS_PORT: u16 = 5658;

/// Whether the transport is secured from its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheme {
    /// `aaa://` or `host:port`: no transport security (or in-band TLS
    /// negotiated after CER/CEA, RFC 3588 §13.1).
    Aaa,
    /// `aaas://`: TLS from the first byte (RFC 6733 §13).
    Aaas,
}

/// The transport protocol of a DiameterURI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// TCP (the default).
    Tcp,
    /// SCTP: parsed so that configurations using it get a clear error
    /// from the connector rather than a parse failure.
    Sctp,
}

/// The host part: an IP literal or a name resolved at each dial.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Host {
    Ip(IpAddr),
    Name(Box<str>),
}

/// A peer's transport address. See the [module docs](self) for the forms.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerAddr {
    scheme: Scheme,
    host: Host,
    port: u16,
    transport: Transport,
    /// Written as a DiameterURI (kept for display).
    uri: bool,
}

/// Why a peer address did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("peer address {input:?}: {reason}")]
pub struct AddrError {
    input: String,
    reason: &'static str,
}

impl AddrError {
    fn new(input: &str, reason: &'static str) -> Self {
        // Inputs come from users and peers: keep error messages bounded.
        let input: String = input.chars().take(128).collect();
        AddrError { input, reason }
    }

    /// What was wrong with it.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl PeerAddr {
    /// A TCP address with no transport security.
    pub fn tcp(ip: IpAddr, port: u16) -> Self {
        PeerAddr { scheme: Scheme::Aaa, host: Host::Ip(ip), port, transport: Transport::Tcp, uri: false }
    }

    /// `aaa://` or `aaas://`.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The host as written (lowercased), or the IP literal's text
    /// (without brackets).
    pub fn host(&self) -> std::borrow::Cow<'_, str> {
        match &self.host {
            Host::Name(n) => std::borrow::Cow::Borrowed(n),
            Host::Ip(ip) => std::borrow::Cow::Owned(ip.to_string()),
        }
    }

    /// The IP address when the host is a literal.
    pub fn ip(&self) -> Option<IpAddr> {
        match self.host {
            Host::Ip(ip) => Some(ip),
            Host::Name(_) => None,
        }
    }

    /// The socket address when the host is a literal (no resolution needed).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.ip().map(|ip| SocketAddr::new(ip, self.port))
    }

    /// The host name when it is not an IP literal.
    pub fn host_name(&self) -> Option<&str> {
        match &self.host {
            Host::Name(n) => Some(n),
            Host::Ip(_) => None,
        }
    }

    /// The port (explicit, or the scheme's default).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The transport protocol.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// Whether the transport is TLS from the first byte (`aaas://`).
    pub fn is_tls(&self) -> bool {
        self.scheme == Scheme::Aaas
    }

    /// The DiameterURI form, e.g. `aaa://127.0.0.1:3868;transport=tcp`.
    pub fn to_uri(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Aaa => "aaa",
            Scheme::Aaas => "aaas",
        };
        let transport = match self.transport {
            Transport::Tcp => "tcp",
            Transport::Sctp => "sctp",
        };
        format!("{scheme}://{}:{};transport={transport}", HostDisplay(&self.host), self.port)
    }
}

struct HostDisplay<'a>(&'a Host);

impl fmt::Display for HostDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Host::Ip(IpAddr::V6(v6)) => write!(f, "[{v6}]"),
            Host::Ip(IpAddr::V4(v4)) => write!(f, "{v4}"),
            Host::Name(n) => f.write_str(n),
        }
    }
}

impl fmt::Display for PeerAddr {
    /// `host:port` for the plain form, the DiameterURI otherwise (the
    /// transport parameter is written only when it is not TCP).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.uri || self.scheme == Scheme::Aaas || self.transport != Transport::Tcp {
            let scheme = if self.scheme == Scheme::Aaas { "aaas" } else { "aaa" };
            write!(f, "{scheme}://{}:{}", HostDisplay(&self.host), self.port)?;
            if self.transport == Transport::Sctp {
                f.write_str(";transport=sctp")?;
            }
            Ok(())
        } else {
            write!(f, "{}:{}", HostDisplay(&self.host), self.port)
        }
    }
}

impl From<SocketAddr> for PeerAddr {
    fn from(a: SocketAddr) -> Self {
        PeerAddr::tcp(a.ip(), a.port())
    }
}

/// Whether `s` is a host name we accept: dot-separated labels of letters,
/// digits, hyphens and underscores, each 1 to 63 octets, 255 in all
/// (RFC 1035 §2.3.4, with the underscore that real deployments use).
fn valid_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.split('.').all(|l| {
            !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn parse_host(input: &str, host: &str) -> Result<Host, AddrError> {
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or_else(|| AddrError::new(input, "unclosed '[' in the host"))?;
        return inner
            .parse::<std::net::Ipv6Addr>()
            .map(|v6| Host::Ip(IpAddr::V6(v6)))
            .map_err(|_| AddrError::new(input, "bad IPv6 literal"));
    }
    if let Ok(v4) = host.parse::<std::net::Ipv4Addr>() {
        return Ok(Host::Ip(IpAddr::V4(v4)));
    }
    if !valid_host_name(host) {
        return Err(AddrError::new(input, "the host is not a valid name or IP literal"));
    }
    Ok(Host::Name(host.to_ascii_lowercase().into_boxed_str()))
}

/// Splits `host[:port]`, where the host may be a bracketed IPv6 literal.
fn split_host_port<'a>(input: &str, s: &'a str) -> Result<(&'a str, Option<&'a str>), AddrError> {
    if s.starts_with('[') {
        let end = s.find(']').ok_or_else(|| AddrError::new(input, "unclosed '[' in the host"))?;
        let (host, rest) = s.split_at(end + 1);
        return match rest {
            "" => Ok((host, None)),
            r => match r.strip_prefix(':') {
                Some(p) => Ok((host, Some(p))),
                None => Err(AddrError::new(input, "unexpected text after the IPv6 literal")),
            },
        };
    }
    match s.rsplit_once(':') {
        Some((h, _)) if h.contains(':') => Err(AddrError::new(input, "an IPv6 literal must be written in brackets")),
        Some((h, p)) => Ok((h, Some(p))),
        None => Ok((s, None)),
    }
}

fn parse_port(input: &str, p: &str) -> Result<u16, AddrError> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AddrError::new(input, "the port must be a number from 1 to 65535"));
    }
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(AddrError::new(input, "the port must be a number from 1 to 65535")),
        Ok(n) => Ok(n),
    }
}

impl FromStr for PeerAddr {
    type Err = AddrError;

    fn from_str(input: &str) -> Result<Self, AddrError> {
        let s = input.trim();
        if s.len() > 1024 {
            return Err(AddrError::new(s, "too long"));
        }
        let lower = s.get(..7).map(str::to_ascii_lowercase).unwrap_or_default();
        let (scheme, rest) = if lower.starts_with("aaas://") {
            (Some(Scheme::Aaas), &s[7..])
        } else if lower.starts_with("aaa://") {
            (Some(Scheme::Aaa), &s[6..])
        } else if s.contains("://") {
            return Err(AddrError::new(s, "unknown scheme (expected aaa:// or aaas://)"));
        } else {
            (None, s)
        };
        let Some(scheme) = scheme else {
            // host:port (the port is required: a bare name is ambiguous).
            let (host, port) = split_host_port(s, rest)?;
            let port = port.ok_or_else(|| AddrError::new(s, "expected HOST:PORT"))?;
            return Ok(PeerAddr {
                scheme: Scheme::Aaa,
                host: parse_host(s, host)?,
                port: parse_port(s, port)?,
                transport: Transport::Tcp,
                uri: false,
            });
        };
        let mut parts = rest.split(';');
        let authority = parts.next().unwrap_or("");
        let (host, port) = split_host_port(s, authority)?;
        let host = parse_host(s, host)?;
        let port = match port {
            Some(p) => parse_port(s, p)?,
            None if scheme == Scheme::Aaas => DIAMETER_TLS_PORT,
            None => DIAMETER_PORT,
        };
        let mut transport = Transport::Tcp;
        let (mut seen_transport, mut seen_protocol) = (false, false);
        for param in parts {
            let (key, value) =
                param.split_once('=').ok_or_else(|| AddrError::new(s, "a URI parameter must be NAME=VALUE"))?;
            match key.to_ascii_lowercase().as_str() {
                "transport" if !seen_transport => {
                    seen_transport = true;
                    transport = match value.to_ascii_lowercase().as_str() {
                        "tcp" => Transport::Tcp,
                        "sctp" => Transport::Sctp,
                        "udp" => return Err(AddrError::new(s, "Diameter does not run over UDP (RFC 6733 §2.1)")),
                        _ => return Err(AddrError::new(s, "transport must be tcp or sctp")),
                    };
                }
                "protocol" if !seen_protocol => {
                    seen_protocol = true;
                    if !value.eq_ignore_ascii_case("diameter") {
                        return Err(AddrError::new(s, "only protocol=diameter is supported"));
                    }
                }
                "transport" | "protocol" => return Err(AddrError::new(s, "a URI parameter is repeated")),
                _ => return Err(AddrError::new(s, "unknown URI parameter (expected transport or protocol)")),
            }
        }
        Ok(PeerAddr { scheme, host, port, transport, uri: true })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PeerAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn every_form_parses() {
        let a = p("ocs.Example.net:3870");
        assert_eq!(
            (a.host_name(), a.port(), a.scheme(), a.is_tls()),
            (Some("ocs.example.net"), 3870, Scheme::Aaa, false)
        );
        assert_eq!(a.to_string(), "ocs.example.net:3870");
        let a = p("127.0.0.1:3868");
        assert_eq!(a.socket_addr(), Some("127.0.0.1:3868".parse().unwrap()));
        let a = p("[::1]:3868");
        assert_eq!(a.socket_addr(), Some("[::1]:3868".parse().unwrap()));
        assert_eq!(a.to_string(), "[::1]:3868");
        let a = p("aaa://peer.example.com");
        assert_eq!((a.port(), a.transport()), (3868, Transport::Tcp));
        assert_eq!(a.to_string(), "aaa://peer.example.com:3868");
        assert_eq!(a.to_uri(), "aaa://peer.example.com:3868;transport=tcp");
        let a = p("AAAS://peer.example.com");
        assert_eq!((a.port(), a.is_tls()), (5658, true));
        let a = p("aaa://127.0.0.1:3900;transport=tcp;protocol=diameter");
        assert_eq!(a.socket_addr(), Some("127.0.0.1:3900".parse().unwrap()));
        let a = p("aaa://[::1]:3900;transport=sctp");
        assert_eq!(a.transport(), Transport::Sctp);
        assert_eq!(a.to_string(), "aaa://[::1]:3900;transport=sctp");
    }

    #[test]
    fn equal_addresses_compare_equal() {
        assert_eq!(p("Host.example:1"), p("host.example:1"));
        assert_eq!(p("127.0.0.1:3868"), PeerAddr::from(SocketAddr::from(([127, 0, 0, 1], 3868))));
        assert_ne!(p("aaas://h.example:1"), p("aaa://h.example:1"));
    }

    #[test]
    fn bad_forms_are_rejected_with_a_reason() {
        for bad in [
            "",
            "host",
            "host:",
            "host:0",
            "host:65536",
            "host:12a",
            "::1:3868",
            "[::1",
            "[::1]x",
            "[zz]:1",
            "bad host!:1",
            "http://h:1",
            "aaa://h:1;transport=udp",
            "aaa://h:1;transport=quic",
            "aaa://h:1;protocol=radius",
            "aaa://h:1;transport",
            "aaa://h:1;transport=tcp;transport=tcp",
            "aaa://h:1;foo=bar",
            "aaa://:1",
            "a..b:1",
        ] {
            assert!(bad.parse::<PeerAddr>().is_err(), "{bad:?} should not parse");
        }
        let long = format!("{}:1", "a".repeat(2000));
        let e = long.parse::<PeerAddr>().unwrap_err();
        assert!(e.to_string().len() < 300, "errors stay bounded");
        assert!(format!("{}.x:1", "a".repeat(64)).parse::<PeerAddr>().is_err(), "label over 63 octets");
    }
}
