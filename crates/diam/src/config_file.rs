//! `--config FILE` for `serve` and `relay`: one TOML format for identity,
//! listeners, TLS, peers, routes and limits (parsed by `toml` into `serde`
//! structs). A flag given on the command line overrides the file; the file
//! overrides the flags' defaults. Unknown keys are refused, so a typo is an
//! error, not a silently ignored setting.

use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::ArgMatches;
use serde::Deserialize;

use crate::{Failure, TlsArgs, TuningArgs};

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    pub(crate) origin_host: Option<String>,
    pub(crate) origin_realm: Option<String>,
    pub(crate) listen: Option<String>,
    pub(crate) tls_listen: Option<String>,
    #[serde(default)]
    pub(crate) allow: Vec<String>,
    pub(crate) metrics: Option<String>,
    /// Balancing of every route's peers (relay).
    pub(crate) strategy: Option<String>,
    pub(crate) tls: Option<TlsFile>,
    pub(crate) timers: Option<TimersFile>,
    pub(crate) limits: Option<LimitsFile>,
    #[serde(default)]
    pub(crate) peers: Vec<PeerFile>,
    #[serde(default)]
    pub(crate) routes: Vec<RouteFile>,
    pub(crate) default_route: Option<RouteFile>,
    pub(crate) serve: Option<ServeFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsFile {
    pub(crate) cert: Option<PathBuf>,
    pub(crate) key: Option<PathBuf>,
    pub(crate) ca: Option<PathBuf>,
    pub(crate) inband: Option<bool>,
    pub(crate) keylog: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TimersFile {
    pub(crate) tw_ms: Option<u64>,
    pub(crate) dwr_timeout_ms: Option<u64>,
    pub(crate) max_dwr_failures: Option<u32>,
    pub(crate) request_timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitsFile {
    pub(crate) max_pending: Option<usize>,
    pub(crate) max_connections: Option<usize>,
    pub(crate) max_forwards: Option<usize>,
}

/// A peer kept connected (`address`), or expected to connect in (no
/// `address`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PeerFile {
    pub(crate) identity: Option<String>,
    pub(crate) address: Option<String>,
}

/// One route of the realm routing table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteFile {
    /// `example.net` or `*.example.net` (not for the default route).
    pub(crate) realm: Option<String>,
    /// Application-Id; absent: any application.
    pub(crate) app: Option<u32>,
    /// `relay` (default), `proxy`, `redirect` or `local`.
    pub(crate) action: Option<String>,
    /// Relay and proxy: the peers (identities or addresses). Redirect: the
    /// Redirect-Host URIs.
    #[serde(default)]
    pub(crate) peers: Vec<String>,
    /// Overrides the file's `strategy` for this route.
    pub(crate) strategy: Option<String>,
    /// Proxy: AVPs (`NAME=VALUE`, as `diam send --avp`) added to every
    /// forwarded request, replacing AVPs of the same code.
    #[serde(default)]
    pub(crate) set: Vec<String>,
    /// Proxy: AVPs (names or codes) removed from forwarded requests.
    #[serde(default)]
    pub(crate) strip: Vec<String>,
    /// Proxy: AVPs added to every answer, replacing AVPs of the same code.
    #[serde(default)]
    pub(crate) set_answer: Vec<String>,
    /// Redirect: Redirect-Host-Usage (default `realm-and-application`).
    pub(crate) usage: Option<String>,
    /// Redirect: Redirect-Max-Cache-Time in seconds (default 600).
    pub(crate) max_cache_time_s: Option<u32>,
}

/// `diam serve`'s own settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServeFile {
    #[serde(default)]
    pub(crate) apps: Vec<u32>,
    pub(crate) result_code: Option<u32>,
    pub(crate) delay_ms: Option<u64>,
    pub(crate) drop_rate: Option<f64>,
}

/// Reads and parses `path`.
pub(crate) fn load(path: &Path) -> Result<FileConfig, Failure> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Failure::input(format!("--config {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| Failure::input(format!("--config {}: {e}", path.display())))
}

/// Whether `id` was given on the command line.
pub(crate) fn on_command_line(m: &ArgMatches, id: &str) -> bool {
    matches!(m.try_get_raw(id), Ok(Some(_))) && m.value_source(id) == Some(ValueSource::CommandLine)
}

/// Takes the file's value unless the flag was given.
pub(crate) fn take<T>(m: &ArgMatches, id: &str, flag: &mut T, file: Option<T>) {
    if let Some(v) = file {
        if !on_command_line(m, id) {
            *flag = v;
        }
    }
}

/// Takes the file's list unless the flag was given.
pub(crate) fn take_list<T>(m: &ArgMatches, id: &str, flag: &mut Vec<T>, file: Vec<T>) {
    if !file.is_empty() && !on_command_line(m, id) {
        *flag = file;
    }
}

/// The settings every node command shares: identity, timers, limits and
/// TLS paths (relative paths are relative to the file's directory).
pub(crate) fn apply_common(
    m: &ArgMatches,
    file: &FileConfig,
    dir: &Path,
    origin: (&mut String, &mut String),
    tuning: &mut TuningArgs,
    tls: &mut TlsArgs,
) {
    take(m, "origin_host", origin.0, file.origin_host.clone());
    take(m, "origin_realm", origin.1, file.origin_realm.clone());
    if let Some(t) = &file.timers {
        take(m, "tw_ms", &mut tuning.tw_ms, t.tw_ms);
        take(m, "dwr_timeout_ms", &mut tuning.dwr_timeout_ms, t.dwr_timeout_ms);
        take(m, "max_dwr_failures", &mut tuning.max_dwr_failures, t.max_dwr_failures);
        take(m, "request_timeout_ms", &mut tuning.request_timeout_ms, t.request_timeout_ms);
    }
    if let Some(l) = &file.limits {
        take(m, "max_pending", &mut tuning.max_pending, l.max_pending);
    }
    if let Some(t) = &file.tls {
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| Some(dir.join(p)));
        take(m, "tls_cert", &mut tls.tls_cert, path(&t.cert));
        take(m, "tls_key", &mut tls.tls_key, path(&t.key));
        take(m, "tls_ca", &mut tls.tls_ca, path(&t.ca));
        take(m, "tls_keylog", &mut tls.tls_keylog, path(&t.keylog));
        take(m, "inband_tls", &mut tls.inband_tls, t.inband);
    }
}

/// Checks that the TLS settings hang together after merging (clap checks
/// this for flags alone).
pub(crate) fn check_tls(tls: &TlsArgs) -> Result<(), Failure> {
    let set = [tls.tls_cert.is_some(), tls.tls_key.is_some(), tls.tls_ca.is_some()];
    if set.iter().any(|s| *s) && !set.iter().all(|s| *s) {
        return Err(Failure::input("TLS needs all of cert, key and ca (--tls-cert, --tls-key, --tls-ca)"));
    }
    if (tls.inband_tls || tls.tls_keylog.is_some()) && tls.tls_cert.is_none() {
        return Err(Failure::input("--inband-tls and --tls-keylog need --tls-cert, --tls-key and --tls-ca"));
    }
    Ok(())
}

/// `[[peers]]` as the `--connect` syntax (`IDENTITY=ADDRESS`, an address,
/// or an identity alone).
pub(crate) fn peer_items(file: &FileConfig) -> Result<Vec<String>, Failure> {
    file.peers
        .iter()
        .map(|p| match (&p.identity, &p.address) {
            (Some(id), Some(addr)) => Ok(format!("{id}={addr}")),
            (None, Some(addr)) => Ok(addr.clone()),
            (Some(id), None) => Ok(id.clone()),
            (None, None) => Err(Failure::input("--config: a [[peers]] entry needs an identity or an address")),
        })
        .collect()
}
