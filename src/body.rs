//! The one body type the proxy speaks: a streamed hyper body (requests and upstream answers pass
//! through untouched) or bytes the proxy made itself (pages, errors, buffered logins).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use pin_project_lite::pin_project;

use crate::upstream::Lease;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pin_project! {
    /// An enum rather than a boxed trait object: the streamed case stays allocation-free.
    #[project = BodyProj]
    pub enum Body {
        Streamed { #[pin] inner: Incoming },
        /// A client's request body on its way upstream; says when it has been read.
        Request { #[pin] inner: Incoming, read: Option<BodyRead> },
        /// An upstream answer, whose body drives the connection it arrives on.
        Upstream { #[pin] inner: Incoming, lease: Option<Box<Lease>> },
        Bytes { #[pin] inner: Full<Bytes> },
    }
}

impl Body {
    pub fn empty() -> Self {
        Self::from(Bytes::new())
    }

    /// A request body forwarded upstream, reporting its end to `read` (from the request's
    /// extensions).
    pub fn request(inner: Incoming, read: Option<BodyRead>) -> Self {
        Self::Request { inner, read }
    }
}

/// Told when a request's body has been read to its end: the listener parks an idle HTTP/1
/// connection only once it knows no body bytes are left on it. Put in a request's extensions
/// by the listener; whoever reads the body through calls [`BodyRead::notify`].
#[derive(Clone)]
pub struct BodyRead(Arc<dyn Fn() + Send + Sync>);

impl BodyRead {
    pub fn new(on_read: impl Fn() + Send + Sync + 'static) -> Self {
        Self(Arc::new(on_read))
    }

    pub fn notify(&self) {
        (self.0)();
    }
}

impl From<Incoming> for Body {
    fn from(inner: Incoming) -> Self {
        Self::Streamed { inner }
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Self {
        Self::Bytes {
            inner: Full::new(bytes),
        }
    }
}

impl From<String> for Body {
    fn from(s: String) -> Self {
        Self::from(Bytes::from(s))
    }
}

impl From<&'static str> for Body {
    fn from(s: &'static str) -> Self {
        Self::from(Bytes::from_static(s.as_bytes()))
    }
}

/// Whether `frame` leaves `body` read to its end. Checked after every frame, not only at `None`:
/// hyper stops polling a body once `is_end_stream` says so, and after trailers.
fn read_to_end(
    frame: &Poll<Option<Result<Frame<Bytes>, hyper::Error>>>,
    body: &Pin<&mut Incoming>,
) -> bool {
    match frame {
        Poll::Ready(None) => true,
        Poll::Ready(Some(Ok(frame))) => {
            frame.is_trailers() || http_body::Body::is_end_stream(&**body)
        }
        Poll::Ready(Some(Err(_))) | Poll::Pending => false,
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            BodyProj::Streamed { inner } => inner.poll_frame(cx).map_err(Into::into),
            BodyProj::Request { mut inner, read } => {
                let frame = inner.as_mut().poll_frame(cx);
                if read_to_end(&frame, &inner)
                    && let Some(read) = read.take()
                {
                    read.notify();
                }
                frame.map_err(Into::into)
            }
            BodyProj::Upstream { mut inner, lease } => {
                let Some(conn) = lease else {
                    return inner.poll_frame(cx).map_err(Into::into);
                };
                let frame = conn.poll_body(inner.as_mut(), cx);
                // Read to its end: the connection can carry the next request.
                if read_to_end(&frame, &inner)
                    && let Some(conn) = lease.take()
                {
                    conn.release();
                }
                frame.map_err(Into::into)
            }
            BodyProj::Bytes { inner } => inner.poll_frame(cx).map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Streamed { inner }
            | Body::Request { inner, .. }
            | Body::Upstream { inner, .. } => inner.is_end_stream(),
            Body::Bytes { inner } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Streamed { inner }
            | Body::Request { inner, .. }
            | Body::Upstream { inner, .. } => inner.size_hint(),
            Body::Bytes { inner } => inner.size_hint(),
        }
    }
}
