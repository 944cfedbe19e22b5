//! The server side: accepts connections and serves them with a handler.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use diam_proto::disconnect_cause;
use diam_proto::peer::Role;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::conn::Command;
use crate::peer::spawn_connection;
use crate::{ConnectionConfig, Error, Hooks};

/// A Diameter server: every accepted connection runs the responder side
/// (waits for the CER, answers it, then serves requests through the
/// [`Hooks::handler`]).
///
/// ```no_run
/// # async fn run() -> Result<(), diam_client::Error> {
/// use diam_client::{handler_fn, ConnectionConfig, Hooks, Server};
/// use diam_proto::{apps, avps, Message};
/// let mut config = ConnectionConfig::new("server.example.com", "example.com");
/// config.peer.auth_application_ids = vec![apps::RELAY];
/// let handler = handler_fn(|req: Message| async move {
///     Some(Message::answer_to(&req).avp(avps::RESULT_CODE, 2001u32).build())
/// });
/// let server = Server::bind("127.0.0.1:3868".parse().unwrap(), config, Hooks { handler: Some(handler), ..Hooks::default() }).await?;
/// server.serve(async { let _ = tokio::signal::ctrl_c().await; }).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    config: Arc<ConnectionConfig>,
    hooks: Hooks,
}

impl Server {
    /// Binds the listening socket.
    pub async fn bind(addr: SocketAddr, config: ConnectionConfig, hooks: Hooks) -> Result<Server, Error> {
        config.validate()?;
        let listener = TcpListener::bind(addr).await.map_err(|source| Error::Connect { addr, source })?;
        Ok(Server { listener, config: Arc::new(config), hooks })
    }

    /// The bound address (useful after binding port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts and serves connections until `shutdown` completes, then
    /// sends DPR (REBOOTING) to every connected peer and waits for them
    /// to close (each bounded by the drain and DPA timeouts).
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut connections: Vec<mpsc::Sender<Command>> = Vec::new();
        let mut tasks = JoinSet::new();
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, remote)) => {
                        tracing::debug!(%remote, "accepted");
                        let (tx, _shared, handle) =
                            spawn_connection(
                                stream,
                                remote,
                                Role::Responder,
                                self.config.clone(),
                                self.hooks.clone(),
                                None,
                                None,
                            );
                        connections.retain(|c| !c.is_closed());
                        connections.push(tx);
                        tasks.spawn(async move {
                            let _ = handle.await;
                        });
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: wait a bit
                        // rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        tracing::info!(connections = connections.len(), "shutting down: sending DPR to every peer");
        for c in &connections {
            let (done, _rx) = oneshot::channel();
            let _ = c.send(Command::Close { cause: disconnect_cause::REBOOTING, done }).await;
        }
        drop(connections);
        let limit = self.config.drain_timeout + self.config.peer.dpa_timeout + self.config.write_timeout;
        let _ = tokio::time::timeout(limit, async { while tasks.join_next().await.is_some() {} }).await;
        Ok(())
    }
}
