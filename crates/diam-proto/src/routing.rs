//! Agent routing, sans-IO (RFC 6733 §2.7, §6.1): the realm routing table's
//! matching, loop detection, and the answers an agent generates itself.
//!
//! [`RealmTable`] maps (Destination-Realm, Application-Id) to whatever the
//! caller routes to. Realms compare case-insensitively (they are domain
//! names); an entry is an exact realm or a `*.realm` suffix (any realm
//! under `realm`, not `realm` itself), for one application or any. A lookup
//! takes the exact realm, else the longest matching suffix, else the
//! default route; within one realm pattern, the application's own entry
//! comes before the entry for any application.
//!
//! ```
//! use diam_proto::routing::{AppMatch, RealmTable};
//! let mut t = RealmTable::new();
//! t.insert("example.net", AppMatch::Any, "relay-a")?;
//! t.insert("*.example.net", AppMatch::Id(4), "ocs")?;
//! t.set_default("fallback");
//! assert_eq!(t.lookup("EXAMPLE.net", 4), Some(&"relay-a"));
//! assert_eq!(t.lookup("ocs.example.net", 4), Some(&"ocs"));
//! assert_eq!(t.lookup("ocs.example.net", 16777238), Some(&"fallback"));
//! # Ok::<(), diam_proto::routing::RouteError>(())
//! ```

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};

use crate::check::error_answer;
use crate::peer::is_identity;
use crate::{avps, result_codes, AvpFlags, Message, MessageBuilder};

/// Which applications a route serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AppMatch {
    /// Every application.
    Any,
    /// One Application-Id.
    Id(u32),
}

/// A realm pattern that is neither a realm nor `*.realm`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("route realm {0:?}: expected a realm (a DiameterIdentity) or *.realm")]
pub struct RouteError(pub String);

/// A realm pattern: `example.net` or `*.example.net`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RealmPattern {
    /// Exactly this realm (lowercase).
    Exact(String),
    /// Any realm ending in `.domain` (stored lowercase with the dot).
    Suffix(String),
}

impl RealmPattern {
    /// Parses `realm` or `*.realm`.
    pub fn parse(p: &str) -> Result<RealmPattern, RouteError> {
        match p.strip_prefix("*.") {
            Some(d) if is_identity(d) => Ok(RealmPattern::Suffix(format!(".{}", d.to_ascii_lowercase()))),
            None if is_identity(p) => Ok(RealmPattern::Exact(p.to_ascii_lowercase())),
            _ => Err(RouteError(p.to_string())),
        }
    }

    /// Whether `realm` matches (case-insensitively).
    pub fn matches(&self, realm: &str) -> bool {
        match self {
            RealmPattern::Exact(e) => e.eq_ignore_ascii_case(realm),
            RealmPattern::Suffix(s) => {
                realm.len() > s.len() && realm.as_bytes()[realm.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes())
            }
        }
    }
}

impl std::fmt::Display for RealmPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RealmPattern::Exact(e) => f.write_str(e),
            RealmPattern::Suffix(s) => write!(f, "*{s}"),
        }
    }
}

/// Entries of one realm pattern: per application, and for any.
#[derive(Debug, Clone)]
struct Entry<T> {
    any: Option<T>,
    apps: Vec<(u32, T)>,
}

impl<T> Default for Entry<T> {
    fn default() -> Self {
        Entry { any: None, apps: Vec::new() }
    }
}

impl<T> Entry<T> {
    fn get(&self, app: u32) -> Option<&T> {
        self.apps.iter().find(|(a, _)| *a == app).map(|(_, v)| v).or(self.any.as_ref())
    }

    fn set(&mut self, app: AppMatch, value: T) {
        match app {
            AppMatch::Any => self.any = Some(value),
            AppMatch::Id(id) => match self.apps.iter_mut().find(|(a, _)| *a == id) {
                Some(slot) => slot.1 = value,
                None => self.apps.push((id, value)),
            },
        }
    }

    fn iter(&self) -> impl Iterator<Item = (AppMatch, &T)> {
        self.apps.iter().map(|(a, v)| (AppMatch::Id(*a), v)).chain(self.any.iter().map(|v| (AppMatch::Any, v)))
    }

    fn len(&self) -> usize {
        self.apps.len() + usize::from(self.any.is_some())
    }
}

/// The realm routing table: (realm pattern, application) to `T`.
///
/// Exact realms are found in O(1) (one hash lookup, lowercasing only a
/// realm that has uppercase letters); suffixes are tried longest first.
#[derive(Debug, Clone)]
pub struct RealmTable<T> {
    exact: HashMap<String, Entry<T>>,
    /// Longest suffix first.
    suffixes: Vec<(String, Entry<T>)>,
    default: Option<T>,
}

impl<T> Default for RealmTable<T> {
    fn default() -> Self {
        RealmTable { exact: HashMap::new(), suffixes: Vec::new(), default: None }
    }
}

impl<T> RealmTable<T> {
    /// An empty table.
    pub fn new() -> Self {
        RealmTable::default()
    }

    /// Adds (or replaces) the entry for `realm` (`example.net` or
    /// `*.example.net`) and `app`.
    pub fn insert(&mut self, realm: &str, app: AppMatch, value: T) -> Result<(), RouteError> {
        match RealmPattern::parse(realm)? {
            RealmPattern::Exact(e) => self.exact.entry(e).or_default().set(app, value),
            RealmPattern::Suffix(s) => match self.suffixes.iter_mut().find(|(x, _)| *x == s) {
                Some((_, entry)) => entry.set(app, value),
                None => {
                    let at = self.suffixes.partition_point(|(x, _)| x.len() >= s.len());
                    let mut entry = Entry::default();
                    entry.set(app, value);
                    self.suffixes.insert(at, (s, entry));
                }
            },
        }
        Ok(())
    }

    /// The route for realms no entry matches.
    pub fn set_default(&mut self, value: T) {
        self.default = Some(value);
    }

    /// The default route, if any.
    pub fn default_route(&self) -> Option<&T> {
        self.default.as_ref()
    }

    /// The entry for `realm` and `app`, without the default route.
    pub fn lookup_entry(&self, realm: &str, app: u32) -> Option<&T> {
        let lower;
        let key = if realm.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = realm.to_ascii_lowercase();
            lower.as_str()
        } else {
            realm
        };
        if let Some(v) = self.exact.get(key).and_then(|e| e.get(app)) {
            return Some(v);
        }
        self.suffixes
            .iter()
            .filter(|(s, _)| key.len() > s.len() && key.ends_with(s.as_str()))
            .find_map(|(_, e)| e.get(app))
    }

    /// The route for `realm` and `app`: its entry, or the default route.
    pub fn lookup(&self, realm: &str, app: u32) -> Option<&T> {
        self.lookup_entry(realm, app).or(self.default.as_ref())
    }

    /// Every entry (not the default), with its pattern.
    pub fn entries(&self) -> impl Iterator<Item = (RealmPattern, AppMatch, &T)> {
        let exact =
            self.exact.iter().flat_map(|(r, e)| e.iter().map(move |(a, v)| (RealmPattern::Exact(r.clone()), a, v)));
        let suffixes =
            self.suffixes.iter().flat_map(|(s, e)| e.iter().map(move |(a, v)| (RealmPattern::Suffix(s.clone()), a, v)));
        exact.chain(suffixes)
    }

    /// Number of entries (not counting the default).
    pub fn len(&self) -> usize {
        self.exact.values().map(Entry::len).sum::<usize>() + self.suffixes.iter().map(|(_, e)| e.len()).sum::<usize>()
    }

    /// Whether the table has no entries and no default.
    pub fn is_empty(&self) -> bool {
        self.len() == 0 && self.default.is_none()
    }
}

/// Whether `identity` is already in the request's Route-Record AVPs: the
/// request has been through us before (RFC 6733 §6.1.3: answer 3005
/// DIAMETER_LOOP_DETECTED).
pub fn has_loop(request: &Message, identity: &str) -> bool {
    request.avps().flatten().any(|a| {
        a.code() == avps::ROUTE_RECORD.code()
            && a.vendor_id().is_none()
            && a.data().eq_ignore_ascii_case(identity.as_bytes())
    })
}

/// The encoded Route-Record AVP (M flag) naming `identity`, ready to append
/// to a forwarded request (RFC 6733 §6.1.9).
pub fn route_record(identity: &str) -> Bytes {
    let len = 8 + identity.len();
    let mut b = BytesMut::with_capacity((len + 3) & !3);
    b.put_u32(avps::ROUTE_RECORD.code());
    b.put_u32((u32::from(AvpFlags::MANDATORY) << 24) | len as u32);
    b.put_slice(identity.as_bytes());
    b.put_bytes(0, ((len + 3) & !3) - len);
    b.freeze()
}

/// An answer the agent generates itself: Session-Id, Result-Code, our
/// Origin-Host/Realm, the E bit on protocol errors (3xxx), and
/// Error-Reporting-Host (RFC 6733 §7.1: the agent that set the Result-Code).
pub fn agent_answer(request: &Message, result_code: u32, origin_host: &str, origin_realm: &str) -> MessageBuilder {
    error_answer(request, result_code, origin_host, origin_realm).avp(avps::ERROR_REPORTING_HOST, origin_host)
}

/// Redirect-Host-Usage (RFC 6733 §6.13): what a redirect answer may be
/// cached for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RedirectUsage {
    /// 0: do not cache.
    DontCache,
    /// 1: every request of the same session.
    AllSession,
    /// 2: every request for the same Destination-Realm.
    AllRealm,
    /// 3: same Destination-Realm and Application-Id.
    RealmAndApplication,
    /// 4: same Application-Id.
    AllApplication,
    /// 5: same Destination-Host.
    AllHost,
    /// 6: same User-Name.
    AllUser,
}

impl RedirectUsage {
    /// The enumerated value on the wire.
    pub fn value(self) -> i32 {
        match self {
            RedirectUsage::DontCache => 0,
            RedirectUsage::AllSession => 1,
            RedirectUsage::AllRealm => 2,
            RedirectUsage::RealmAndApplication => 3,
            RedirectUsage::AllApplication => 4,
            RedirectUsage::AllHost => 5,
            RedirectUsage::AllUser => 6,
        }
    }

    /// From the wire value (`None` for values the RFC does not define).
    pub fn from_value(v: i32) -> Option<RedirectUsage> {
        Some(match v {
            0 => RedirectUsage::DontCache,
            1 => RedirectUsage::AllSession,
            2 => RedirectUsage::AllRealm,
            3 => RedirectUsage::RealmAndApplication,
            4 => RedirectUsage::AllApplication,
            5 => RedirectUsage::AllHost,
            6 => RedirectUsage::AllUser,
            _ => return None,
        })
    }

    /// Parses the names used in configuration (`dont-cache`, `all-session`,
    /// `all-realm`, `realm-and-application`, `all-application`, `all-host`,
    /// `all-user`).
    pub fn parse(s: &str) -> Option<RedirectUsage> {
        Some(match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "dont-cache" => RedirectUsage::DontCache,
            "all-session" => RedirectUsage::AllSession,
            "all-realm" => RedirectUsage::AllRealm,
            "realm-and-application" => RedirectUsage::RealmAndApplication,
            "all-application" => RedirectUsage::AllApplication,
            "all-host" => RedirectUsage::AllHost,
            "all-user" => RedirectUsage::AllUser,
            _ => return None,
        })
    }
}

/// The 3006 DIAMETER_REDIRECT_INDICATION answer of a redirect agent (RFC
/// 6733 §6.1.7, §6.12–6.14): one Redirect-Host per URI, Redirect-Host-Usage
/// and Redirect-Max-Cache-Time (seconds).
pub fn redirect_answer(
    request: &Message,
    hosts: &[String],
    usage: RedirectUsage,
    max_cache_time: u32,
    origin_host: &str,
    origin_realm: &str,
) -> Message {
    let mut b = agent_answer(request, result_codes::DIAMETER_REDIRECT_INDICATION, origin_host, origin_realm);
    for h in hosts {
        b = b.avp(avps::REDIRECT_HOST, h.as_str());
    }
    b.avp(avps::REDIRECT_HOST_USAGE, usage.value()).avp(avps::REDIRECT_MAX_CACHE_TIME, max_cache_time).build()
}

/// What a 3006 answer says: where to go, and for what it may be cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// The Redirect-Host URIs, in order.
    pub hosts: Vec<String>,
    /// Redirect-Host-Usage (absent: do not cache, RFC 6733 §6.13).
    pub usage: RedirectUsage,
    /// Redirect-Max-Cache-Time in seconds (0 when absent).
    pub max_cache_time: u32,
}

/// Reads a redirect indication (Result-Code 3006 with at least one
/// Redirect-Host); `None` for any other answer.
pub fn redirect_of(answer: &Message) -> Option<Redirect> {
    if answer.get(avps::RESULT_CODE).ok()?? != result_codes::DIAMETER_REDIRECT_INDICATION {
        return None;
    }
    let hosts: Vec<String> = answer.get_all(avps::REDIRECT_HOST).flatten().map(str::to_string).collect();
    if hosts.is_empty() {
        return None;
    }
    let usage = answer
        .get(avps::REDIRECT_HOST_USAGE)
        .ok()
        .flatten()
        .and_then(RedirectUsage::from_value)
        .unwrap_or(RedirectUsage::DontCache);
    let max_cache_time = answer.get(avps::REDIRECT_MAX_CACHE_TIME).ok().flatten().unwrap_or(0);
    Some(Redirect { hosts, usage, max_cache_time })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands;

    fn ccr() -> crate::MessageBuilder {
        Message::request(4, 272)
            .proxiable(true)
            .avp(avps::SESSION_ID, "client.example.com;1;1")
            .avp(avps::ORIGIN_HOST, "client.example.com")
            .avp(avps::ORIGIN_REALM, "example.com")
            .avp(avps::DESTINATION_REALM, "example.net")
    }

    #[test]
    fn matching_prefers_exact_then_app_then_longest_suffix() {
        let mut t = RealmTable::new();
        t.insert("example.net", AppMatch::Id(4), 1).unwrap();
        t.insert("example.net", AppMatch::Any, 2).unwrap();
        t.insert("*.example.net", AppMatch::Any, 3).unwrap();
        t.insert("*.ocs.example.net", AppMatch::Any, 4).unwrap();
        t.insert("*.example.net", AppMatch::Id(16_777_238), 5).unwrap();
        assert_eq!(t.lookup("example.net", 4), Some(&1));
        assert_eq!(t.lookup("Example.NET", 4), Some(&1), "case-insensitive");
        assert_eq!(t.lookup("example.net", 5), Some(&2));
        assert_eq!(t.lookup("a.example.net", 4), Some(&3));
        assert_eq!(t.lookup("a.example.net", 16_777_238), Some(&5));
        // A longer suffix for any application beats a shorter one for the app.
        assert_eq!(t.lookup("x.ocs.example.net", 16_777_238), Some(&4));
        assert_eq!(t.lookup("X.OCS.Example.Net", 4), Some(&4));
        // `*.example.net` does not match `example.net` itself, nor a realm
        // that merely ends in the same letters.
        t.insert("*.other.org", AppMatch::Any, 6).unwrap();
        assert_eq!(t.lookup("other.org", 4), None);
        assert_eq!(t.lookup("another.org", 4), None);
        assert_eq!(t.lookup("unknown.org", 4), None);
        t.set_default(9);
        assert_eq!(t.lookup("unknown.org", 4), Some(&9));
        assert_eq!(t.lookup_entry("unknown.org", 4), None);
        assert_eq!(t.len(), 6);
    }

    #[test]
    fn replacing_an_entry_keeps_one() {
        let mut t = RealmTable::new();
        t.insert("*.example.net", AppMatch::Any, 1).unwrap();
        t.insert("*.EXAMPLE.net", AppMatch::Any, 2).unwrap();
        t.insert("example.net", AppMatch::Any, 3).unwrap();
        t.insert("Example.net", AppMatch::Any, 4).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.lookup("a.example.net", 0), Some(&2));
        assert_eq!(t.lookup("example.net", 0), Some(&4));
    }

    #[test]
    fn many_exact_realms_use_the_hash() {
        let mut t = RealmTable::new();
        for i in 0..100 {
            t.insert(&format!("r{i}.example.net"), AppMatch::Any, i).unwrap();
        }
        assert_eq!(t.lookup("R57.example.net", 4), Some(&57));
        assert_eq!(t.lookup("r100.example.net", 4), None);
    }

    #[test]
    fn bad_patterns_are_refused() {
        let mut t = RealmTable::<u8>::new();
        for bad in ["", "*", "*.", "a..b", "exa mple.net", "*.*.net", "ex*.net", "a.b.", "\nx"] {
            assert!(t.insert(bad, AppMatch::Any, 0).is_err(), "{bad:?}");
        }
        assert!(t.is_empty());
    }

    #[test]
    fn loop_detection_reads_route_record() {
        let m = ccr().avp(avps::ROUTE_RECORD, "a.example.org").build();
        assert!(!has_loop(&m, "relay.example.com"));
        let m = ccr().avp(avps::ROUTE_RECORD, "a.example.org").avp(avps::ROUTE_RECORD, "RELAY.example.com").build();
        assert!(has_loop(&m, "relay.example.com"));
        // Origin-Host alone is not a loop.
        let m = ccr().avp(avps::ORIGIN_HOST, "relay.example.com").build();
        assert!(!has_loop(&m, "relay.example.com"));
    }

    #[test]
    fn route_record_bytes_decode_as_an_avp() {
        for id in ["relay.example.com", "a.b", "abcd"] {
            let rr = route_record(id);
            assert_eq!(rr.len() % 4, 0);
            let mut bytes = BytesMut::from(ccr().build().as_bytes());
            bytes.extend_from_slice(&rr);
            let len = bytes.len() as u32;
            bytes[1..4].copy_from_slice(&len.to_be_bytes()[1..]);
            let m = Message::decode(bytes.freeze()).unwrap();
            let all: Vec<&str> = m.get_all(avps::ROUTE_RECORD).flatten().collect();
            assert_eq!(all, [id]);
            assert!(m.find(avps::ROUTE_RECORD).unwrap().flags().is_mandatory());
            assert!(has_loop(&m, id));
        }
    }

    #[test]
    fn agent_errors_carry_e_bit_and_error_reporting_host() {
        let req = ccr().build();
        for code in [
            result_codes::DIAMETER_UNABLE_TO_DELIVER,
            result_codes::DIAMETER_REALM_NOT_SERVED,
            result_codes::DIAMETER_LOOP_DETECTED,
            result_codes::DIAMETER_TOO_BUSY,
        ] {
            let a = agent_answer(&req, code, "relay.example.com", "example.com").build();
            assert!(!a.is_request());
            assert!(a.flags().is_error(), "{code}: E bit");
            assert!(a.flags().is_proxiable());
            assert_eq!(a.get(avps::RESULT_CODE).unwrap(), Some(code));
            assert_eq!(a.get(avps::ERROR_REPORTING_HOST).unwrap(), Some("relay.example.com"));
            assert_eq!(a.get(avps::SESSION_ID).unwrap(), Some("client.example.com;1;1"));
            assert_eq!(a.hop_by_hop(), req.hop_by_hop());
            assert_eq!(a.end_to_end(), req.end_to_end());
        }
    }

    #[test]
    fn redirect_answer_round_trips() {
        let req = ccr().build();
        let hosts = vec!["aaa://ocs1.example.net:3868".to_string(), "aaa://ocs2.example.net".to_string()];
        let a = redirect_answer(
            &req,
            &hosts,
            RedirectUsage::RealmAndApplication,
            600,
            "redirect.example.com",
            "example.com",
        );
        assert!(a.flags().is_error());
        assert_eq!(a.command_code(), commands::CREDIT_CONTROL);
        let r = redirect_of(&a).unwrap();
        assert_eq!(r.hosts, hosts);
        assert_eq!(r.usage, RedirectUsage::RealmAndApplication);
        assert_eq!(r.max_cache_time, 600);
        // Not a redirect: another Result-Code, or no Redirect-Host.
        let other = agent_answer(&req, 3002, "r", "e").build();
        assert_eq!(redirect_of(&other), None);
        let bare = agent_answer(&req, 3006, "r", "e").build();
        assert_eq!(redirect_of(&bare), None);
        for v in 0..=6 {
            assert_eq!(RedirectUsage::from_value(v).map(RedirectUsage::value), Some(v));
        }
        assert_eq!(RedirectUsage::from_value(7), None);
        assert_eq!(RedirectUsage::parse("ALL_REALM"), Some(RedirectUsage::AllRealm));
    }
}
