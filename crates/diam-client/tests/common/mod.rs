//! A minimal Diameter server for the driver's tests: its connections can be
//! killed abruptly (like SIGKILL) and it can come back on the same port. It
//! counts what it receives and can be told to answer with another
//! Result-Code.
#![allow(dead_code)]

pub(crate) mod scripted;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use diam_proto::{avps, FrameDecoder, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// What the server saw and how it answers (shared across restarts).
#[derive(Debug, Default)]
pub(crate) struct Seen {
    /// Application requests (command 272) received.
    pub(crate) requests: AtomicUsize,
    /// Of those, the ones with the T flag.
    pub(crate) retransmits: AtomicUsize,
    /// (End-to-End id, T flag, CC-Request-Number) of every application
    /// request, in arrival order.
    pub(crate) ids: Mutex<Vec<(u32, bool, Option<u32>)>>,
    /// Result-Code of application answers; 0 means 2001.
    pub(crate) result_code: AtomicU32,
}

pub(crate) struct TestPeer {
    pub(crate) addr: SocketAddr,
    tasks: JoinSet<()>,
    pub(crate) connections: Arc<AtomicUsize>,
    pub(crate) seen: Arc<Seen>,
    delay: Duration,
}

impl TestPeer {
    /// A server on 127.0.0.1 answering application requests after `delay`
    /// (base protocol requests at once).
    pub(crate) async fn start(delay: Duration) -> TestPeer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut p = TestPeer {
            addr,
            tasks: JoinSet::new(),
            connections: Arc::new(AtomicUsize::new(0)),
            seen: Arc::default(),
            delay,
        };
        p.serve(listener);
        p
    }

    fn serve(&mut self, listener: TcpListener) {
        let connections = self.connections.clone();
        let (delay, seen) = (self.delay, self.seen.clone());
        self.tasks.spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((sock, _)) = listener.accept().await else { return };
                connections.fetch_add(1, Ordering::SeqCst);
                conns.spawn(serve_conn(sock, delay, seen.clone()));
            }
        });
    }

    /// Drops the listener and every connection at once (like SIGKILL).
    pub(crate) async fn kill(&mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }

    pub(crate) async fn restart(&mut self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }

    pub(crate) fn requests(&self) -> usize {
        self.seen.requests.load(Ordering::SeqCst)
    }

    pub(crate) fn retransmits(&self) -> usize {
        self.seen.retransmits.load(Ordering::SeqCst)
    }

    /// Answer application requests with `rc` from now on.
    pub(crate) fn answer_with(&self, rc: u32) {
        self.seen.result_code.store(rc, Ordering::SeqCst);
    }
}

async fn serve_conn(mut sock: tokio::net::TcpStream, delay: Duration, seen: Arc<Seen>) {
    let mut buf = BytesMut::new();
    let mut dec = FrameDecoder::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Message>();
    loop {
        tokio::select! {
            r = sock.read_buf(&mut buf) => {
                if !matches!(r, Ok(n) if n > 0) {
                    return;
                }
                while let Ok(Some(m)) = dec.decode(&mut buf) {
                    if !m.is_request() {
                        continue;
                    }
                    let app = m.command_code() == 272;
                    let rc = match seen.result_code.load(Ordering::SeqCst) {
                        0 => 2001,
                        rc if app => rc,
                        _ => 2001,
                    };
                    if app {
                        seen.requests.fetch_add(1, Ordering::SeqCst);
                        let t = m.flags().is_retransmit();
                        if t {
                            seen.retransmits.fetch_add(1, Ordering::SeqCst);
                        }
                        let n = m.get(avps::CC_REQUEST_NUMBER).ok().flatten();
                        seen.ids.lock().unwrap().push((m.end_to_end(), t, n));
                    }
                    let mut b = Message::answer_to(&m)
                        .error(rc / 1000 == 3)
                        .avp(avps::RESULT_CODE, rc)
                        .avp(avps::ORIGIN_HOST, "peer.test")
                        .avp(avps::ORIGIN_REALM, "test");
                    if m.command_code() == 257 {
                        b = b.avp(avps::AUTH_APPLICATION_ID, 4u32);
                    }
                    let ans = b.build();
                    if app && !delay.is_zero() {
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            let _ = tx.send(ans);
                        });
                    } else if sock.write_all(ans.as_bytes()).await.is_err() {
                        return;
                    }
                }
            }
            Some(ans) = rx.recv() => {
                if sock.write_all(ans.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    }
}
