//! In-memory transports for the driver's tests: a [`Connector`] whose every
//! dial runs a scripted peer on the other end of a `tokio::io::duplex`
//! pipe, so that tests on paused time see exactly what the node does (no
//! kernel, no real clock).
#![allow(dead_code)]

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use diam_client::transport::{BoxFuture, Connection, Connector};
use diam_client::PeerAddr;
use diam_proto::{avps, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::time::Instant;

/// What a scripted peer does on one connection.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Behaviour {
    /// The dial never completes (a blackholed address): fails after the
    /// connect timeout.
    Blackhole,
    /// The dial is refused at once.
    Refuse,
    /// Answers the CER with this Result-Code and closes.
    CeaAndClose(u32),
    /// Answers the CER with 2001, then closes at once.
    OpenThenClose,
    /// A well-behaved peer: CEA 2001, DWA to every DWR, 2001 to every request.
    Serve,
    /// CEA 2001, answers requests, but never answers a DWR.
    IgnoreDwr,
    /// Serves, but on DPR closes at once without a DPA.
    DropOnDpr,
}

/// What the scripted peers saw, across all connections.
#[derive(Debug, Default)]
pub(crate) struct Log {
    /// When each dial started.
    pub(crate) dials: Mutex<Vec<Instant>>,
    /// Messages received, per connection (command code, request flag).
    pub(crate) received: Mutex<Vec<Vec<(u32, bool)>>>,
    pub(crate) connections: AtomicUsize,
}

impl Log {
    pub(crate) fn dial_count(&self) -> usize {
        self.dials.lock().unwrap().len()
    }
    pub(crate) fn received_on(&self, conn: usize) -> Vec<(u32, bool)> {
        self.received.lock().unwrap().get(conn).cloned().unwrap_or_default()
    }
}

/// Turns an application request and its answer into the bytes sent back.
type Rewrite = Arc<dyn Fn(&Message, Message) -> Vec<u8> + Send + Sync>;

/// A connector whose `n`-th dial behaves as `script(n)` says.
pub(crate) struct Scripted {
    pub(crate) log: Arc<Log>,
    script: Box<dyn Fn(usize) -> Behaviour + Send + Sync>,
    /// Rewrites application answers (to corrupt one, say).
    answer: Rewrite,
    connect_timeout: Duration,
}

impl Scripted {
    pub(crate) fn new(script: impl Fn(usize) -> Behaviour + Send + Sync + 'static) -> Scripted {
        Scripted {
            log: Arc::default(),
            script: Box::new(script),
            answer: Arc::new(|_, a| a.as_bytes().to_vec()),
            connect_timeout: Duration::from_secs(10),
        }
    }

    pub(crate) fn with_answers(mut self, f: impl Fn(&Message, Message) -> Vec<u8> + Send + Sync + 'static) -> Self {
        self.answer = Arc::new(f);
        self
    }
}

impl Connector for Scripted {
    fn connect<'a>(&'a self, _addr: &'a PeerAddr, _identity: Option<&'a str>) -> BoxFuture<'a, io::Result<Connection>> {
        Box::pin(async move {
            let n = {
                let mut d = self.log.dials.lock().unwrap();
                d.push(Instant::now());
                d.len() - 1
            };
            match (self.script)(n) {
                Behaviour::Blackhole => {
                    tokio::time::sleep(self.connect_timeout).await;
                    Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))
                }
                Behaviour::Refuse => Err(io::Error::new(io::ErrorKind::ConnectionRefused, "refused")),
                b => {
                    let (ours, theirs) = tokio::io::duplex(64 * 1024);
                    let conn = self.log.connections.fetch_add(1, Ordering::SeqCst);
                    self.log.received.lock().unwrap().push(Vec::new());
                    tokio::spawn(peer(theirs, b, conn, self.log.clone(), self.answer.clone()));
                    Ok(Connection::plain(Box::new(ours), None, None))
                }
            }
        })
    }
}

fn answer_to(m: &Message, rc: u32) -> Message {
    let mut b = Message::answer_to(m)
        .avp(avps::RESULT_CODE, rc)
        .avp(avps::ORIGIN_HOST, "scripted.test")
        .avp(avps::ORIGIN_REALM, "test");
    if m.command_code() == 257 {
        b = b.avp(avps::AUTH_APPLICATION_ID, 4u32).avp(avps::ORIGIN_STATE_ID, 1u32);
    }
    b.build()
}

async fn peer(mut io: DuplexStream, b: Behaviour, conn: usize, log: Arc<Log>, rewrite: Rewrite) {
    let mut buf = BytesMut::new();
    let mut dec = diam_proto::FrameDecoder::new();
    loop {
        let m = loop {
            match dec.decode(&mut buf) {
                Ok(Some(m)) => break m,
                Ok(None) => {}
                Err(_) => return,
            }
            match io.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        log.received.lock().unwrap()[conn].push((m.command_code(), m.is_request()));
        if !m.is_request() {
            continue;
        }
        let out: Vec<u8> = match (m.command_code(), b) {
            (257, Behaviour::CeaAndClose(rc)) => {
                let _ = io.write_all(answer_to(&m, rc).as_bytes()).await;
                return;
            }
            (257, Behaviour::OpenThenClose) => {
                let _ = io.write_all(answer_to(&m, 2001).as_bytes()).await;
                return;
            }
            (257, _) => answer_to(&m, 2001).as_bytes().to_vec(),
            (280, Behaviour::IgnoreDwr) => continue,
            (280, _) => answer_to(&m, 2001).as_bytes().to_vec(),
            (282, Behaviour::DropOnDpr) => return,
            (282, _) => {
                let _ = io.write_all(answer_to(&m, 2001).as_bytes()).await;
                return;
            }
            _ => {
                let a = answer_to(&m, 2001);
                rewrite(&m, a)
            }
        };
        if io.write_all(&out).await.is_err() {
            return;
        }
    }
}
