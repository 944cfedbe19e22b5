//! Where to connect: a TCP host and port, or a Unix-domain socket path.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::ConfigError;

/// The address of a peer, parsed from the strings operators type.
///
/// | input | result |
/// |---|---|
/// | `unix:` + path | Unix socket at that path (`unix:./app.sock`, `unix:/run/x`) |
/// | starts with `/` | Unix socket (`/var/run/app.sock`) |
/// | contains `.sock` anywhere | Unix socket (`./app.sock`, `run/app.sock`) |
/// | `[v6]:port` | TCP to an IPv6 literal (`[::1]:3868`) |
/// | `host:port` | TCP to a name or IPv4 literal (`localhost:3868`, `10.0.0.1:3868`) |
///
/// Anything else is a [`ConfigError::InvalidRemote`]: an empty string, a missing or
/// non-numeric port, port 0 (cannot be dialed), an unbracketed IPv6 address, an empty
/// host or socket path. [`Display`](fmt::Display) prints a form that parses back to the
/// same value (`unix:` prefix for sockets, brackets for IPv6).
///
/// ```
/// use diam_link::Remote;
///
/// let tcp: Remote = "[::1]:3868".parse()?;
/// assert_eq!(tcp.to_string(), "[::1]:3868");
/// let unix: Remote = "./peer.sock".parse()?;
/// assert!(unix.is_unix());
/// assert!("localhost".parse::<Remote>().is_err()); // no port
/// # Ok::<(), diam_link::ConfigError>(())
/// ```
///
/// The variants cannot be built directly (they are `#[non_exhaustive]`); use
/// [`FromStr`], [`Remote::tcp`] or [`Remote::unix`], which validate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Remote {
    /// A TCP peer. `host` is a DNS name or an IP literal (IPv6 without brackets).
    #[non_exhaustive]
    Tcp {
        /// Host name or IP literal.
        host: String,
        /// Port, never 0.
        port: u16,
    },
    /// A Unix-domain stream socket.
    #[non_exhaustive]
    Unix {
        /// Filesystem path of the socket, never empty.
        path: PathBuf,
    },
}

impl Remote {
    /// A TCP remote; `host` is a name or an IP literal (IPv6 with or without brackets).
    pub fn tcp(host: impl AsRef<str>, port: u16) -> Result<Self, ConfigError> {
        let host = host.as_ref();
        let display = format!("{host}:{port}");
        let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(inner) => parse_v6(inner, &display)?,
            None if host.contains(':') => parse_v6(host, &display)?,
            None => check_host(host, &display)?,
        };
        check_port(port, &display)?;
        Ok(Self::Tcp { host, port })
    }

    /// A Unix-domain socket remote.
    pub fn unix(path: impl Into<PathBuf>) -> Result<Self, ConfigError> {
        let path = path.into();
        if path.as_os_str().is_empty() {
            return Err(ConfigError::remote("unix:", "empty socket path"));
        }
        Ok(Self::Unix { path })
    }

    /// `true` for a Unix-domain socket.
    pub fn is_unix(&self) -> bool {
        matches!(self, Self::Unix { .. })
    }

    /// The host of a TCP remote.
    pub fn host(&self) -> Option<&str> {
        match self {
            Self::Tcp { host, .. } => Some(host),
            Self::Unix { .. } => None,
        }
    }

    /// The port of a TCP remote.
    pub fn port(&self) -> Option<u16> {
        match self {
            Self::Tcp { port, .. } => Some(*port),
            Self::Unix { .. } => None,
        }
    }

    /// The socket path of a Unix remote.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Self::Unix { path } => Some(path),
            Self::Tcp { .. } => None,
        }
    }
}

impl From<SocketAddr> for Remote {
    fn from(addr: SocketAddr) -> Self {
        Self::Tcp { host: addr.ip().to_string(), port: addr.port() }
    }
}

fn parse_v6(host: &str, input: &str) -> Result<String, ConfigError> {
    host.parse::<Ipv6Addr>()
        .map(|ip| ip.to_string())
        .map_err(|_| ConfigError::remote(input, "brackets must hold an IPv6 address"))
}

fn check_host(host: &str, input: &str) -> Result<String, ConfigError> {
    if host.is_empty() {
        return Err(ConfigError::remote(input, "empty host"));
    }
    if host.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '[' | ']' | '@')) {
        return Err(ConfigError::remote(input, "invalid character in host"));
    }
    Ok(host.to_owned())
}

fn check_port(port: u16, input: &str) -> Result<(), ConfigError> {
    if port == 0 {
        return Err(ConfigError::remote(input, "port 0 cannot be dialed"));
    }
    Ok(())
}

fn parse_port(port: &str, input: &str) -> Result<u16, ConfigError> {
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ConfigError::remote(input, "port must be a number in 1..=65535"));
    }
    let port = port.parse::<u16>().map_err(|_| ConfigError::remote(input, "port must be a number in 1..=65535"))?;
    check_port(port, input)?;
    Ok(port)
}

impl FromStr for Remote {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(ConfigError::remote(s, "empty address"));
        }
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(ConfigError::remote(s, "empty socket path after `unix:`"));
            }
            return Ok(Self::Unix { path: PathBuf::from(path) });
        }
        if s.starts_with('/') || s.contains(".sock") {
            return Ok(Self::Unix { path: PathBuf::from(s) });
        }
        if let Some(rest) = s.strip_prefix('[') {
            let Some((host, after)) = rest.split_once(']') else {
                return Err(ConfigError::remote(s, "missing `]` after IPv6 address"));
            };
            let Some(port) = after.strip_prefix(':') else {
                return Err(ConfigError::remote(s, "expected `:port` after `]`"));
            };
            let host = parse_v6(host, s)?;
            return Ok(Self::Tcp { host, port: parse_port(port, s)? });
        }
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err(ConfigError::remote(s, "expected host:port, [v6]:port, unix:/path or a socket path"));
        };
        if host.contains(':') {
            return Err(ConfigError::remote(s, "IPv6 addresses need brackets: [addr]:port"));
        }
        let host = check_host(host, s)?;
        Ok(Self::Tcp { host, port: parse_port(port, s)? })
    }
}

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp { host, port } if host.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv6()) => {
                write!(f, "[{host}]:{port}")
            }
            Self::Tcp { host, port } => write!(f, "{host}:{port}"),
            Self::Unix { path } => write!(f, "unix:{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Remote {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn tcp_forms() {
        assert_eq!(parse("localhost:3868"), Remote::Tcp { host: "localhost".into(), port: 3868 });
        assert_eq!(parse("127.0.0.1:1"), Remote::Tcp { host: "127.0.0.1".into(), port: 1 });
        assert_eq!(parse("[::1]:3868"), Remote::Tcp { host: "::1".into(), port: 3868 });
        assert_eq!(parse("[2001:db8::0:1]:80").host(), Some("2001:db8::1"));
    }

    #[test]
    fn unix_forms() {
        assert_eq!(parse("unix:/tmp/x").path(), Some(Path::new("/tmp/x")));
        assert_eq!(parse("unix:rel/x").path(), Some(Path::new("rel/x")));
        assert_eq!(parse("/var/run/app").path(), Some(Path::new("/var/run/app")));
        assert_eq!(parse("./app.sock").path(), Some(Path::new("./app.sock")));
        assert_eq!(parse("run/app.sock").path(), Some(Path::new("run/app.sock")));
        // `.sock` wins even when the string looks like host:port.
        assert!(parse("peer.sock:80").is_unix());
    }

    #[test]
    fn rejects_nonsense() {
        for bad in [
            "",
            "unix:",
            "localhost",
            "localhost:",
            ":3868",
            "host:port",
            "host:65536",
            "host:0",
            "host:-1",
            "host:+80",
            "::1:3868",
            "[::1]",
            "[::1]3868",
            "[::1:3868",
            "[not-v6]:80",
            "a b:80",
        ] {
            let err = bad.parse::<Remote>().expect_err(bad);
            assert!(matches!(err, ConfigError::InvalidRemote { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["localhost:3868", "[::1]:3868", "unix:/tmp/a.sock", "unix:rel/b", "10.1.2.3:9"] {
            let remote = parse(s);
            assert_eq!(remote.to_string(), s);
            assert_eq!(parse(&remote.to_string()), remote);
        }
        assert_eq!(parse("/tmp/x").to_string(), "unix:/tmp/x");
    }

    #[test]
    fn constructors_validate() {
        assert_eq!(Remote::tcp("[::1]", 5).unwrap().to_string(), "[::1]:5");
        assert_eq!(Remote::tcp("::1", 5).unwrap().to_string(), "[::1]:5");
        assert!(Remote::tcp("", 5).is_err());
        assert!(Remote::tcp("h", 0).is_err());
        assert!(Remote::unix("").is_err());
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(Remote::from(addr).to_string(), "127.0.0.1:9");
    }
}
