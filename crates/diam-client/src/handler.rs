//! Application request handling.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use diam_proto::peer::PeerInfo;
use diam_proto::Message;

/// What a [`Handler`] decided for a request.
#[derive(Debug)]
pub enum Response {
    /// Send this answer.
    Answer(Message),
    /// The handler does not know the command: the connection answers
    /// 3001 DIAMETER_COMMAND_UNSUPPORTED.
    CommandUnsupported,
    /// Send nothing (the requester will time out). For testing peers that
    /// lose requests.
    NoAnswer,
}

impl From<Message> for Response {
    fn from(m: Message) -> Self {
        Response::Answer(m)
    }
}

/// `None` means [`Response::CommandUnsupported`].
impl From<Option<Message>> for Response {
    fn from(m: Option<Message>) -> Self {
        m.map_or(Response::CommandUnsupported, Response::Answer)
    }
}

/// The future a [`Handler`] returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Response> + Send + 'static>>;

/// Answers application requests (everything except CER, DWR and DPR, which
/// the connection answers itself).
///
/// The connection polls the returned future once in place: a handler that
/// is ready at once (no `.await` that waits) answers with no task spawned,
/// so keep synchronous work before the first `.await` short. A handler that
/// waits continues in its own task, concurrently with the others. Returning
/// [`Response::CommandUnsupported`] makes the connection answer 3001
/// DIAMETER_COMMAND_UNSUPPORTED; a handler that panics gets 5012
/// DIAMETER_UNABLE_TO_COMPLY sent for it. The answer's
/// Hop-by-Hop and End-to-End identifiers must be the request's (use
/// [`Message::answer_to`]).
pub trait Handler: Send + Sync + 'static {
    /// Handles one request from `peer`.
    fn handle(&self, request: Message, peer: &PeerInfo) -> HandlerFuture;
}

/// A [`Handler`] from a closure returning a future of anything that
/// converts into a [`Response`] (a `Message`, or `Option<Message>` where
/// `None` means "command unsupported").
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
    Fut: Future + Send + 'static,
    Fut::Output: Into<Response>,
{
    struct FnHandler<F>(F);
    impl<F, Fut> Handler for FnHandler<F>
    where
        F: Fn(Message) -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: Into<Response>,
    {
        fn handle(&self, request: Message, _peer: &PeerInfo) -> HandlerFuture {
            let fut = (self.0)(request);
            Box::pin(async move { fut.await.into() })
        }
    }
    Arc::new(FnHandler(f))
}
