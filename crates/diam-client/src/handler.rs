//! Application request handling.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

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

/// The future a [`Handler`] returns: either a response already made
/// ([`HandlerFuture::ready`], no allocation: the connection writes it at
/// once) or work still to do ([`HandlerFuture::new`], boxed).
#[must_use = "a handler's future does nothing unless polled"]
pub struct HandlerFuture(Pending);

enum Pending {
    Ready(Option<Response>),
    Boxed(Pin<Box<dyn Future<Output = Response> + Send + 'static>>),
}

impl HandlerFuture {
    /// A response made already (a synchronous handler).
    pub fn ready(response: impl Into<Response>) -> Self {
        HandlerFuture(Pending::Ready(Some(response.into())))
    }

    /// Work that may wait (a database, another peer); boxed.
    pub fn new<F>(fut: F) -> Self
    where
        F: Future + Send + 'static,
        F::Output: Into<Response>,
    {
        HandlerFuture(Pending::Boxed(Box::pin(async move { fut.await.into() })))
    }
}

impl Future for HandlerFuture {
    type Output = Response;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response> {
        match &mut self.0 {
            // Polled again after it completed: nothing more to hand over.
            Pending::Ready(r) => Poll::Ready(r.take().unwrap_or(Response::NoAnswer)),
            Pending::Boxed(f) => f.as_mut().poll(cx),
        }
    }
}

impl std::fmt::Debug for HandlerFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Pending::Ready(_) => "HandlerFuture::Ready",
            Pending::Boxed(_) => "HandlerFuture::Boxed",
        })
    }
}

/// Answers application requests (everything except CER, DWR and DPR, which
/// the connection answers itself).
///
/// The connection polls the returned future once in place: a handler that
/// is ready at once (no `.await` that waits, or [`HandlerFuture::ready`])
/// answers with no task spawned, so keep synchronous work before the first
/// `.await` short. A handler that
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
            HandlerFuture::new((self.0)(request))
        }
    }
    Arc::new(FnHandler(f))
}

/// A [`Handler`] from a synchronous closure: the response is made while
/// the connection reads the request, and nothing is allocated for it
/// beyond the answer (the cheapest handler; see also
/// [`MessageBuilder::build_reusing`](diam_proto::MessageBuilder::build_reusing)
/// for the answer's buffer).
///
/// ```
/// use diam_client::sync_handler_fn;
/// use diam_proto::{avps, Message};
/// let h = sync_handler_fn(|req: Message| Message::answer_to(&req).avp(avps::RESULT_CODE, 2001u32).build());
/// # let _ = h;
/// ```
pub fn sync_handler_fn<F, R>(f: F) -> Arc<dyn Handler>
where
    F: Fn(Message) -> R + Send + Sync + 'static,
    R: Into<Response>,
{
    struct SyncHandler<F>(F);
    impl<F, R> Handler for SyncHandler<F>
    where
        F: Fn(Message) -> R + Send + Sync + 'static,
        R: Into<Response>,
    {
        fn handle(&self, request: Message, _peer: &PeerInfo) -> HandlerFuture {
            HandlerFuture::ready((self.0)(request))
        }
    }
    Arc::new(SyncHandler(f))
}
