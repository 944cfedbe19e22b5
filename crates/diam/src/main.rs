//! `diam`: the command-line face of the diam Diameter stack.
//!
//! Machine output goes to stdout (JSON), diagnostics to stderr. Exit codes:
//! 0 success, 1 the operation failed or the peer answered with an error,
//! 2 bad input or usage (clap's own usage errors also exit 2).
//!
//! Dependencies: `clap` for argument parsing, `serde_json` for the JSON
//! forms, `hdrhistogram` for latency percentiles, `indicatif` for progress,
//! and `plotters` (its SVG backend only, no fonts needed) for
//! `diam bench --plot` charts.

#[cfg(test)]
mod alloc_count;
mod bench_cmd;
mod codec_cmd;
mod config_file;
mod demo_cmd;
mod hex;
mod json;
mod metrics_export;
mod peer_cmd;
mod plot;
mod relay_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Diameter (RFC 6733) toolkit: decode and encode messages, run and probe peers.
#[derive(Debug, Parser)]
#[command(name = "diam", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Decode Diameter messages into JSON, one object per line.
    ///
    /// Reads one or more concatenated messages (raw bytes, or hex text with
    /// --hex) from FILE or stdin. Malformed input exits with code 2 and a
    /// message naming the byte offset.
    Decode(DecodeArgs),
    /// Encode JSON messages (the `diam decode` form, one per line) into bytes.
    ///
    /// Writes raw bytes to stdout, or one hex line per message with --hex.
    /// Fields may be left out: `length` is computed, AVP `flags`, `type` and
    /// `vendor_id` default from the dictionary, and an AVP may be given by
    /// `name` instead of `code`.
    Encode(EncodeArgs),
    /// Run a Diameter node that answers every request.
    ///
    /// Answers CER, DWR and DPR itself; any other request gets an answer
    /// with the request's Session-Id and --result-code. Accepts any
    /// application unless --app restricts it. --connect keeps connections
    /// to those peers up (election when they connect to us too). Prints
    /// {"event":"listening","addr":...} on stdout once bound, one
    /// {"event":"peer_up"|"peer_down",...} line per peer change, and runs
    /// until SIGINT/SIGTERM, then sends DPR to its peers and prints
    /// {"event":"stopped",...} with its request, answer, drop and
    /// retransmission (T flag) counts.
    Serve(ServeArgs),
    /// Run a Diameter relay agent (RFC 6733 §2.8) that routes requests by
    /// the realm routing table.
    ///
    /// Each --route REALM[:APP]=PEER[,PEER...] sends requests whose
    /// Destination-Realm matches REALM (exact, or *.DOMAIN for any realm
    /// under DOMAIN, case-insensitive) and, with :APP, whose Application-Id
    /// is APP, to one of the PEERs (balanced by --strategy);
    /// --default-route takes the rest. A request whose Destination-Host is
    /// an open peer goes to that peer. Requests for no route get 3003,
    /// loops (our identity in Route-Record) 3005, no usable peer or no
    /// answer in time 3002, a full forwarding table 3004. A request whose
    /// upstream connection fails is retransmitted once to another peer of
    /// its route with the T flag. PEER is an address (HOST:PORT,
    /// aaa://HOST[:PORT], aaas://HOST[:PORT]; dialled and kept up) or a bare
    /// DiameterIdentity (a peer that connects to us). Proxy and redirect
    /// routes, and everything else, can come from --config. Prints the same
    /// listening/peer_up/peer_down lines as serve, and at SIGINT/SIGTERM
    /// {"event":"stopped",...} with the forwarding counts.
    Relay(RelayArgs),
    /// Check a peer: CER, then DWR, then DPR, with each step's Result-Code
    /// and round-trip time as JSON. Exit 0 only when all three got 2001.
    Probe(ProbeArgs),
    /// Send one request after the handshake and print the answer as JSON.
    /// Exit 0 on a 2xxx Result-Code.
    Send(SendArgs),
    /// A guided tour, no arguments and no outside server needed: three
    /// embedded peers, traffic through the client pool, one peer killed
    /// (failure callback and pool cleanup with their measured latency),
    /// the peer restored (reconnection), and a final stats table. About
    /// 8 s.
    Demo,
    /// Run the standard workload (CCR, app 4) through a peer group on one
    /// client pool and report throughput, latency percentiles, errors,
    /// per-peer counts, failovers and retransmissions as JSON.
    ///
    /// Keeps --inflight requests outstanding (closed loop), or sends at
    /// --rate requests/s (open loop, latency from each request's intended
    /// send time). Progress goes to stderr, the final JSON to stdout;
    /// requests are counted at submission and every one ends as an
    /// answer, an error or a timeout.
    Bench(BenchArgs),
}

/// Local Diameter identity.
#[derive(Debug, Clone, Args)]
pub(crate) struct IdentityArgs {
    /// Origin-Host (our DiameterIdentity).
    #[arg(long, value_name = "H", default_value = "diam.localdomain")]
    pub(crate) origin_host: String,
    /// Origin-Realm.
    #[arg(long, value_name = "R", default_value = "localdomain")]
    pub(crate) origin_realm: String,
}

/// Local Diameter identity of the client commands (probe, send, bench):
/// another default than `serve`'s, since a node refuses a CER that carries
/// its own identity.
#[derive(Debug, Args)]
pub(crate) struct ClientIdentityArgs {
    /// Origin-Host (our DiameterIdentity).
    #[arg(long, value_name = "H", default_value = "diam-client.localdomain")]
    pub(crate) origin_host: String,
    /// Origin-Realm.
    #[arg(long, value_name = "R", default_value = "localdomain")]
    pub(crate) origin_realm: String,
}

impl ClientIdentityArgs {
    pub(crate) fn to_identity(&self) -> IdentityArgs {
        IdentityArgs { origin_host: self.origin_host.clone(), origin_realm: self.origin_realm.clone() }
    }
}

/// Timers and bounds shared by serve, send and bench.
#[derive(Debug, Clone, Args)]
pub(crate) struct TuningArgs {
    /// Watchdog interval Tw in ms (RFC 3539: 30000; values under 6000 are
    /// accepted with a warning).
    #[arg(long, value_name = "N", default_value_t = 30_000)]
    pub(crate) tw_ms: u64,
    /// How long to wait for a DWA, in ms.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub(crate) dwr_timeout_ms: u64,
    /// Consecutive unanswered DWRs before the connection is DOWN.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub(crate) max_dwr_failures: u32,
    /// Per-request timeout in ms.
    #[arg(long, value_name = "N", default_value_t = 5_000)]
    pub(crate) request_timeout_ms: u64,
    /// Maximum requests awaiting an answer per connection.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub(crate) max_pending: usize,
}

impl Default for TuningArgs {
    fn default() -> Self {
        TuningArgs {
            tw_ms: 30_000,
            dwr_timeout_ms: 10_000,
            max_dwr_failures: 3,
            request_timeout_ms: 5_000,
            max_pending: 4096,
        }
    }
}

/// TLS (RFC 6733 §13), common to every command that talks to peers.
#[derive(Debug, Clone, Args, Default)]
pub(crate) struct TlsArgs {
    /// Our certificate chain (PEM, ours first). With --tls-key and
    /// --tls-ca: `aaas://` peers are dialled with TLS, and on every TLS
    /// connection (TLS-first, or in-band with --inband-tls) the peer must
    /// present a certificate from that CA naming its Origin-Host (mutual
    /// authentication).
    #[arg(long, value_name = "FILE")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// Our private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE")]
    pub(crate) tls_key: Option<PathBuf>,
    /// The CA certificates peers' certificates must chain to (PEM).
    #[arg(long, value_name = "FILE")]
    pub(crate) tls_ca: Option<PathBuf>,
    /// In-band TLS (RFC 3588 style): on plain connections, offer and
    /// require Inband-Security-Id TLS in the CER/CEA, and start TLS right
    /// after the CEA.
    #[arg(long)]
    pub(crate) inband_tls: bool,
    /// Append TLS session secrets to FILE (NSS key log format, for
    /// Wireshark/tshark). SSLKEYLOGFILE does the same. Debugging only.
    #[arg(long, value_name = "FILE")]
    pub(crate) tls_keylog: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on, e.g. 127.0.0.1:3868 (port 0 picks one);
    /// HOST:P1-P2 listens on every port of the range (at most 8192), each
    /// port its own node with the same identity (so one client can connect
    /// to every port; --connect, --tls-listen go with the first), and the
    /// listening line then adds "addrs" with all of them.
    /// Required, here or in --config.
    #[arg(long, value_name = "ADDR")]
    pub(crate) listen: Option<String>,
    /// Read settings from a TOML file (the README documents the format); a
    /// flag given here overrides the file.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Keep a connection to this peer up (reconnecting with backoff;
    /// election when it connects to us too). PEER is HOST:PORT, [V6]:PORT,
    /// aaa://HOST[:PORT][;transport=tcp] (a host name there is the peer's
    /// DiameterIdentity), aaas://HOST[:PORT] (TLS first), or
    /// IDENTITY=ADDRESS. Repeatable.
    #[arg(long = "connect", value_name = "PEER")]
    pub(crate) connect: Vec<String>,
    /// Also listen for TLS-first connections on ADDR (needs --tls-cert;
    /// the IANA port for Diameter over TLS is 5658).
    #[arg(long, value_name = "ADDR")]
    pub(crate) tls_listen: Option<String>,
    /// Accept only peers whose Origin-Host is this identity or matches
    /// *.DOMAIN (besides --connect peers); others get 3010
    /// DIAMETER_UNKNOWN_PEER. Repeatable. Without it, any peer is accepted
    /// (a test tool; a warning says so).
    #[arg(long = "allow", value_name = "PATTERN")]
    pub(crate) allow: Vec<String>,
    /// Most inbound connections at once; more are closed at accept.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub(crate) max_connections: usize,
    /// Accept only these applications (a CER with none in common gets
    /// 5010). Default: any application (Relay is advertised).
    #[arg(long = "app", value_name = "ID", num_args = 1..)]
    pub(crate) app: Vec<u32>,
    /// Result-Code of every answer.
    #[arg(long, value_name = "N", default_value_t = 2001)]
    pub(crate) result_code: u32,
    /// Delay before each answer, in ms.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub(crate) delay_ms: u64,
    /// Fraction of requests left unanswered (0 to 1).
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    pub(crate) drop_rate: f64,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g.
    /// 127.0.0.1:9090).
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics: Option<std::net::SocketAddr>,
    /// Runtime threads. Default: one multi-thread runtime, a worker per
    /// core. N: N single-threaded runtimes, each with its own listener on
    /// every --listen port (SO_REUSEPORT: the kernel spreads connections
    /// over them), so a request is read, answered and written on one
    /// thread. A node keeps one connection per peer identity within its
    /// runtime only, so with N > 1 a peer could hold N connections.
    #[arg(long, value_name = "N")]
    pub(crate) threads: Option<usize>,
    #[command(flatten)]
    pub(crate) identity: IdentityArgs,
    #[command(flatten)]
    pub(crate) tuning: TuningArgs,
    #[command(flatten)]
    pub(crate) tls: TlsArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ProbeArgs {
    /// The peer: HOST:PORT, [V6]:PORT, aaa://HOST[:PORT][;transport=tcp],
    /// aaas://HOST[:PORT] (TLS first; needs --tls-cert), or
    /// IDENTITY=ADDRESS (the peer's DiameterIdentity, which its certificate
    /// must name).
    #[arg(long, value_name = "PEER")]
    pub(crate) peer: String,
    /// Applications to advertise in the CER (default: Relay, 0xffffffff).
    #[arg(long = "app", value_name = "ID", num_args = 1..)]
    pub(crate) app: Vec<u32>,
    /// Timeout of each step, in ms.
    #[arg(long, value_name = "N", default_value_t = 5_000)]
    pub(crate) timeout_ms: u64,
    #[command(flatten)]
    pub(crate) identity: ClientIdentityArgs,
    #[command(flatten)]
    pub(crate) tls: TlsArgs,
}

#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    /// The peer: HOST:PORT, [V6]:PORT, aaa://HOST[:PORT][;transport=tcp],
    /// aaas://HOST[:PORT] (TLS first; needs --tls-cert), or
    /// IDENTITY=ADDRESS (the peer's DiameterIdentity, which its certificate
    /// must name).
    #[arg(long, value_name = "PEER")]
    pub(crate) peer: String,
    /// Application-Id of the request (also advertised in the CER).
    #[arg(long, value_name = "ID")]
    pub(crate) app: u32,
    /// Command code of the request.
    #[arg(long, value_name = "CODE")]
    pub(crate) command: u32,
    /// An AVP: NAME=VALUE, where NAME is a dictionary name, CODE or
    /// CODE:VENDOR. Values are typed by the dictionary; enumerated values
    /// take names or numbers; unknown AVPs take hex; Grouped AVPs take a
    /// JSON array of AVP objects. Repeatable.
    #[arg(long = "avp", value_name = "NAME=VALUE")]
    pub(crate) avp: Vec<String>,
    /// Timeout for the answer, in ms (default: --request-timeout-ms).
    #[arg(long, value_name = "N")]
    pub(crate) timeout_ms: Option<u64>,
    #[command(flatten)]
    pub(crate) identity: ClientIdentityArgs,
    #[command(flatten)]
    pub(crate) tuning: TuningArgs,
    #[command(flatten)]
    pub(crate) dict: DictArgs,
    #[command(flatten)]
    pub(crate) tls: TlsArgs,
}

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// The peers, PEER[,PEER...]: one peer group, spread by --strategy (or
    /// failed over in order with --failover). PEER is HOST:PORT, [V6]:PORT or
    /// aaa://HOST[:PORT][;transport=tcp]; HOST:P1-P2 means every port in the
    /// range.
    #[arg(long, value_name = "PEER[,PEER...]", value_delimiter = ',', required = true)]
    pub(crate) peer: Vec<String>,
    /// How requests are spread over the peers: round-robin, lru, random,
    /// least-outstanding or weighted (by an efficiency score from failure
    /// rate and latency).
    #[arg(long, value_name = "NAME", default_value = "round-robin", value_parser = parse_strategy)]
    pub(crate) strategy: diam_link::balance::Strategy,
    /// Primary/secondary instead of balancing: the first peer takes all
    /// traffic, the next ones in order when it fails.
    #[arg(long, conflicts_with = "strategy")]
    pub(crate) failover: bool,
    /// With --failover: how long the primary must stay up before traffic
    /// goes back to it, in ms.
    #[arg(long, value_name = "N", default_value_t = 30_000, requires = "failover")]
    pub(crate) failback_ms: u64,
    /// Fraction of requests sent retryable (P flag set): those are
    /// retransmitted to another peer with the T flag when their connection
    /// fails; the others fail with connection_lost.
    #[arg(long, value_name = "F", default_value_t = 1.0)]
    pub(crate) retryable: f64,
    /// How long to send, in seconds.
    #[arg(long, value_name = "S", default_value_t = 10.0)]
    pub(crate) duration: f64,
    /// Requests in flight (closed loop); with --rate, the most outstanding.
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub(crate) inflight: usize,
    /// Open loop: send N requests/s at fixed intended times instead.
    #[arg(long, value_name = "N")]
    pub(crate) rate: Option<f64>,
    /// After the traffic, keep every connection open S seconds, then add
    /// "hold" {connections_open, rss_bytes, cpu_percent} to the report (the
    /// idle cost of the connections, from this process's /proc figures).
    #[arg(long, value_name = "S")]
    pub(crate) hold: Option<f64>,
    /// Append one JSON line per connection lifecycle event to FILE.
    #[arg(long, value_name = "FILE")]
    pub(crate) events: Option<PathBuf>,
    /// Write an SVG chart to FILE after the run: answers per second and
    /// p50/p99 latency per 100 ms, with disconnections, reconnections,
    /// breaker and failover transitions marked on the time axis.
    #[arg(long, value_name = "FILE")]
    pub(crate) plot: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics during the run.
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics: Option<String>,
    /// Runtime threads. Default: one multi-thread runtime, a worker per
    /// core. N: N single-threaded runtimes, each with its own client and
    /// connections to every peer and an equal share of --inflight, so a
    /// request never crosses threads. Runtime i > 0 identifies itself as
    /// the --origin-host with "-i" after its first label
    /// (client-1.example.com), since a peer keeps one connection per
    /// identity.
    #[arg(long, value_name = "N")]
    pub(crate) threads: Option<usize>,
    /// Print the final report on one line (default: pretty-printed).
    #[arg(long)]
    pub(crate) json: bool,
    /// Destination-Realm of the requests (default: --origin-realm).
    #[arg(long, value_name = "R")]
    pub(crate) destination_realm: Option<String>,
    #[command(flatten)]
    pub(crate) identity: ClientIdentityArgs,
    #[command(flatten)]
    pub(crate) tuning: TuningArgs,
    #[command(flatten)]
    pub(crate) tls: TlsArgs,
}

#[derive(Debug, Args)]
pub(crate) struct DictArgs {
    /// Load an extra dictionary in Wireshark's XML format (repeatable).
    #[arg(long = "dict", value_name = "FILE")]
    pub(crate) dict: Vec<PathBuf>,
    /// Also load Wireshark's system dictionary
    /// (/usr/share/wireshark/diameter/dictionary.xml) when it is installed.
    #[arg(long)]
    pub(crate) wireshark: bool,
}

#[derive(Debug, Args)]
pub(crate) struct DecodeArgs {
    /// Input is hex text (whitespace ignored) instead of raw bytes.
    #[arg(long)]
    pub(crate) hex: bool,
    /// Input file; `-` or nothing reads stdin.
    #[arg(value_name = "FILE")]
    pub(crate) input: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) dict: DictArgs,
}

#[derive(Debug, Args)]
pub(crate) struct EncodeArgs {
    /// Write one hex line per message instead of raw bytes.
    #[arg(long)]
    pub(crate) hex: bool,
    /// Input file of JSON messages; `-` or nothing reads stdin.
    #[arg(value_name = "FILE")]
    pub(crate) input: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) dict: DictArgs,
}

/// Local Diameter identity of `diam relay` (a default of its own: a
/// relay between `diam bench` and `diam serve` must not share either's).
#[derive(Debug, Clone, Args)]
pub(crate) struct RelayIdentityArgs {
    /// Origin-Host (our DiameterIdentity).
    #[arg(long, value_name = "H", default_value = "diam-relay.localdomain")]
    pub(crate) origin_host: String,
    /// Origin-Realm.
    #[arg(long, value_name = "R", default_value = "localdomain")]
    pub(crate) origin_realm: String,
}

impl RelayIdentityArgs {
    pub(crate) fn to_identity(&self) -> IdentityArgs {
        IdentityArgs { origin_host: self.origin_host.clone(), origin_realm: self.origin_realm.clone() }
    }
}

#[derive(Debug, Clone, Args)]
pub(crate) struct RelayArgs {
    /// Address to listen on, e.g. 127.0.0.1:3868 (port 0 picks one).
    /// Required, here or in --config.
    #[arg(long, value_name = "ADDR")]
    pub(crate) listen: Option<String>,
    /// Also listen for TLS-first connections on ADDR (needs --tls-cert).
    #[arg(long, value_name = "ADDR")]
    pub(crate) tls_listen: Option<String>,
    /// A relay route: REALM[:APP]=PEER[,PEER...]. Repeatable. Given here,
    /// the routes of --config are not used.
    #[arg(long = "route", value_name = "REALM[:APP]=PEER[,PEER...]")]
    pub(crate) route: Vec<String>,
    /// Where requests no route matches go: PEER[,PEER...].
    #[arg(long, value_name = "PEER[,PEER...]")]
    pub(crate) default_route: Option<String>,
    /// How a route's requests are spread over its peers: round-robin, lru,
    /// random, least-outstanding or weighted.
    #[arg(long, value_name = "NAME", default_value = "round-robin", value_parser = parse_strategy)]
    pub(crate) strategy: diam_link::balance::Strategy,
    /// Keep this peer up (as serve --connect), or with a bare identity,
    /// expect it to connect to us. Routes may name it by identity.
    /// Repeatable.
    #[arg(long = "connect", value_name = "PEER")]
    pub(crate) connect: Vec<String>,
    /// Accept only peers whose Origin-Host is this identity or matches
    /// *.DOMAIN (besides route and --connect peers); others get 3010.
    /// Repeatable. Without it, any peer is accepted (a warning says so).
    #[arg(long = "allow", value_name = "PATTERN")]
    pub(crate) allow: Vec<String>,
    /// Most inbound connections at once; more are closed at accept.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub(crate) max_connections: usize,
    /// Most requests being forwarded at once; beyond it, 3004
    /// DIAMETER_TOO_BUSY.
    #[arg(long, value_name = "N", default_value_t = 65_536)]
    pub(crate) max_forwards: usize,
    /// Serve Prometheus metrics at http://ADDR/metrics (per route and peer:
    /// forwarded, answered, local answers by Result-Code, retransmitted,
    /// latency).
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics: Option<std::net::SocketAddr>,
    /// Read settings from a TOML file (the README documents the format); a
    /// flag given here overrides the file.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Runtime threads: 1 runs everything on one thread (no cross-thread
    /// wake-ups between the peer tasks a request crosses); N > 1 a
    /// multi-thread runtime of N workers (an agent is one node, so it is
    /// not split per thread as serve is); default one worker per core.
    #[arg(long, value_name = "N")]
    pub(crate) threads: Option<usize>,
    #[command(flatten)]
    pub(crate) identity: RelayIdentityArgs,
    #[command(flatten)]
    pub(crate) tuning: TuningArgs,
    #[command(flatten)]
    pub(crate) tls: TlsArgs,
}

fn parse_strategy(s: &str) -> Result<diam_link::balance::Strategy, String> {
    s.parse().map_err(|e: diam_link::ConfigError| e.to_string())
}

/// A command failure: the message for stderr and the exit code.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) message: String,
}

impl Failure {
    /// Bad input or usage: exit code 2.
    pub(crate) fn input(message: impl Into<String>) -> Self {
        Failure { code: 2, message: message.into() }
    }
    /// The operation failed: exit code 1.
    pub(crate) fn failed(message: impl Into<String>) -> Self {
        Failure { code: 1, message: message.into() }
    }
}

fn main() -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    // The subcommand's own matches: which settings came from the command
    // line (they override --config).
    let empty = clap::ArgMatches::default();
    let sub = matches.subcommand().map_or(&empty, |(_, m)| m);
    // Logs go to stderr; RUST_LOG overrides the default level (warn).
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let result = match cli.command {
        Command::Decode(args) => codec_cmd::decode(&args),
        Command::Encode(args) => codec_cmd::encode(&args),
        Command::Serve(args) => peer_cmd::serve(&args, sub),
        Command::Relay(args) => relay_cmd::relay(&args, sub),
        Command::Probe(args) => peer_cmd::probe(&args),
        Command::Send(args) => peer_cmd::send(&args),
        Command::Demo => demo_cmd::demo(),
        Command::Bench(args) => bench_cmd::bench(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("diam: error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
