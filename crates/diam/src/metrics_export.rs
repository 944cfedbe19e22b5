//! `--metrics ADDR`: Prometheus text exposition at `http://ADDR/metrics`.
//!
//! The `metrics-exporter-prometheus` recorder becomes the process-wide
//! recorder of the `metrics` facade, so every counter the pool
//! (`diam_client_*`, `diam_pool_*`) and `diam serve` (`diam_serve_*`)
//! emit shows up there. Only its `http-listener` feature is used (an
//! HTTP/1 server on hyper); no push gateway, no TLS.

use std::net::SocketAddr;

use metrics::{describe_counter, describe_gauge, Unit};
use metrics_exporter_prometheus::PrometheusBuilder;

use crate::Failure;

/// Installs the Prometheus recorder and serves it on `addr` (any path
/// answers with the metrics; `/health` answers `OK`). The address served
/// is logged on stderr (useful with port 0).
///
/// The listening socket is bound here, synchronously, so a busy or
/// unusable address is an error now rather than a log line later. Inside
/// a tokio runtime the HTTP server runs on that runtime; outside one it
/// gets its own thread. Callers must install it before taking `Counter`
/// handles they keep: handles taken earlier stay no-ops. Once per process
/// (a second call fails: the global recorder is already set).
pub(crate) fn install(addr: SocketAddr) -> Result<(), Failure> {
    // The exporter cannot report the port it bound, so port 0 is resolved
    // here first (the port is free again for a moment before the exporter
    // binds it).
    let addr = if addr.port() == 0 {
        std::net::TcpListener::bind(addr)
            .and_then(|l| l.local_addr())
            .map_err(|e| Failure::failed(format!("--metrics {addr}: {e}")))?
    } else {
        addr
    };
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| Failure::failed(format!("--metrics {addr}: {e}")))?;
    describe();
    eprintln!("diam: serving Prometheus metrics at http://{addr}/metrics");
    Ok(())
}

/// HELP lines for the metrics this program and its libraries emit.
fn describe() {
    let counters: [(&'static str, &'static str); 20] = [
        ("diam_client_requests_total", "Requests submitted through the client pool."),
        ("diam_client_answers_total", "Answers received by the client pool."),
        ("diam_client_errors_total", "Client requests that ended in an error (timeouts included), by kind."),
        ("diam_client_timeouts_total", "Client requests that timed out."),
        ("diam_pool_connections_created_total", "Connections opened by the pool (first and re-established)."),
        ("diam_pool_failed_attempts_total", "Connection attempts (dial or capabilities exchange) that failed."),
        ("diam_pool_connections_lost_total", "Open connections that were lost."),
        ("diam_pool_connections_closed_total", "Pool entries closed (idle, given up, or at shutdown)."),
        ("diam_pool_messages_sent_total", "Messages written by the pool's connections."),
        ("diam_pool_messages_received_total", "Messages read by the pool's connections."),
        ("diam_pool_bytes_sent_total", "Bytes written by the pool's connections."),
        ("diam_pool_bytes_received_total", "Bytes read by the pool's connections."),
        ("diam_pool_idle_closures_total", "Connections closed for idleness."),
        ("diam_pool_lifetime_expirations_total", "Connections replaced for reaching their maximum lifetime."),
        (
            "diam_group_retransmissions_total",
            "Requests a peer group re-sent with the T flag after their connection failed.",
        ),
        (
            "diam_group_reroutes_total",
            "Requests a peer group sent to another member because they never reached the first.",
        ),
        ("diam_serve_requests_total", "Application requests received by diam serve."),
        ("diam_serve_answers_total", "Answers sent by diam serve, by Result-Code."),
        ("diam_serve_dropped_total", "Requests diam serve left unanswered on purpose (--drop-rate)."),
        (
            "diam_serve_retransmissions_total",
            "Requests diam serve received with the T flag (retransmitted after a failover).",
        ),
    ];
    for (name, help) in counters {
        describe_counter!(name, Unit::Count, help);
    }
    describe_gauge!("diam_pool_active_connections", Unit::Count, "Addresses with a pool entry now.");
}
