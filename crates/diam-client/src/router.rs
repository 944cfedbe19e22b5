//! [`Router`]: realm-based routing (RFC 6733 §6.1) from a request's
//! Destination-Realm to the [`PeerGroup`] that serves it.

use std::collections::HashMap;

use diam_proto::{avps, Message};

use crate::{Error, PeerGroup, SendOptions};

/// Routes requests by Destination-Realm to peer groups.
///
/// Realms compare case-insensitively (they are domain names). A request
/// whose realm has no route goes to the default group when there is one, and
/// otherwise fails with [`Error::NoRoute`] (a relay would answer 3003
/// DIAMETER_REALM_NOT_SERVED).
///
/// ```no_run
/// # async fn run(ocs: diam_client::PeerGroup, pcrf: diam_client::PeerGroup) -> Result<(), diam_client::Error> {
/// use diam_client::Router;
/// use diam_proto::{avps, Message};
/// let router = Router::new().route("ocs.example.net", ocs).route("pcrf.example.net", pcrf);
/// let ccr = Message::request(4, 272)
///     .proxiable(true)
///     .avp(avps::SESSION_ID, "client.example.com;1;1")
///     .avp(avps::DESTINATION_REALM, "ocs.example.net")
///     .build();
/// let cca = router.send(ccr).await?; // served by some peer of the ocs group
/// # let _ = cca; Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct Router {
    /// Keys are lowercase.
    routes: HashMap<String, PeerGroup>,
    default: Option<PeerGroup>,
}

impl Router {
    /// A router with no routes.
    pub fn new() -> Self {
        Router::default()
    }

    /// Routes `realm` to `group` (replacing an earlier route for it).
    pub fn route(mut self, realm: &str, group: PeerGroup) -> Self {
        self.routes.insert(realm.to_ascii_lowercase(), group);
        self
    }

    /// Sends requests for realms without a route (and requests without a
    /// Destination-Realm) to `group`.
    pub fn default_route(mut self, group: PeerGroup) -> Self {
        self.default = Some(group);
        self
    }

    /// The group for `request`, by its Destination-Realm.
    pub fn group_for(&self, request: &Message) -> Result<&PeerGroup, Error> {
        let realm = match request.get(avps::DESTINATION_REALM) {
            Ok(realm) => realm,
            Err(_) => return Err(Error::InvalidRequest("malformed Destination-Realm")),
        };
        let routed = realm.and_then(|r| {
            // Lowercase only when needed: most realms are written in lowercase.
            if r.bytes().any(|b| b.is_ascii_uppercase()) {
                self.routes.get(&r.to_ascii_lowercase())
            } else {
                self.routes.get(r)
            }
        });
        routed.or(self.default.as_ref()).ok_or_else(|| Error::NoRoute(realm.map(str::to_string)))
    }

    /// Sends `request` through the group of its Destination-Realm.
    pub async fn send(&self, request: Message) -> Result<Message, Error> {
        self.send_with(request, SendOptions::new()).await
    }

    /// [`send`](Self::send) with per-request options.
    pub async fn send_with(&self, request: Message, options: SendOptions) -> Result<Message, Error> {
        let group = self.group_for(&request)?;
        group.send_with(request, options).await
    }
}
