//! Application request handling.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use diam_proto::peer::PeerInfo;
use diam_proto::Message;

/// The future a [`Handler`] returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Option<Message>> + Send + 'static>>;

/// Answers application requests (everything except CER, DWR and DPR, which
/// the connection answers itself).
///
/// Each request runs concurrently in its own task. Returning `None` makes
/// the connection answer 3001 DIAMETER_COMMAND_UNSUPPORTED; a handler that
/// panics gets 5012 DIAMETER_UNABLE_TO_COMPLY sent for it. The answer's
/// Hop-by-Hop and End-to-End identifiers must be the request's (use
/// [`Message::answer_to`]).
pub trait Handler: Send + Sync + 'static {
    /// Handles one request from `peer`.
    fn handle(&self, request: Message, peer: &PeerInfo) -> HandlerFuture;
}

/// A [`Handler`] from a closure returning a future.
///
/// ```
/// use diam_client::handler_fn;
/// use diam_proto::{avps, Message};
/// let h = handler_fn(|req: Message| async move {
///     Some(Message::answer_to(&req).avp(avps::RESULT_CODE, 2001u32).build())
/// });
/// # let _ = h;
/// ```
pub fn handler_fn<F, Fut>(f: F) -> Arc<dyn Handler>
where
    F: Fn(Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<Message>> + Send + 'static,
{
    struct FnHandler<F>(F);
    impl<F, Fut> Handler for FnHandler<F>
    where
        F: Fn(Message) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Option<Message>> + Send + 'static,
    {
        fn handle(&self, request: Message, _peer: &PeerInfo) -> HandlerFuture {
            Box::pin((self.0)(request))
        }
    }
    Arc::new(FnHandler(f))
}
