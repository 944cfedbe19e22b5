//! A node answering with a synchronous handler that builds each answer
//! into the room the previous one handed back
//! ([`MessageBuilder::build_reusing`]) allocates nothing per request on its
//! thread: reading, checking, dispatching, answering and writing all reuse
//! what the connection already holds. A counting global allocator (counting
//! only on the runtime's thread) proves it, against a plain blocking TCP
//! client on another thread.
//!
//! The same allocator also keeps the live heap bytes of the node's thread,
//! which shows that an idle connection gives its buffers back after a
//! watchdog exchange.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bytes::BytesMut;
use diam_client::{sync_handler_fn, Node, NodeConfig};
use diam_proto::{apps, avps, commands, Message};

struct Counting;

/// Heap bytes allocated and not yet freed on a thread that set `NODE`.
static LIVE: AtomicI64 = AtomicI64::new(0);
/// The tests measure process-wide figures: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static NODE: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    static ROOM: RefCell<BytesMut> = RefCell::default();
}

/// Adds `bytes` to [`LIVE`] when on a `NODE` thread.
fn note_live(bytes: i64) {
    if NODE.try_with(Cell::get).unwrap_or(false) {
        LIVE.fetch_add(bytes, Ordering::Relaxed);
    }
}

fn note_allocation() {
    // `try_with`: the allocator may run while thread-locals are torn down.
    let _ = TRACKING.try_with(|tracking| {
        if tracking.get() {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        }
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// bookkeeping touches only const-initialised thread-locals, which never
// allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        note_live(layout.size() as i64);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note_live(-(layout.size() as i64));
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        note_live(new_size as i64 - layout.size() as i64);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const BATCH: u32 = 64;

/// Reads one whole message.
fn read_message(s: &mut TcpStream) -> Message {
    let mut head = [0u8; 4];
    s.read_exact(&mut head).expect("a message header");
    let len = u32::from_be_bytes([0, head[1], head[2], head[3]]) as usize;
    let mut buf = vec![0u8; len];
    buf[..4].copy_from_slice(&head);
    s.read_exact(&mut buf[4..]).expect("the rest of the message");
    Message::decode(buf.into()).expect("a well-formed message")
}

/// The blocking client `host`: CER, then `rounds` batches of CCRs, each batch
/// written at once and its answers read back. Returns the answers' count.
fn client(addr: std::net::SocketAddr, host: &str, rounds: u32, first: u32) -> u32 {
    let (s, answered) = traffic(addr, host, rounds, first);
    // Stay connected until the node has been measured.
    std::mem::forget(s);
    answered
}

/// [`client`]'s work, handing back the open connection.
fn traffic(addr: std::net::SocketAddr, host: &str, rounds: u32, first: u32) -> (TcpStream, u32) {
    let mut s = connect(addr, host);
    let answered = batches(&mut s, host, rounds, first);
    (s, answered)
}

/// A connection that has been through its capabilities exchange.
fn connect(addr: std::net::SocketAddr, host: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connecting");
    s.set_nodelay(true).expect("nodelay");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
    let cer = Message::request(0, commands::CAPABILITIES_EXCHANGE)
        .avp(avps::ORIGIN_HOST, host)
        .avp(avps::ORIGIN_REALM, "example.com")
        .avp(avps::HOST_IP_ADDRESS, std::net::IpAddr::from([127, 0, 0, 1]))
        .avp(avps::VENDOR_ID, 0u32)
        .avp(avps::PRODUCT_NAME, "no-alloc test")
        .avp(avps::AUTH_APPLICATION_ID, apps::CREDIT_CONTROL)
        .build();
    s.write_all(cer.as_bytes()).expect("writing the CER");
    let cea = read_message(&mut s);
    assert_eq!(cea.get(avps::RESULT_CODE).unwrap(), Some(2001), "CEA");
    s
}

/// `rounds` batches of CCRs on `s`, each written at once and its answers
/// read back; the answers' count.
fn batches(s: &mut TcpStream, host: &str, rounds: u32, first: u32) -> u32 {
    let mut answered = 0;
    let mut out = Vec::new();
    for r in 0..rounds {
        out.clear();
        for i in 0..BATCH {
            let n = first + r * BATCH + i;
            let ccr = Message::request(apps::CREDIT_CONTROL, commands::CREDIT_CONTROL)
                .hop_by_hop(n)
                .end_to_end(n)
                .avp(avps::SESSION_ID, format!("{host};1;{n}"))
                .avp(avps::ORIGIN_HOST, host)
                .avp(avps::ORIGIN_REALM, "example.com")
                .avp(avps::DESTINATION_REALM, "example.net")
                .avp(avps::AUTH_APPLICATION_ID, apps::CREDIT_CONTROL)
                .avp(avps::CC_REQUEST_TYPE, 1i32)
                .avp(avps::CC_REQUEST_NUMBER, n)
                .build();
            out.extend_from_slice(ccr.as_bytes());
        }
        s.write_all(&out).expect("writing a batch");
        for i in 0..BATCH {
            let a = read_message(s);
            assert_eq!(a.hop_by_hop(), first + r * BATCH + i, "answers in order");
            assert_eq!(a.get(avps::RESULT_CODE).unwrap(), Some(2001));
            answered += 1;
        }
    }
    answered
}

/// The node answering every CCR with 2001 through `build_reusing`.
fn answering_node() -> Node {
    let handler = sync_handler_fn(|req: Message| {
        ROOM.with(|cell| {
            // Room for a whole read's worth of answers: they are all
            // alive until the connection writes them out, after which
            // `reserve` takes the allocation back.
            let mut room = cell.take();
            if room.capacity() < 1024 {
                room.reserve(64 * 1024);
            }
            let (answer, room) = Message::answer_to_in(&req, room)
                .avp(avps::RESULT_CODE, 2001u32)
                .avp(avps::ORIGIN_HOST, "server.example.net")
                .avp(avps::ORIGIN_REALM, "example.net")
                .build_reusing();
            cell.replace(room);
            answer
        })
    });
    let mut config = NodeConfig::new("server.example.net", "example.net");
    config.connection.peer.auth_application_ids = vec![apps::CREDIT_CONTROL];
    Node::builder(config).default_handler(handler).accept_any().build().unwrap()
}

#[test]
fn answering_requests_allocates_nothing_per_request() {
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let node = answering_node();
        let addr = node.listen_tcp("127.0.0.1:0".parse().unwrap()).await.unwrap();
        // Warm-up: the connection's buffers and tables reach their size.
        let warm = tokio::task::spawn_blocking(move || client(addr, "warm.example.com", 100, 1));
        // The client thread is not counted; the node runs on this one.
        let mut warm = warm;
        let answered = loop {
            tokio::select! {
                r = &mut warm => break r.unwrap(),
                () = tokio::time::sleep(Duration::from_millis(1)) => {}
            }
        };
        assert_eq!(answered, 100 * BATCH);
        let rounds = 200;
        let measured = tokio::task::spawn_blocking(move || client(addr, "measured.example.com", rounds, 1_000_000));
        // Count only while the second client's requests flow.
        tokio::time::sleep(Duration::from_millis(50)).await;
        TRACKING.with(|t| t.set(true));
        let answered = measured.await.unwrap();
        TRACKING.with(|t| t.set(false));
        let n = ALLOCATIONS.with(Cell::get);
        assert_eq!(answered, rounds * BATCH);
        eprintln!("{n} allocations on the node's thread for {answered} answered requests");
        // The counter works.
        ALLOCATIONS.with(|a| a.set(0));
        TRACKING.with(|t| t.set(true));
        drop(std::hint::black_box(Box::new(1u8)));
        TRACKING.with(|t| t.set(false));
        assert_eq!(ALLOCATIONS.with(Cell::get), 1);
        // A new connection costs its own (its task, its buffers), counted
        // while it was set up within the window; per request, nothing.
        assert!(n < u64::from(answered) / 100, "{n} allocations for {answered} requests");
        node.shutdown(Duration::from_secs(1)).await;
    });
}

/// Waits until the live heap stops moving (the node has written and
/// released what it was doing), and returns it.
async fn settled_live() -> i64 {
    let mut last = LIVE.load(Ordering::Relaxed);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = LIVE.load(Ordering::Relaxed);
        if now == last {
            return now;
        }
        last = now;
    }
}

/// After traffic, a connection keeps its read and write buffers (they are
/// reused request after request); once a DWR/DWA exchange says the link is
/// idle, it gives them back. 50 connections: the node's thread is measured
/// once they are up, after 20 batches of 64 requests on each, and after a
/// DWR/DWA on each; the idle figure must give back at least two thirds of
/// what the traffic added.
#[test]
fn an_idle_connection_gives_its_buffers_back_after_a_watchdog_exchange() {
    const CONNECTIONS: usize = 50;
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // The node's tasks all run on this thread (a current-thread runtime);
    // the clients' threads are not counted.
    NODE.with(|n| n.set(true));
    rt.block_on(async {
        let node = answering_node();
        let addr = node.listen_tcp("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let hosts: Vec<String> = (0..CONNECTIONS).map(|i| format!("idle{i}.example.com")).collect();
        let h = hosts.clone();
        let mut streams =
            tokio::task::spawn_blocking(move || h.iter().map(|h| connect(addr, h)).collect::<Vec<_>>()).await.unwrap();
        let fresh = settled_live().await;
        let h = hosts.clone();
        let (mut streams, answered) = tokio::task::spawn_blocking(move || {
            let n: u32 = streams.iter_mut().zip(&h).map(|(s, h)| batches(s, h, 20, 1)).sum();
            (streams, n)
        })
        .await
        .unwrap();
        assert_eq!(answered, CONNECTIONS as u32 * 20 * BATCH);
        let busy = settled_live().await;
        // Every client sends a DWR and reads the DWA.
        streams = tokio::task::spawn_blocking(move || {
            for (i, s) in streams.iter_mut().enumerate() {
                let dwr = Message::request(0, commands::DEVICE_WATCHDOG)
                    .hop_by_hop(7_000_000 + i as u32)
                    .avp(avps::ORIGIN_HOST, hosts[i].as_str())
                    .avp(avps::ORIGIN_REALM, "example.com")
                    .build();
                s.write_all(dwr.as_bytes()).expect("writing a DWR");
                let dwa = read_message(s);
                assert_eq!(dwa.command_code(), commands::DEVICE_WATCHDOG);
                assert_eq!(dwa.get(avps::RESULT_CODE).unwrap(), Some(2001), "DWA");
            }
            streams
        })
        .await
        .unwrap();
        let idle = settled_live().await;
        let n = CONNECTIONS as i64;
        let (added, kept) = ((busy - fresh) / n, (idle - fresh) / n);
        eprintln!("node's thread, per connection: {added} B added by traffic, {kept} B of it kept when idle");
        assert!(added > 8 * 1024, "traffic added only {added} B per connection: nothing to give back");
        assert!(kept * 3 <= added, "an idle connection kept {kept} B of the {added} B its traffic added");
        // Traffic again: the buffers come back and the requests are answered.
        let answered = tokio::task::spawn_blocking(move || batches(&mut streams[0], "idle0.example.com", 1, 9_000_000))
            .await
            .unwrap();
        assert_eq!(answered, BATCH);
        node.shutdown(Duration::from_secs(1)).await;
    });
}
