//! A node answering with a synchronous handler that builds each answer
//! into the room the previous one handed back
//! ([`MessageBuilder::build_reusing`]) allocates nothing per request on its
//! thread: reading, checking, dispatching, answering and writing all reuse
//! what the connection already holds. A counting global allocator (counting
//! only on the runtime's thread) proves it, against a plain blocking TCP
//! client on another thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::BytesMut;
use diam_client::{sync_handler_fn, Node, NodeConfig};
use diam_proto::{apps, avps, commands, Message};

struct Counting;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    static ROOM: RefCell<BytesMut> = RefCell::default();
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
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
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
            let a = read_message(&mut s);
            assert_eq!(a.hop_by_hop(), first + r * BATCH + i, "answers in order");
            assert_eq!(a.get(avps::RESULT_CODE).unwrap(), Some(2001));
            answered += 1;
        }
    }
    // Stay connected until the node has been measured.
    std::mem::forget(s);
    answered
}

#[test]
fn answering_requests_allocates_nothing_per_request() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
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
        let node = Node::builder(config).default_handler(handler).accept_any().build().unwrap();
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
