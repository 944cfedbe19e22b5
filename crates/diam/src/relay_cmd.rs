//! `diam relay`: a Diameter agent (RFC 6733 §2.8) routing by the realm
//! routing table: relay routes from `--route`/`--default-route`, and relay,
//! proxy, redirect and local routes from `--config`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::ArgMatches;
use diam_client::{Action, GroupConfig, Node, NodeConfig, PeerGroup, PeerHandle, ProxyHook, RedirectTo, RoutingTable};
use diam_link::balance::Strategy;
use diam_proto::peer::PeerInfo;
use diam_proto::routing::RedirectUsage;
use diam_proto::{Dictionary, Message};
use serde_json::json;

use crate::config_file::{self, FileConfig, RouteFile};
use crate::json::{cli_avp, write_cli_avp, CliAvp};
use crate::peer_cmd::{
    check_inbound, check_tls_peers, config, load_tls, parse_target, peer_events, print_json, reload_on_hangup, resolve,
    shutdown_signal,
};
use crate::{Failure, RelayArgs};

/// Most routes one relay takes.
const MAX_ROUTES: usize = 4096;

/// A route as given: realm pattern, application, action and its peers.
#[derive(Debug)]
struct RouteSpec {
    realm: Option<String>,
    app: Option<u32>,
    action: String,
    peers: Vec<String>,
    strategy: Option<Strategy>,
    set: Vec<String>,
    strip: Vec<String>,
    set_answer: Vec<String>,
    usage: RedirectUsage,
    max_cache_time: Duration,
}

impl RouteSpec {
    fn relay(realm: Option<String>, app: Option<u32>, peers: Vec<String>) -> RouteSpec {
        RouteSpec {
            realm,
            app,
            action: "relay".into(),
            peers,
            strategy: None,
            set: Vec::new(),
            strip: Vec::new(),
            set_answer: Vec::new(),
            usage: RedirectUsage::RealmAndApplication,
            max_cache_time: Duration::from_secs(600),
        }
    }

    fn from_file(r: RouteFile, default: bool) -> Result<RouteSpec, Failure> {
        let what = r.realm.clone().unwrap_or_else(|| "default".into());
        let bad = |m: String| Failure::input(format!("--config route {what}: {m}"));
        if default && r.realm.is_some() {
            return Err(bad("the default route has no realm".into()));
        }
        if !default && r.realm.is_none() {
            return Err(bad("a route needs a realm".into()));
        }
        let strategy = r.strategy.as_deref().map(parse_strategy).transpose().map_err(bad)?;
        let usage = match r.usage.as_deref() {
            None => RedirectUsage::RealmAndApplication,
            Some(u) => RedirectUsage::parse(u).ok_or_else(|| bad(format!("usage {u:?}: expected dont-cache, all-session, all-realm, realm-and-application, all-application, all-host or all-user")))?,
        };
        Ok(RouteSpec {
            realm: r.realm,
            app: r.app,
            action: r.action.unwrap_or_else(|| "relay".into()),
            peers: r.peers,
            strategy,
            set: r.set,
            strip: r.strip,
            set_answer: r.set_answer,
            usage,
            max_cache_time: Duration::from_secs(u64::from(r.max_cache_time_s.unwrap_or(600))),
        })
    }
}

fn parse_strategy(s: &str) -> Result<Strategy, String> {
    s.parse().map_err(|e: diam_link::ConfigError| e.to_string())
}

/// Parses `REALM[:APP]=PEER[,PEER...]`.
fn parse_route(item: &str) -> Result<RouteSpec, Failure> {
    let bad = |m: &str| Failure::input(format!("--route {item}: {m}"));
    let (key, peers) = item.split_once('=').ok_or_else(|| bad("expected REALM[:APP]=PEER[,PEER...]"))?;
    let (realm, app) = match key.split_once(':') {
        Some((r, a)) => (r, Some(a.parse::<u32>().map_err(|_| bad("APP must be an Application-Id (a number)"))?)),
        None => (key, None),
    };
    let peers: Vec<String> = peers.split(',').map(str::trim).filter(|p| !p.is_empty()).map(String::from).collect();
    if peers.is_empty() {
        return Err(bad("no peer"));
    }
    Ok(RouteSpec::relay(Some(realm.to_string()), app, peers))
}

/// A proxy route's policy from the file: AVPs set (added, replacing the
/// same code) or stripped in requests, and set in answers.
struct AvpPolicy {
    set: Vec<CliAvp>,
    strip: Vec<u32>,
    set_answer: Vec<CliAvp>,
    dictionary: Arc<Dictionary>,
}

impl AvpPolicy {
    /// `None` when a set AVP could not be written (never for the AVPs the
    /// route was built with: they are checked then).
    fn apply(&self, msg: &Message, set: &[CliAvp], strip: &[u32]) -> Option<Message> {
        let mut b = msg.edit(|a| {
            let code = a.code();
            !strip.contains(&code) && !set.iter().any(|s| s.code == code && s.vendor_id == a.vendor_id())
        });
        for avp in set {
            // Checked when the route was built: never grouped here.
            b = write_cli_avp(b, avp, &self.dictionary).ok()?;
        }
        Some(b.build())
    }
}

impl ProxyHook for AvpPolicy {
    fn on_request(&self, request: Message, _from: &PeerInfo) -> Result<Message, u32> {
        // Fails closed: a request the policy cannot be applied to is not
        // forwarded (5012 DIAMETER_UNABLE_TO_COMPLY).
        self.apply(&request, &self.set, &self.strip).ok_or(diam_proto::result_codes::DIAMETER_UNABLE_TO_COMPLY)
    }

    fn on_answer(&self, answer: Message, _request: &Message) -> Message {
        if self.set_answer.is_empty() {
            return answer;
        }
        self.apply(&answer, &self.set_answer, &[]).unwrap_or(answer)
    }
}

fn policy(spec: &RouteSpec, dictionary: &Arc<Dictionary>) -> Result<AvpPolicy, Failure> {
    let parse = |list: &[String]| -> Result<Vec<CliAvp>, Failure> {
        list.iter()
            .map(|s| {
                let a = cli_avp(s, dictionary).map_err(|e| Failure::input(format!("--config proxy set: {e}")))?;
                if a.children.is_some() {
                    return Err(Failure::input(format!("--config proxy set {s}: grouped AVPs are not supported here")));
                }
                Ok(a)
            })
            .collect()
    };
    let mut strip = Vec::new();
    for s in &spec.strip {
        let code = match dictionary.avp_by_name(s) {
            Some(d) => d.code(),
            None => s
                .parse::<u32>()
                .map_err(|_| Failure::input(format!("--config proxy strip {s}: not an AVP name or code")))?,
        };
        strip.push(code);
    }
    Ok(AvpPolicy {
        set: parse(&spec.set)?,
        strip,
        set_answer: parse(&spec.set_answer)?,
        dictionary: dictionary.clone(),
    })
}

/// Resolves route peers to node peers, adding each once: an identity alone
/// is a peer that connects to us (or one `--connect` names); an address is
/// dialled (`aaa://NAME` names its identity, a bare address learns it).
struct Peers {
    node: Node,
    by_item: HashMap<String, PeerHandle>,
}

impl Peers {
    fn get(&mut self, item: &str) -> Result<PeerHandle, Failure> {
        if let Some(h) = self.by_item.get(item) {
            return Ok(h.clone());
        }
        let bare_identity = !item.contains(':') && !item.contains('=');
        let handle = if bare_identity {
            if !diam_proto::peer::is_identity(item) {
                return Err(Failure::input(format!("route peer {item}: not a DiameterIdentity or an address")));
            }
            match self.node.peer(item) {
                Some(h) => h,
                None => self.node.add_peer(item, []).map_err(|e| Failure::input(format!("route peer {item}: {e}")))?,
            }
        } else {
            let (identity, addr) = parse_target("--route", item)?;
            match identity {
                Some(id) => match self.node.peer(&id) {
                    Some(h) => h,
                    None => self
                        .node
                        .add_peer(&id, [addr])
                        .map_err(|e| Failure::input(format!("route peer {item}: {e}")))?,
                },
                None => {
                    self.node.add_address_peer(addr).map_err(|e| Failure::input(format!("route peer {item}: {e}")))?
                }
            }
        };
        self.by_item.insert(item.to_string(), handle.clone());
        Ok(handle)
    }
}

fn action(spec: &RouteSpec, peers: &mut Peers, strategy: Strategy, dict: &Arc<Dictionary>) -> Result<Action, Failure> {
    let name = spec.realm.as_deref().unwrap_or("default");
    match spec.action.as_str() {
        "local" => Ok(Action::Local),
        "redirect" => {
            let to = RedirectTo::new(&spec.peers, spec.max_cache_time)
                .map_err(|e| Failure::input(format!("route {name}: {e}")))?;
            Ok(Action::Redirect(to.usage(spec.usage)))
        }
        "relay" | "proxy" => {
            if spec.peers.is_empty() {
                return Err(Failure::input(format!("route {name}: no peers")));
            }
            let handles = spec.peers.iter().map(|p| peers.get(p)).collect::<Result<Vec<_>, _>>()?;
            let group = PeerGroup::with_peers(handles, GroupConfig::balance(spec.strategy.unwrap_or(strategy)))
                .map_err(|e| Failure::input(format!("route {name}: {e}")))?;
            if spec.action == "proxy" {
                Ok(Action::Proxy(group, Arc::new(policy(spec, dict)?)))
            } else {
                if !spec.set.is_empty() || !spec.strip.is_empty() || !spec.set_answer.is_empty() {
                    return Err(Failure::input(format!(
                        "route {name}: set/strip need action = \"proxy\" (a relay changes nothing)"
                    )));
                }
                Ok(Action::Relay(group))
            }
        }
        other => {
            Err(Failure::input(format!("route {name}: action {other:?}: expected relay, proxy, redirect or local")))
        }
    }
}

/// Builds the routing table of `specs` and `default`, adding the peers they
/// name that the node does not have yet.
fn table(
    specs: &[RouteSpec],
    default: Option<&RouteSpec>,
    peers: &mut Peers,
    strategy: Strategy,
    dict: &Arc<Dictionary>,
) -> Result<RoutingTable, Failure> {
    let mut table = RoutingTable::new();
    for s in specs {
        let a = action(s, peers, strategy, dict)?;
        let realm = s.realm.as_deref().unwrap_or_default();
        table = table.route(realm, s.app, a).map_err(|e| Failure::input(e.to_string()))?;
    }
    if let Some(d) = default {
        table = table.default_route(action(d, peers, strategy, dict)?);
    }
    Ok(table)
}

/// The routes of the file at `path`.
fn file_routes(path: &Path) -> Result<(Vec<RouteSpec>, Option<RouteSpec>), Failure> {
    let file = config_file::load(path)?;
    let specs = file.routes.into_iter().map(|r| RouteSpec::from_file(r, false)).collect::<Result<Vec<_>, _>>()?;
    let default = file.default_route.map(|d| RouteSpec::from_file(d, true)).transpose()?;
    if specs.is_empty() && default.is_none() {
        return Err(Failure::input("no route"));
    }
    if specs.len() > MAX_ROUTES {
        return Err(Failure::input(format!("at most {MAX_ROUTES} routes")));
    }
    Ok((specs, default))
}

/// SIGHUP re-reads the routes of `--config` and swaps the routing table
/// without dropping traffic (requests under way finish on their old
/// route). Peers the new routes name are added; peers no route names any
/// more stay connected. A file that does not parse keeps the old table.
#[cfg(unix)]
fn reload_routes_on_hangup(
    path: std::path::PathBuf,
    mut peers: Peers,
    strategy: Strategy,
    dict: Arc<Dictionary>,
    out: Arc<Mutex<()>>,
) {
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else { return };
        while hup.recv().await.is_some() {
            let built = file_routes(&path).and_then(|(specs, default)| {
                Ok((specs.len(), table(&specs, default.as_ref(), &mut peers, strategy, &dict)?))
            });
            match built {
                Ok((n, t)) => {
                    peers.node.set_routes(t);
                    eprintln!("diam relay: routes reloaded from {}", path.display());
                    let _guard = out.lock();
                    let _ = print_json(&json!({"event": "routes_reloaded", "routes": n}));
                }
                Err(f) => eprintln!("diam relay: reloading routes failed, keeping the old ones: {}", f.message),
            }
        }
    });
}

pub(crate) fn relay(args: &RelayArgs, matches: &ArgMatches) -> Result<(), Failure> {
    let mut args = args.clone();
    let mut file = FileConfig::default();
    if let Some(path) = &args.config {
        file = config_file::load(path)?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let m = matches;
        config_file::apply_common(
            m,
            &file,
            &dir,
            (&mut args.identity.origin_host, &mut args.identity.origin_realm),
            &mut args.tuning,
            &mut args.tls,
        );
        config_file::take(m, "listen", &mut args.listen, file.listen.clone().map(Some));
        config_file::take(m, "tls_listen", &mut args.tls_listen, file.tls_listen.clone().map(Some));
        config_file::take_list(m, "allow", &mut args.allow, file.allow.clone());
        config_file::take_list(m, "connect", &mut args.connect, config_file::peer_items(&file)?);
        if let Some(s) = &file.strategy {
            let s = parse_strategy(s).map_err(|e| Failure::input(format!("--config strategy: {e}")))?;
            config_file::take(m, "strategy", &mut args.strategy, Some(s));
        }
        if let Some(a) = &file.metrics {
            let a = a.parse().map_err(|e| Failure::input(format!("--config metrics {a}: {e}")))?;
            config_file::take(m, "metrics", &mut args.metrics, Some(Some(a)));
        }
        if let Some(l) = &file.limits {
            config_file::take(m, "max_connections", &mut args.max_connections, l.max_connections);
            config_file::take(m, "max_forwards", &mut args.max_forwards, l.max_forwards);
        }
        config_file::check_tls(&args.tls)?;
    }
    let listen =
        args.listen.as_deref().ok_or_else(|| Failure::input("--listen is required (or listen in --config)"))?;
    let listen = resolve(listen).map_err(|f| Failure::input(format!("--listen {}", f.message)))?;
    let tls_listen = match &args.tls_listen {
        Some(a) => Some(resolve(a).map_err(|f| Failure::input(format!("--tls-listen {}", f.message)))?),
        None => None,
    };
    if tls_listen.is_some() && args.tls.tls_cert.is_none() {
        return Err(Failure::input("--tls-listen needs --tls-cert, --tls-key and --tls-ca"));
    }
    // Routes: the flags', else the file's (then SIGHUP re-reads them).
    let mut routes_from_file = false;
    let mut specs = Vec::new();
    let mut default = None;
    if !args.route.is_empty() || args.default_route.is_some() {
        for r in &args.route {
            specs.push(parse_route(r)?);
        }
        if let Some(d) = &args.default_route {
            let peers: Vec<String> = d.split(',').map(str::trim).filter(|p| !p.is_empty()).map(String::from).collect();
            if peers.is_empty() {
                return Err(Failure::input("--default-route: no peer"));
            }
            default = Some(RouteSpec::relay(None, None, peers));
        }
    } else {
        routes_from_file = true;
        for r in std::mem::take(&mut file.routes) {
            specs.push(RouteSpec::from_file(r, false)?);
        }
        if let Some(d) = file.default_route.take() {
            default = Some(RouteSpec::from_file(d, true)?);
        }
    }
    if specs.is_empty() && default.is_none() {
        return Err(Failure::input(
            "no route: give --route REALM[:APP]=PEER[,PEER...], --default-route, or routes in --config",
        ));
    }
    if specs.len() > MAX_ROUTES {
        return Err(Failure::input(format!("at most {MAX_ROUTES} routes")));
    }
    for s in &specs {
        if let Some(r) = &s.realm {
            diam_proto::routing::RealmPattern::parse(r).map_err(|e| Failure::input(format!("--route: {e}")))?;
        }
    }
    let mut connect = Vec::new();
    for c in &args.connect {
        // An identity alone: a peer that connects to us.
        if !c.contains(':') && !c.contains('=') {
            if !diam_proto::peer::is_identity(c) {
                return Err(Failure::input(format!("--connect {c}: not a DiameterIdentity or an address")));
            }
            connect.push((Some(c.clone()), None));
        } else {
            let (id, addr) = parse_target("--connect", c)?;
            connect.push((id, Some(addr)));
        }
    }
    check_tls_peers("--connect", connect.iter().filter_map(|(_, a)| a.as_ref()), &args.tls)?;
    check_inbound("diam relay", &args.allow, args.max_connections)?;
    let tls = load_tls(&args.tls)?;
    let identity = args.identity.to_identity();
    let mut cfg = config(&identity, &args.tuning, &[], &args.tls)?;
    // Each peer may have as many requests being forwarded as it may have
    // pending with us (--max-pending).
    cfg.max_concurrent_handlers = cfg.max_pending;
    let rt = crate::peer_cmd::runtime_with(args.threads)?;
    if let Some(metrics_addr) = args.metrics {
        let _in_runtime = rt.enter();
        crate::metrics_export::install(metrics_addr)?;
    }
    rt.block_on(async move {
        let node_config = NodeConfig {
            connection: cfg,
            max_connections: args.max_connections,
            max_connections_per_source: NodeConfig::default().max_connections_per_source.min(args.max_connections),
            max_forwards: args.max_forwards,
            ..NodeConfig::default()
        };
        let mut builder = Node::builder(node_config);
        if args.allow.is_empty() {
            builder = builder.accept_any();
        }
        for p in &args.allow {
            builder = builder.allow(p.clone());
        }
        if let Some(t) = tls {
            builder = builder.tls(t);
        }
        let node = builder.build().map_err(|e| Failure::input(e.to_string()))?;
        let out = Arc::new(Mutex::new(()));
        let _peer_events = peer_events(&node, out.clone());
        for (identity, addr) in connect {
            let added = match (identity, addr) {
                (Some(id), Some(a)) => node.add_peer(&id, [a]).map(drop),
                (Some(id), None) => node.add_peer(&id, []).map(drop),
                (None, Some(a)) => node.add_address_peer(a).map(drop),
                (None, None) => Ok(()),
            };
            added.map_err(|e| Failure::input(format!("--connect: {e}")))?;
        }
        let dict = Arc::new(Dictionary::base().clone());
        let mut peers = Peers { node: node.clone(), by_item: HashMap::new() };
        node.set_routes(table(&specs, default.as_ref(), &mut peers, args.strategy, &dict)?);
        let stop = shutdown_signal("diam relay");
        let addr = node.listen_tcp(listen).await.map_err(|e| Failure::failed(e.to_string()))?;
        let tls_addr = match tls_listen {
            Some(a) => Some(node.listen_tls(a).await.map_err(|e| Failure::failed(e.to_string()))?),
            None => None,
        };
        {
            let _guard = out.lock();
            let mut line = json!({"event": "listening", "addr": addr.to_string()});
            if let Some(t) = tls_addr {
                line["tls_addr"] = json!(t.to_string());
            }
            print_json(&line)?;
        }
        #[cfg(unix)]
        if args.tls.tls_cert.is_some() {
            reload_on_hangup(vec![node.clone()], args.tls.clone(), "diam relay");
        }
        #[cfg(unix)]
        if let (Some(path), true) = (args.config.clone(), routes_from_file) {
            reload_routes_on_hangup(path, peers, args.strategy, dict, out.clone());
        }
        stop.await;
        node.shutdown(Duration::from_secs(5)).await;
        let events = node.events().clone();
        let _ = tokio::task::spawn_blocking(move || events.shutdown(Duration::from_secs(1))).await;
        let s = node.agent_stats();
        let _guard = out.lock();
        print_json(&json!({
            "event": "stopped",
            "addr": addr.to_string(),
            "forwarded": s.forwarded,
            "answered": s.answered,
            "retransmitted": s.retransmitted,
            "rerouted": s.rerouted,
            "local_answers": s.local_answers,
            "orphaned": s.orphaned,
        }))
    })
}
