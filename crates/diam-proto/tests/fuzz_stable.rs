//! Stable-toolchain fuzzing: the same exercise as the libFuzzer target
//! (`fuzz/fuzz_targets/decode.rs`), driven by a deterministic PRNG instead of
//! coverage feedback, so it runs in every `cargo test`.
//!
//! Inputs: purely random byte strings, random messages with valid framing
//! and random AVPs ("AVP soup"), and mutations of valid seed messages built
//! with the builder (bit flips, byte overwrites, truncation, slice
//! duplication and deletion, AVP length and flag corruption, random
//! insertions, concatenation).
//!
//! Environment: `DIAM_FUZZ_SEED` (hex or decimal) replaces the fixed seed,
//! `DIAM_FUZZ_CASES` raises the number of cases (never below the default),
//! `DIAM_FUZZ_WRITE_SEEDS=DIR` writes the seed messages to DIR.
//! Each case's PRNG is derived from (seed, case index), so a failure is
//! reproduced by its printed seed and index alone.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::time::Instant;

use diam_proto::types::{
    Address, Enumerated, Float32, Float64, Grouped, Integer64, OctetString, TimeValue, Unsigned32,
};
use diam_proto::{
    apps, avps, commands, disconnect_cause, result_codes, AvpFlags, AvpIter, AvpKey, CommandFlags, GroupBuilder,
    Message, MessageBuilder,
};

mod exercise {
    include!("common/exercise.rs");
}
use exercise::exercise;

const DEFAULT_SEED: u64 = 0xd1a3_e7e5_f022_6733;
const MIN_CASES: usize = 300_000;

/// SplitMix64: tiny, fast, and good enough to drive mutations.
struct Rng(u64);

impl Rng {
    fn for_case(seed: u64, case: usize) -> Rng {
        let mut r = Rng(seed ^ (case as u64).wrapping_mul(0xa076_1d64_78bd_642f));
        r.next_u64();
        r
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    fn chance(&mut self, num: u64, den: u64) -> bool {
        self.next_u64() % den < num
    }
    fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

// ---------------------------------------------------------------- seeds

const RAT_TYPE: AvpKey<Enumerated> = AvpKey::new(1032).vendor(10415).mandatory();
const USER_LOCATION_INFO: AvpKey<OctetString> = AvpKey::new(22).vendor(10415);
const SERVICE_INFORMATION: AvpKey<Grouped> = AvpKey::new(873).vendor(10415).mandatory();
const PS_INFORMATION: AvpKey<Grouped> = AvpKey::new(874).vendor(10415).mandatory();
const CHARGING_ID: AvpKey<Unsigned32> = AvpKey::new(2).vendor(10415);
const SGSN_ADDRESS: AvpKey<Address> = AvpKey::new(1228).vendor(10415).mandatory();
const PDP_ADDRESS: AvpKey<Address> = AvpKey::new(1227).vendor(10415).mandatory();
const TEST_FLOAT32: AvpKey<Float32> = AvpKey::new(9001).vendor(99999);
const TEST_FLOAT64: AvpKey<Float64> = AvpKey::new(9002);
const TEST_INT64: AvpKey<Integer64> = AvpKey::new(9003).mandatory();

struct Seed {
    name: &'static str,
    bytes: Vec<u8>,
    /// Offsets of AVP headers, nested ones included: targets for length and
    /// flag corruption.
    avp_offsets: Vec<usize>,
}

fn collect_offsets(it: AvpIter<'_>, depth: usize, out: &mut Vec<usize>) {
    for avp in it.flatten() {
        out.push(avp.offset());
        let looks_grouped = avp.data().len() >= 8 && avp.group().all(|r| r.is_ok());
        if looks_grouped && depth < 16 {
            collect_offsets(avp.group(), depth + 1, out);
        }
    }
}

fn seed(name: &'static str, msg: Message) -> Seed {
    let decoded = Message::decode(msg.to_bytes()).unwrap_or_else(|e| panic!("seed {name} does not decode: {e}"));
    let mut avp_offsets = Vec::new();
    collect_offsets(decoded.avps(), 0, &mut avp_offsets);
    Seed { name, bytes: msg.as_bytes().to_vec(), avp_offsets }
}

fn nest(g: &mut GroupBuilder<'_>, levels: usize) {
    if levels == 0 {
        g.avp(avps::CC_TIME, 60u32);
    } else {
        g.raw_group(1000 + levels as u32, AvpFlags::from_bits(AvpFlags::MANDATORY), None, |g| nest(g, levels - 1));
    }
}

fn seeds() -> Vec<Seed> {
    let cer = Message::request(apps::COMMON, commands::CAPABILITIES_EXCHANGE)
        .hop_by_hop(0x0102_0304)
        .end_to_end(0xa0b0_c0d0)
        .avp(avps::ORIGIN_HOST, "client.example.com")
        .avp(avps::ORIGIN_REALM, "example.com")
        .avp(avps::HOST_IP_ADDRESS, Ipv4Addr::new(192, 0, 2, 10))
        .avp(avps::HOST_IP_ADDRESS, Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10))
        .avp(avps::VENDOR_ID, 0u32)
        .avp(avps::PRODUCT_NAME, "diam-proto")
        .avp(avps::ORIGIN_STATE_ID, 1_700_000_000u32)
        .avp(avps::SUPPORTED_VENDOR_ID, 10415u32)
        .avp(avps::AUTH_APPLICATION_ID, apps::CREDIT_CONTROL)
        .group(avps::VENDOR_SPECIFIC_APPLICATION_ID, |g| {
            g.avp(avps::VENDOR_ID, 10415u32).avp(avps::AUTH_APPLICATION_ID, apps::TGPP_GX);
        })
        .avp(avps::INBAND_SECURITY_ID, 0u32)
        .avp(avps::FIRMWARE_REVISION, 1u32)
        .build();
    let cea = Message::answer_to(&cer)
        .avp(avps::RESULT_CODE, result_codes::DIAMETER_SUCCESS)
        .avp(avps::ORIGIN_HOST, "server.example.net")
        .avp(avps::ORIGIN_REALM, "example.net")
        .avp(avps::HOST_IP_ADDRESS, Ipv6Addr::LOCALHOST)
        .avp(avps::VENDOR_ID, 0u32)
        .avp(avps::PRODUCT_NAME, "peer")
        .avp(avps::ACCT_APPLICATION_ID, apps::BASE_ACCOUNTING)
        .build();
    let ccr_i = Message::request(apps::CREDIT_CONTROL, commands::CREDIT_CONTROL)
        .proxiable(true)
        .hop_by_hop(7)
        .end_to_end(0x1234_5678)
        .avp(avps::SESSION_ID, "client.example.com;1700000000;42")
        .avp(avps::ORIGIN_HOST, "client.example.com")
        .avp(avps::ORIGIN_REALM, "example.com")
        .avp(avps::DESTINATION_REALM, "ocs.example.net")
        .avp(avps::AUTH_APPLICATION_ID, apps::CREDIT_CONTROL)
        .avp(avps::SERVICE_CONTEXT_ID, "32251@3gpp.org")
        .avp(avps::CC_REQUEST_TYPE, 1)
        .avp(avps::CC_REQUEST_NUMBER, 0u32)
        .avp(avps::EVENT_TIMESTAMP, TimeValue::from_unix_seconds(1_700_000_000).unwrap())
        .avp(avps::USER_NAME, "alice@example.com")
        .group(avps::SUBSCRIPTION_ID, |g| {
            g.avp(avps::SUBSCRIPTION_ID_TYPE, 0).avp(avps::SUBSCRIPTION_ID_DATA, "15551234567");
        })
        .avp(avps::MULTIPLE_SERVICES_INDICATOR, 1)
        .group(avps::MULTIPLE_SERVICES_CREDIT_CONTROL, |g| {
            g.group(avps::REQUESTED_SERVICE_UNIT, |g| {
                g.avp(avps::CC_TIME, 3600u32);
            })
            .avp(avps::SERVICE_IDENTIFIER, 1u32)
            .avp(avps::RATING_GROUP, 100u32);
        })
        .build();
    let ccr_u = Message::request(apps::CREDIT_CONTROL, commands::CREDIT_CONTROL)
        .proxiable(true)
        .avp(avps::SESSION_ID, "gw.example.com;1;2;x")
        .avp(avps::ORIGIN_HOST, "gw.example.com")
        .avp(avps::ORIGIN_REALM, "example.com")
        .avp(avps::DESTINATION_REALM, "ocs.example.net")
        .avp(avps::AUTH_APPLICATION_ID, apps::CREDIT_CONTROL)
        .avp(avps::CC_REQUEST_TYPE, 2)
        .avp(avps::CC_REQUEST_NUMBER, 1u32)
        .avp(RAT_TYPE, 1004)
        .avp(USER_LOCATION_INFO, &[0x82, 0x02, 0xf8, 0x10, 0x00, 0x01, 0x02][..])
        .group(avps::MULTIPLE_SERVICES_CREDIT_CONTROL, |g| {
            g.group(avps::USED_SERVICE_UNIT, |g| {
                g.avp(avps::CC_TIME, 42u32)
                    .avp(avps::CC_INPUT_OCTETS, 1_000_000u64)
                    .avp(avps::CC_OUTPUT_OCTETS, 3u64 << 33)
                    .avp(avps::CC_TOTAL_OCTETS, u64::MAX);
            })
            .group(avps::REQUESTED_SERVICE_UNIT, |_| {})
            .avp(avps::RATING_GROUP, 100u32);
        })
        .group(SERVICE_INFORMATION, |g| {
            g.group(PS_INFORMATION, |g| {
                g.avp(CHARGING_ID, 0xdead_beefu32)
                    .avp(SGSN_ADDRESS, Ipv4Addr::new(198, 51, 100, 1))
                    .avp(PDP_ADDRESS, Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 3, 4, 5, 6));
            });
        })
        .avp(TEST_FLOAT32, 1.5f32)
        .avp(TEST_FLOAT64, -0.25f64)
        .avp(TEST_INT64, -1i64)
        .build();
    let cca = Message::answer_to(&ccr_i)
        .avp(avps::RESULT_CODE, result_codes::DIAMETER_SUCCESS)
        .avp(avps::ORIGIN_HOST, "ocs1.ocs.example.net")
        .avp(avps::ORIGIN_REALM, "ocs.example.net")
        .avp(avps::AUTH_APPLICATION_ID, apps::CREDIT_CONTROL)
        .avp(avps::CC_REQUEST_TYPE, 1)
        .avp(avps::CC_REQUEST_NUMBER, 0u32)
        .group(avps::MULTIPLE_SERVICES_CREDIT_CONTROL, |g| {
            g.group(avps::GRANTED_SERVICE_UNIT, |g| {
                g.avp(avps::CC_TIME, 3600u32).avp(avps::CC_TOTAL_OCTETS, 1u64 << 30);
            })
            .avp(avps::RATING_GROUP, 100u32)
            .avp(avps::VALIDITY_TIME, 1800u32)
            .avp(avps::RESULT_CODE, result_codes::DIAMETER_SUCCESS);
        })
        .build();
    let dwr = Message::request(apps::COMMON, commands::DEVICE_WATCHDOG)
        .avp(avps::ORIGIN_HOST, "client.example.com")
        .avp(avps::ORIGIN_REALM, "example.com")
        .avp(avps::ORIGIN_STATE_ID, 3u32)
        .build();
    let dwa = Message::answer_to(&dwr)
        .avp(avps::RESULT_CODE, result_codes::DIAMETER_SUCCESS)
        .avp(avps::ORIGIN_HOST, "server.example.net")
        .avp(avps::ORIGIN_REALM, "example.net")
        .build();
    let dpr = Message::request(apps::COMMON, commands::DISCONNECT_PEER)
        .avp(avps::ORIGIN_HOST, "client.example.com")
        .avp(avps::ORIGIN_REALM, "example.com")
        .avp(avps::DISCONNECT_CAUSE, disconnect_cause::DO_NOT_WANT_TO_TALK_TO_YOU)
        .build();
    let dpa = Message::answer_to(&dpr).avp(avps::RESULT_CODE, result_codes::DIAMETER_SUCCESS).build();
    let bad_type = ccr_i.find(avps::CC_REQUEST_TYPE).unwrap();
    let failed = Message::answer_to(&ccr_i)
        .error(true)
        .avp(avps::RESULT_CODE, result_codes::DIAMETER_INVALID_AVP_VALUE)
        .avp(avps::ORIGIN_HOST, "ocs1.ocs.example.net")
        .avp(avps::ORIGIN_REALM, "ocs.example.net")
        .avp(avps::ERROR_MESSAGE, "CC-Request-Type out of range")
        .avp(avps::ERROR_REPORTING_HOST, "ocs1.ocs.example.net")
        .group(avps::FAILED_AVP, |g| {
            g.copy_avp(&bad_type);
        })
        .group(avps::EXPERIMENTAL_RESULT, |g| {
            g.avp(avps::VENDOR_ID, 10415u32).avp(avps::EXPERIMENTAL_RESULT_CODE, 5030u32);
        })
        .build();
    // Reserved bits set everywhere, the T flag, odd payload sizes (padding
    // of 0..3 bytes), an empty AVP, Proxy-Info, and a group whose last child
    // omits its padding (the group length excludes it).
    let mut unpadded_group = Vec::new();
    unpadded_group.extend_from_slice(&33u32.to_be_bytes()); // Proxy-State
    unpadded_group.extend_from_slice(&[0x40, 0, 0, 13]);
    unpadded_group.extend_from_slice(b"state");
    let odd = MessageBuilder::new(CommandFlags::from_bits(0x9f), commands::SESSION_TERMINATION, apps::CREDIT_CONTROL)
        .hop_by_hop(u32::MAX)
        .end_to_end(0)
        .avp(avps::SESSION_ID, "a")
        .raw_avp(avps::CLASS.code(), AvpFlags::from_bits(0x5f), None, &[])
        .avp(avps::CLASS, &[1u8, 2][..])
        .avp(avps::CLASS, &[1u8, 2, 3][..])
        .avp(avps::ROUTE_RECORD, "relay1.example.org")
        .avp(avps::ROUTE_RECORD, "relay2.example.org")
        .group(avps::PROXY_INFO, |g| {
            g.avp(avps::PROXY_HOST, "proxy.example.org").avp(avps::PROXY_STATE, &[0u8; 5][..]);
        })
        .raw_avp(avps::PROXY_INFO.code(), AvpFlags::from_bits(0x40), None, &unpadded_group)
        .avp(avps::TERMINATION_CAUSE, 1)
        .build();
    // Deeper than the exercise's and close to the dictionary's depth bounds.
    let deep = Message::request(apps::CREDIT_CONTROL, commands::CREDIT_CONTROL)
        .raw_group(456, AvpFlags::from_bits(0x40), None, |g| nest(g, 12))
        .build();
    let empty = Message::request(0, 0).build();

    vec![
        seed("CER", cer),
        seed("CEA", cea),
        seed("CCR-I", ccr_i),
        seed("CCR-U", ccr_u),
        seed("CCA", cca),
        seed("DWR", dwr),
        seed("DWA", dwa),
        seed("DPR", dpr),
        seed("DPA", dpa),
        seed("STR-odd", odd),
        seed("answer-Failed-AVP", failed),
        seed("deep", deep),
        seed("empty", empty),
    ]
}

// ------------------------------------------------------------ generators

/// Random bytes of a random length in `0..512`.
fn random_bytes(rng: &mut Rng) -> Vec<u8> {
    let mut v = vec![0; rng.below(512)];
    rng.fill(&mut v);
    v
}

const SOUP_CODES: [u32; 16] = [263, 264, 296, 283, 258, 268, 416, 415, 257, 55, 456, 437, 420, 279, 873, 1032];

/// A message with valid framing and random AVPs: random codes (mostly known
/// ones), flags and payloads, some of them valid nested groups.
fn avp_soup(rng: &mut Rng) -> Vec<u8> {
    let mut v = vec![1, 0, 0, 0];
    let mut h = [0u8; 16];
    rng.fill(&mut h);
    v.extend_from_slice(&h);
    let count = rng.below(12);
    for _ in 0..count {
        soup_avp(rng, &mut v, 0);
    }
    let len = v.len() as u32;
    v[1..4].copy_from_slice(&len.to_be_bytes()[1..]);
    v
}

fn soup_avp(rng: &mut Rng, v: &mut Vec<u8>, depth: usize) {
    let code = if rng.chance(3, 4) { SOUP_CODES[rng.below(SOUP_CODES.len())] } else { rng.next_u64() as u32 };
    let vendor = rng.chance(1, 4);
    let flags = (rng.byte() & 0x7f) | if vendor { 0x80 } else { 0 };
    let at = v.len();
    v.extend_from_slice(&code.to_be_bytes());
    v.extend_from_slice(&[flags, 0, 0, 0]);
    if vendor {
        v.extend_from_slice(&(if rng.chance(1, 2) { 10415u32 } else { rng.next_u64() as u32 }).to_be_bytes());
    }
    if depth < 10 && rng.chance(1, 4) {
        for _ in 0..rng.below(4) {
            soup_avp(rng, v, depth + 1);
        }
    } else {
        let n = match rng.below(4) {
            0 => 4,
            1 => 8,
            2 => [2, 6, 18, 16][rng.below(4)],
            _ => rng.below(40),
        };
        let start = v.len();
        v.resize(start + n, 0);
        rng.fill(&mut v[start..]);
    }
    let len = (v.len() - at) as u32;
    v[at + 5..at + 8].copy_from_slice(&len.to_be_bytes()[1..]);
    // Padding: zero, as RFC 6733 §4.1 requires (mutations corrupt it separately).
    while v.len() % 4 != 0 {
        v.push(0);
    }
}

/// 1 to 3 stacked mutations of a seed, then (half the time) the message
/// length repaired to the new size so that decoding gets past the header.
fn mutate(rng: &mut Rng, seed: &Seed, seeds: &[Seed]) -> Vec<u8> {
    let mut d = seed.bytes.clone();
    for _ in 0..1 + rng.below(3) {
        let len = d.len();
        match rng.below(10) {
            // Bit flips.
            0 if len > 0 => {
                for _ in 0..1 + rng.below(4) {
                    let i = rng.below(len);
                    d[i] ^= 1 << rng.below(8);
                }
            }
            // Bytes set to 0x00, 0xff or random.
            1 if len > 0 => {
                for _ in 0..1 + rng.below(4) {
                    let i = rng.below(len);
                    d[i] = match rng.below(3) {
                        0 => 0,
                        1 => 0xff,
                        _ => rng.byte(),
                    };
                }
            }
            // Truncation.
            2 => d.truncate(rng.below(len + 1)),
            // Duplication of a slice at a random position.
            3 => {
                let a = rng.below(len + 1);
                let b = a + rng.below(len - a + 1);
                let slice = d[a..b].to_vec();
                let at = rng.below(len + 1);
                d.splice(at..at, slice);
            }
            // AVP length corruption.
            4 | 5 if !seed.avp_offsets.is_empty() => {
                let off = seed.avp_offsets[rng.below(seed.avp_offsets.len())];
                if off + 8 <= len {
                    let old = u32::from_be_bytes([0, d[off + 5], d[off + 6], d[off + 7]]);
                    let new = match rng.below(8) {
                        0 => [0, 1, 7, 8, 9, 11, 12, 13][rng.below(8)],
                        1 => old.wrapping_add(1 + rng.below(4) as u32),
                        2 => old.wrapping_sub(1 + rng.below(4) as u32),
                        3 => old.wrapping_add(4 * (1 + rng.below(8) as u32)),
                        4 => old.wrapping_sub(4 * (1 + rng.below(8) as u32)),
                        5 => 0x00ff_ffff,
                        6 => (len - off) as u32 + rng.below(3) as u32,
                        _ => rng.next_u64() as u32,
                    };
                    d[off + 5..off + 8].copy_from_slice(&new.to_be_bytes()[1..]);
                }
            }
            // AVP flag corruption (V flag toggles the header size).
            6 if !seed.avp_offsets.is_empty() => {
                let off = seed.avp_offsets[rng.below(seed.avp_offsets.len())];
                if off + 4 < len {
                    d[off + 4] ^= [0x80, 0x40, 0x20, 0x1f][rng.below(4)];
                }
            }
            // Insertion of random bytes (word-aligned half of the time).
            7 => {
                let aligned = rng.chance(1, 2);
                let n = if aligned { 4 * (1 + rng.below(4)) } else { 1 + rng.below(16) };
                let at = if aligned { rng.below(len / 4 + 1) * 4 } else { rng.below(len + 1) };
                let mut ins = vec![0; n];
                rng.fill(&mut ins);
                d.splice(at..at, ins);
            }
            // Deletion of a slice.
            8 if len > 0 => {
                let a = rng.below(len);
                let b = a + 1 + rng.below((len - a).min(16));
                d.drain(a..b);
            }
            // Concatenation with another seed (a stream of two messages).
            _ => d.extend_from_slice(&seeds[rng.below(seeds.len())].bytes),
        }
    }
    if d.len() >= 4 && rng.chance(1, 2) {
        let len = d.len() as u32;
        d[1..4].copy_from_slice(&len.to_be_bytes()[1..]);
    }
    d
}

// ------------------------------------------------------------------ driver

#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    cases: usize,
    random: usize,
    random_decoded: usize,
    soup: usize,
    soup_decoded: usize,
    mutated: usize,
    mutated_decoded: usize,
    frames: usize,
    avps: usize,
    bytes: usize,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.cases += o.cases;
        self.random += o.random;
        self.random_decoded += o.random_decoded;
        self.soup += o.soup;
        self.soup_decoded += o.soup_decoded;
        self.mutated += o.mutated;
        self.mutated_decoded += o.mutated_decoded;
        self.frames += o.frames;
        self.avps += o.avps;
        self.bytes += o.bytes;
    }
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

/// The input for case `i`: a quarter purely random, a quarter AVP soup, half
/// mutated seeds.
fn generate(seed: u64, i: usize, seeds: &[Seed]) -> (&'static str, Vec<u8>) {
    let mut rng = Rng::for_case(seed, i);
    match i % 4 {
        0 => ("random", random_bytes(&mut rng)),
        1 => ("soup", avp_soup(&mut rng)),
        _ => {
            let s = &seeds[rng.below(seeds.len())];
            (s.name, mutate(&mut rng, s, seeds))
        }
    }
}

fn run_cases(seed: u64, seeds: &[Seed], first: usize, step: usize, total: usize) -> Stats {
    let mut st = Stats::default();
    for i in (first..total).step_by(step) {
        let (kind, input) = generate(seed, i, seeds);
        let outcome = match catch_unwind(AssertUnwindSafe(|| exercise(&input))) {
            Ok(o) => o,
            Err(panic) => {
                eprintln!(
                    "fuzz_stable: case {i} ({kind}) failed; reproduce with DIAM_FUZZ_SEED={seed:#x}; \
                     input ({} bytes): {}",
                    input.len(),
                    hex(&input)
                );
                resume_unwind(panic);
            }
        };
        st.cases += 1;
        st.frames += outcome.frames;
        st.avps += outcome.avps;
        st.bytes += input.len();
        let d = usize::from(outcome.decoded);
        let (count, decoded) = match kind {
            "random" => (&mut st.random, &mut st.random_decoded),
            "soup" => (&mut st.soup, &mut st.soup_decoded),
            _ => (&mut st.mutated, &mut st.mutated_decoded),
        };
        *count += 1;
        *decoded += d;
    }
    st
}

fn env_number(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => v.parse().ok(),
    }
}

/// Also writes the seeds to `$DIAM_FUZZ_WRITE_SEEDS/<name>` when set, to
/// start a libFuzzer corpus (see `fuzz/README.md`).
#[test]
fn seeds_pass_the_exercise() {
    let dump = std::env::var_os("DIAM_FUZZ_WRITE_SEEDS").map(std::path::PathBuf::from);
    if let Some(dir) = &dump {
        std::fs::create_dir_all(dir).unwrap();
    }
    for s in seeds() {
        if let Some(dir) = &dump {
            std::fs::write(dir.join(s.name), &s.bytes).unwrap();
        }
        let o = exercise(&s.bytes);
        assert!(o.decoded, "seed {} does not decode", s.name);
        // "deep" nests further than the exercise descends.
        assert!(o.avps >= s.avp_offsets.len() || s.name == "deep", "seed {}: too few AVPs visited", s.name);
    }
}

#[test]
fn fuzz_decoders_with_random_and_mutated_inputs() {
    let seed = env_number("DIAM_FUZZ_SEED").unwrap_or(DEFAULT_SEED);
    let total = env_number("DIAM_FUZZ_CASES").map_or(MIN_CASES, |n| (n as usize).max(MIN_CASES));
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4);
    let seeds = &seeds();
    eprintln!(
        "fuzz_stable: seed {seed:#x}, {total} cases on {threads} threads, {} seed messages{}",
        seeds.len(),
        if cfg!(debug_assertions) { " (debug build)" } else { "" }
    );

    let started = Instant::now();
    let mut stats = Stats::default();
    std::thread::scope(|s| {
        let handles: Vec<_> =
            (0..threads).map(|t| s.spawn(move || run_cases(seed, seeds, t, threads, total))).collect();
        for h in handles {
            match h.join() {
                Ok(st) => stats.add(&st),
                Err(panic) => resume_unwind(panic),
            }
        }
    });
    let elapsed = started.elapsed();
    eprintln!(
        "fuzz_stable: {} executions in {:.2?} ({:.0}/s), {} bytes, {} frames, {} AVPs visited",
        stats.cases,
        elapsed,
        stats.cases as f64 / elapsed.as_secs_f64(),
        stats.bytes,
        stats.frames,
        stats.avps
    );
    eprintln!(
        "fuzz_stable: decoded {}/{} random, {}/{} AVP soup, {}/{} mutated",
        stats.random_decoded, stats.random, stats.soup_decoded, stats.soup, stats.mutated_decoded, stats.mutated
    );

    assert_eq!(stats.cases, total, "not every case ran");
    assert!(total >= MIN_CASES);
    // The generators must keep producing decodable input, or the invariants
    // on decoded messages (rebuild, typed values, ...) go untested.
    assert!(stats.soup_decoded * 10 >= stats.soup * 9, "AVP soup should nearly always decode");
    assert!(stats.mutated_decoded * 12 >= stats.mutated, "fewer than 1 in 12 mutated inputs decode");
    assert!(stats.avps >= total, "too few AVPs visited: {}", stats.avps);
}
