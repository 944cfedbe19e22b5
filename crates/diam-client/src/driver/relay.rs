//! Forwarding on the peer task (agents, RFC 6733 §6.1): the task that read
//! a request routes it, keeps it in its forwarding table, and writes the
//! answer back on the connection it came from. No task, and no channel,
//! per request: the upstream peer's task reports every outcome on this
//! task's one relay channel, keyed by a token.
//!
//! The relay channel is unbounded, but what travels on it is: every item
//! is the single outcome of one request some upstream task accepted, and
//! each upstream task accepts at most its `max_pending` requests.

use std::cmp::Reverse;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use diam_link::events::ConnectionId;
use diam_proto::psm::LinkId;
use diam_proto::routing::{agent_answer, has_loop, redirect_answer};
use diam_proto::{avps, result_codes, Escaped, Message};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::PeerTask;
use crate::agent::{Action, ForwardSlot, Route, RoutingTable};
use crate::group::Ticket;
use crate::handle::{lock, Relayed, ReplyTo, Unanswered};
use crate::{Error, PeerHandle};

/// Most upstream peers one request is tried on: the first, one alternate
/// (a request that never reached its connection, or a 3002 from upstream),
/// and one retransmission with the T flag.
const MAX_TRIES: usize = 3;

/// How long past its deadline a forwarded request waits for its upstream
/// task's own timeout report before the entry expires here.
const EXPIRY_GRACE: Duration = Duration::from_millis(100);

/// Where a forwarded request is now.
struct Upstream {
    /// The group member's reservation (health, breaker, in-flight count).
    ticket: Option<Ticket>,
    member: Option<usize>,
}

/// One request being forwarded.
pub(super) struct Forward {
    /// The connection it came in on, and its Hop-by-Hop identifier there.
    link: LinkId,
    hop_by_hop: u32,
    /// What is forwarded (after a proxy hook; without our Route-Record,
    /// which is appended as it is written).
    request: Message,
    route: Option<Arc<Route>>,
    /// The open peer Destination-Host names: tried first.
    direct: Option<PeerHandle>,
    tried: [Option<ConnectionId>; MAX_TRIES],
    tries: usize,
    upstream: Option<Upstream>,
    /// Sent again with the T flag after its upstream connection failed.
    retransmitted: bool,
    /// A 3002 from upstream was tried on an alternate.
    rerouted_on_3002: bool,
    deadline: Instant,
    started: Instant,
    _slot: ForwardSlot,
}

impl Forward {
    fn tried_ids(&self) -> impl Iterator<Item = ConnectionId> + '_ {
        self.tried.iter().flatten().copied()
    }

    fn has_tried(&self, id: ConnectionId) -> bool {
        self.tried_ids().any(|t| t == id)
    }

    /// Whether another group member may still be tried.
    fn has_alternate(&self) -> bool {
        self.tries < MAX_TRIES
            && self.route.as_ref().and_then(|r| r.action.group()).is_some_and(|g| g.member_count() > self.tries)
    }
}

/// What the agent decided for one request.
enum Decision {
    Local(Message),
    Done,
}

impl PeerTask {
    /// The routing table, re-read only when the node's changed.
    fn routing_table(&mut self) -> Option<Arc<RoutingTable>> {
        let agent = &self.node.agent;
        let generation = agent.generation.load(Ordering::Acquire);
        if generation == 0 {
            return None;
        }
        match &self.routes {
            Some((g, t)) if *g == generation => Some(t.clone()),
            _ => {
                self.routes = agent.routes();
                self.routes.as_ref().map(|(_, t)| t.clone())
            }
        }
    }

    /// Routes an application request of an agent: `Some` when it is served
    /// here (by the handlers), `None` when it was forwarded or answered.
    pub(super) fn agent_route(&mut self, link: LinkId, req: Message, now: Instant) -> Option<Message> {
        let Some(table) = self.routing_table() else { return Some(req) };
        match self.decide(link, req, &table, now) {
            Decision::Local(req) => Some(req),
            Decision::Done => None,
        }
    }

    fn decide(&mut self, link: LinkId, req: Message, table: &RoutingTable, now: Instant) -> Decision {
        // Not proxiable: for this node alone (RFC 6733 §6.1.4).
        if !req.flags().is_proxiable() {
            return Decision::Local(req);
        }
        let own = &self.node.config.connection.peer;
        // §7 checks ran already: these AVPs, when present, are well formed.
        let dest_host = req.get(avps::DESTINATION_HOST).ok().flatten();
        if dest_host.is_some_and(|h| h.eq_ignore_ascii_case(&own.origin_host)) {
            return Decision::Local(req);
        }
        let realm = req.get(avps::DESTINATION_REALM).ok().flatten();
        let route = realm.and_then(|r| table.table.lookup(r, req.application_id())).cloned();
        // A Destination-Host naming an open peer (not the one it came from)
        // goes to that peer first (§6.1.5), when the route allows it: the
        // peer is one of the matched route's, or of the Destination-Realm
        // (so a Destination-Host cannot reach around a route and its proxy
        // hook to any peer the agent knows).
        let direct = dest_host.and_then(|h| self.node.open_peer(h)).filter(|p| {
            if Arc::ptr_eq(&p.shared, &self.shared) {
                return false;
            }
            let member = route.as_deref().and_then(|r| r.action.group()).is_some_and(|g| g.has_member(p.shared.id));
            let in_realm = realm
                .is_some_and(|r| lock(&p.shared.info).as_ref().is_some_and(|i| i.origin_realm.eq_ignore_ascii_case(r)));
            member || in_realm
        });
        if direct.is_none() {
            match route.as_deref().map(|r| &r.action) {
                None => {
                    let ours = realm.is_none_or(|r| r.eq_ignore_ascii_case(&own.origin_realm));
                    if ours && dest_host.is_none() {
                        return Decision::Local(req);
                    }
                    // A host of a realm we serve that we cannot reach is
                    // undeliverable; another realm is not served (§7.1.3).
                    let code = if ours {
                        result_codes::DIAMETER_UNABLE_TO_DELIVER
                    } else {
                        result_codes::DIAMETER_REALM_NOT_SERVED
                    };
                    self.agent_error(link, &req, code, None);
                    return Decision::Done;
                }
                Some(Action::Local) => return Decision::Local(req),
                Some(Action::Redirect(to)) => {
                    let answer = redirect_answer(
                        &req,
                        &to.hosts,
                        to.usage,
                        u32::try_from(to.max_cache_time.as_secs()).unwrap_or(u32::MAX),
                        &own.origin_host,
                        &own.origin_realm,
                    );
                    self.node.agent.counters.local_answers.fetch_add(1, Ordering::Relaxed);
                    if let Some(r) = &route {
                        r.local_answer(result_codes::DIAMETER_REDIRECT_INDICATION);
                    }
                    self.machine.send_answer(link, answer);
                    return Decision::Done;
                }
                Some(_) => {}
            }
        }
        // Forwarded: loops first (§6.1.3).
        if has_loop(&req, &own.origin_host) {
            tracing::debug!(peer = %Escaped(&self.shared.label()), "forwarding loop: our identity is in Route-Record");
            self.agent_error(link, &req, result_codes::DIAMETER_LOOP_DETECTED, route.as_deref());
            return Decision::Done;
        }
        // This peer's share of the forwarding table, then the table.
        let share = self.forwards.len() < self.node.config.connection.max_concurrent_handlers;
        let Some(slot) = share.then(|| self.node.agent.slot(req.len())).flatten() else {
            self.agent_error(link, &req, result_codes::DIAMETER_TOO_BUSY, route.as_deref());
            return Decision::Done;
        };
        let request = match route.as_deref().and_then(|r| r.action.hook()) {
            Some(hook) => {
                let Some(info) = self.info.clone() else {
                    self.agent_error(link, &req, result_codes::DIAMETER_UNABLE_TO_DELIVER, route.as_deref());
                    return Decision::Done;
                };
                let e2e = req.end_to_end();
                let hooked =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook.on_request(req.clone(), &info)));
                match hooked {
                    Ok(Ok(m)) if m.is_request() && m.end_to_end() == e2e => m,
                    Ok(Ok(m)) if m.is_request() => m.with_ids(0, e2e),
                    Ok(Ok(_)) => {
                        tracing::warn!("proxy hook returned an answer for a request: refused");
                        self.agent_error(link, &req, result_codes::DIAMETER_UNABLE_TO_COMPLY, route.as_deref());
                        return Decision::Done;
                    }
                    Ok(Err(code)) => {
                        self.agent_error(link, &req, code, route.as_deref());
                        return Decision::Done;
                    }
                    Err(_) => {
                        tracing::warn!("proxy hook panicked");
                        self.agent_error(link, &req, result_codes::DIAMETER_UNABLE_TO_COMPLY, route.as_deref());
                        return Decision::Done;
                    }
                }
            }
            // Kept until its answer (for retransmission): a copy of its own,
            // not a slice that would hold the whole read buffer.
            None => req.detached(),
        };
        let token = self.next_token;
        self.next_token = self.next_token.wrapping_add(1);
        let deadline = now + self.node.config.connection.request_timeout;
        let fwd = Forward {
            link,
            hop_by_hop: req.hop_by_hop(),
            request,
            route,
            direct,
            tried: [None; MAX_TRIES],
            tries: 0,
            upstream: None,
            retransmitted: false,
            rerouted_on_3002: false,
            deadline,
            started: now,
            _slot: slot,
        };
        self.forwards.insert(token, fwd);
        self.forward_expiry.push(Reverse((deadline + EXPIRY_GRACE, token)));
        if self.forward_expiry.len() > 2 * self.forwards.len() + 1024 {
            self.forward_expiry = self.forwards.iter().map(|(t, f)| Reverse((f.deadline + EXPIRY_GRACE, *t))).collect();
        }
        self.send_forward(token, now);
        Decision::Done
    }

    /// An answer the agent generates itself: E bit on protocol errors,
    /// Error-Reporting-Host (RFC 6733 §6.2, §7.1).
    fn agent_error(&mut self, link: LinkId, req: &Message, result_code: u32, route: Option<&Route>) {
        let own = &self.node.config.connection.peer;
        let answer = agent_answer(req, result_code, &own.origin_host, &own.origin_realm).build();
        self.node.agent.counters.local_answers.fetch_add(1, Ordering::Relaxed);
        match route {
            Some(r) => r.local_answer(result_code),
            None => metrics::counter!("diam_relay_local_answers_total", "route" => "none", "result_code" => result_code.to_string())
                .increment(1),
        }
        self.machine.send_answer(link, answer);
    }

    /// The Route-Record appended to what this peer sends us: the identity
    /// of the peer the request was received from (RFC 6733 §6.1.9), its
    /// CER/CEA Origin-Host (§6.7.1); encoded once per peer.
    fn route_record(&mut self) -> bytes::Bytes {
        if let Some(rr) = &self.route_record {
            return rr.clone();
        }
        let identity = self.info.as_ref().map_or_else(|| self.shared.label(), |i| Arc::from(i.origin_host.as_str()));
        let rr = diam_proto::routing::route_record(&identity);
        self.route_record = Some(rr.clone());
        rr
    }

    fn relay_sender(&mut self) -> mpsc::UnboundedSender<Relayed> {
        self.relayed.get_or_insert_with(mpsc::unbounded_channel).0.clone()
    }

    /// Sends forward `token` to its next upstream peer, or answers 3002
    /// when there is none.
    fn send_forward(&mut self, token: u64, now: Instant) {
        let tx = self.relay_sender();
        let record = self.route_record();
        loop {
            let Some(f) = self.forwards.get_mut(&token) else { return };
            if f.tries >= MAX_TRIES {
                break;
            }
            let (peer, ticket) = match f.direct.take() {
                Some(p) if !f.has_tried(p.shared.id) => (p, None),
                _ => {
                    let tried: Vec<ConnectionId> = f.tried_ids().collect();
                    match f.route.as_ref().and_then(|r| r.action.group()).and_then(|g| g.reserve(&tried, now)) {
                        Some((p, t)) => (p, Some(t)),
                        None => break,
                    }
                }
            };
            f.tried[f.tries] = Some(peer.shared.id);
            f.tries += 1;
            let sent = peer.forward(
                f.request.clone(),
                f.deadline,
                ReplyTo::Relay(tx.clone(), token),
                Some(record.clone()),
                f.retransmitted,
            );
            match sent {
                Ok(()) => {
                    let member = ticket.as_ref().map(Ticket::member);
                    if let Some(r) = &f.route {
                        r.metrics.forwarded.increment(1);
                        let m = member.and_then(|m| r.metrics.members.get(m));
                        if let Some(m) = m {
                            m.forwarded.increment(1);
                        }
                        if f.retransmitted {
                            r.metrics.retransmitted.increment(1);
                            if let Some(m) = m {
                                m.retransmitted.increment(1);
                            }
                        }
                    }
                    self.node.agent.counters.forwarded.fetch_add(1, Ordering::Relaxed);
                    f.upstream = Some(Upstream { ticket, member });
                    return;
                }
                Err(e) => {
                    // Never written: another peer may take it as it is.
                    tracing::debug!(to = %Escaped(&peer.shared.label()), error = %e, "upstream refused a forwarded request");
                    if let Some(t) = ticket {
                        t.finish(&Err(Unanswered::unsent(e)), now);
                    }
                    self.node.agent.counters.rerouted.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if let Some(f) = self.forwards.remove(&token) {
            self.fail_forward(f, result_codes::DIAMETER_UNABLE_TO_DELIVER);
        }
    }

    /// Answers a forwarded request with an error of our own.
    fn fail_forward(&mut self, f: Forward, result_code: u32) {
        // The answer goes back with the Hop-by-Hop identifier it came with;
        // the stored request may carry another after a proxy hook.
        let req = if f.request.hop_by_hop() == f.hop_by_hop {
            f.request.clone()
        } else {
            f.request.with_ids(f.hop_by_hop, f.request.end_to_end())
        };
        if self.links.iter().any(|l| l.id == f.link) {
            self.agent_error(f.link, &req, result_code, f.route.as_deref());
        } else {
            self.node.agent.counters.orphaned.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Polls the relay channel: outcomes of requests this task forwarded.
    pub(super) fn poll_relayed(&mut self, cx: &mut Context<'_>, now: Instant) -> bool {
        let mut progress = false;
        // A bounded batch per round, so reads and writes keep their turn.
        for _ in 0..256 {
            let Some((_, rx)) = self.relayed.as_mut() else { return progress };
            match rx.poll_recv(cx) {
                Poll::Ready(Some((token, reply))) => {
                    progress = true;
                    self.on_relayed(token, reply, now);
                }
                _ => return progress,
            }
        }
        // More may be waiting: come back at once.
        cx.waker().wake_by_ref();
        progress
    }

    fn on_relayed(&mut self, token: u64, reply: crate::handle::Reply, now: Instant) {
        // Gone: expired here already (it was answered 3002).
        let Some(mut f) = self.forwards.remove(&token) else { return };
        let member = f.upstream.take().and_then(|up| {
            if let Some(t) = up.ticket {
                t.finish(&reply, now);
            }
            up.member
        });
        match reply {
            Ok(answer) => {
                let rc = diam_proto::peer::result_code(&answer);
                // Could not deliver it, or too busy (§7.1.3: SHOULD try an
                // alternate): one alternate (§6.1.8).
                let alternate =
                    matches!(rc, Some(result_codes::DIAMETER_UNABLE_TO_DELIVER | result_codes::DIAMETER_TOO_BUSY));
                if alternate && !f.rerouted_on_3002 && f.has_alternate() && now < f.deadline {
                    f.rerouted_on_3002 = true;
                    self.node.agent.counters.rerouted.fetch_add(1, Ordering::Relaxed);
                    self.forwards.insert(token, f);
                    self.send_forward(token, now);
                    return;
                }
                self.relay_answer(f, answer, member, now);
            }
            Err(Unanswered { written: None, error }) if now < f.deadline && !matches!(error, Error::Timeout) => {
                // It never reached the connection: another peer as it is.
                self.node.agent.counters.rerouted.fetch_add(1, Ordering::Relaxed);
                self.forwards.insert(token, f);
                self.send_forward(token, now);
            }
            Err(Unanswered { written: Some(_), error: error @ (Error::ConnectionLost(_) | Error::Closed) })
                if now < f.deadline =>
            {
                // Its connection failed with the request outstanding: an
                // alternate, with the T flag and the same End-to-End
                // identifier (§5.5.4), once; never back to that peer.
                if f.retransmitted || !f.has_alternate() {
                    self.fail_forward(f, result_codes::DIAMETER_UNABLE_TO_DELIVER);
                    return;
                }
                tracing::debug!(error = %error, "upstream connection lost: retransmitting with the T flag");
                f.retransmitted = true;
                self.node.agent.counters.retransmitted.fetch_add(1, Ordering::Relaxed);
                self.forwards.insert(token, f);
                self.send_forward(token, now);
            }
            // Timed out upstream, or out of time: unable to deliver.
            Err(_) => self.fail_forward(f, result_codes::DIAMETER_UNABLE_TO_DELIVER),
        }
    }

    /// Writes an upstream answer back on the connection its request came
    /// in on, with the request's Hop-by-Hop identifier.
    fn relay_answer(&mut self, f: Forward, answer: Message, member: Option<usize>, now: Instant) {
        let answer = match f.route.as_deref().and_then(|r| r.action.hook()) {
            Some(hook) => {
                let hooked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    hook.on_answer(answer.clone(), &f.request)
                }));
                match hooked {
                    Ok(a) if !a.is_request() => a,
                    _ => {
                        tracing::warn!("proxy answer hook panicked or returned a request: answer passed unchanged");
                        answer
                    }
                }
            }
            None => answer,
        };
        if let Some(r) = &f.route {
            r.metrics.answered.increment(1);
            let latency = now.saturating_duration_since(f.started).as_secs_f64();
            r.metrics.latency.record(latency);
            if let Some(m) = member.and_then(|m| r.metrics.members.get(m)) {
                m.answered.increment(1);
                m.latency.record(latency);
            }
        }
        let Some(l) = self.links.iter_mut().find(|l| l.id == f.link) else {
            self.node.agent.counters.orphaned.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.node.agent.counters.answered.fetch_add(1, Ordering::Relaxed);
        l.idle = false;
        let start = l.wbuf.len();
        l.wbuf.extend_from_slice(answer.as_bytes());
        l.wbuf[start + 12..start + 16].copy_from_slice(&f.hop_by_hop.to_be_bytes());
        self.shared.counters.messages_sent.fetch_add(1, Ordering::Relaxed);
        self.shared.counters.bytes_sent.fetch_add(answer.len() as u64, Ordering::Relaxed);
    }

    /// Forwarded requests past their deadline (their upstream task did not
    /// report in time): 3002.
    pub(super) fn expire_forwards(&mut self, now: Instant) {
        while let Some(Reverse((t, token))) = self.forward_expiry.peek().copied() {
            if t > now {
                break;
            }
            self.forward_expiry.pop();
            let live = self.forwards.get(&token).is_some_and(|f| f.deadline + EXPIRY_GRACE == t);
            if live {
                if let Some(f) = self.forwards.remove(&token) {
                    self.fail_forward(f, result_codes::DIAMETER_UNABLE_TO_DELIVER);
                }
            }
        }
    }

    /// The earliest forwarding deadline, if any.
    pub(super) fn next_forward_expiry(&mut self) -> Option<Instant> {
        while let Some(Reverse((t, token))) = self.forward_expiry.peek().copied() {
            if self.forwards.get(&token).is_some_and(|f| f.deadline + EXPIRY_GRACE == t) {
                return Some(t);
            }
            self.forward_expiry.pop();
        }
        None
    }

    /// Whether requests that came in on `link` are being forwarded.
    pub(super) fn forwards_on(&self, link: LinkId) -> bool {
        self.forwards.values().any(|f| f.link == link)
    }

    /// A downstream connection closed: its forwarded requests' answers have
    /// nowhere to go.
    pub(super) fn drop_forwards_of(&mut self, link: LinkId) {
        if self.forwards.is_empty() {
            return;
        }
        let before = self.forwards.len();
        self.forwards.retain(|_, f| f.link != link);
        let dropped = before - self.forwards.len();
        if dropped > 0 {
            self.node.agent.counters.orphaned.fetch_add(dropped as u64, Ordering::Relaxed);
        }
    }
}
