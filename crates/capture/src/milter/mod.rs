//! Milter capture: Postfix `smtpd_milters` / Sendmail `INPUT_MAIL_FILTER`.
//!
//! [`run`] accepts MTA connections until `shutdown` completes. Each
//! connection is one [`session::Session`] speaking the Sendmail milter
//! protocol (versions 2 to 6, through `miltr-server`), which turns the
//! callbacks into one [`mailkeep_envelope::Envelope`] per message and hands
//! it to the [`GroupCommitter`] at end of message; only when every copy is
//! durable does the MTA hear CONTINUE. Failures follow the configured
//! [`FailurePolicy`].
//!
//! Limits: a connection permit is taken *before* `accept()` (at most
//! `max_connections` sessions; further MTA connections wait in the
//! kernel's backlog), every read has a timeout, packets are capped at
//! [`MAX_PACKET`], messages at `max_message_size`.
//!
//! Shutdown: no new connections; a session that is idle (between
//! messages) is closed, a message in progress is finished and answered,
//! and a session asked for a new message while draining answers TEMPFAIL.
//! After [`DRAIN_TIMEOUT`] whatever is left is dropped; the MTA then
//! applies `milter_default_action` (tempfail) and nothing is lost.

pub mod message;
pub mod noreply;
pub mod session;

use crate::listen::{Listener, Stream};
use crate::policy::{FailureCounters, FailurePolicy};
use mailkeep_destinations::{Archiver, GroupCommitter};
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::{sleep, Instant, Sleep};
use tokio_util::compat::TokioAsyncReadCompatExt;

/// Largest milter packet accepted. Postfix never sends more than 64 KiB;
/// Sendmail and miltertest may send up to 1 MiB.
pub const MAX_PACKET: usize = 1024 * 1024;

/// How long shutdown waits for sessions to finish their message.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Default `max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// Default read timeout: Postfix's `milter_content_timeout` is 300 s, and
/// an MTA connection idles between messages for up to its own timeouts.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(7210);

/// The settings a session keeps for its whole life (a configuration
/// reload affects new sessions only).
#[derive(Debug)]
pub struct Snapshot {
    /// Rules and destinations.
    pub archiver: Arc<Archiver>,
    /// What to do when archiving fails.
    pub on_failure: FailurePolicy,
    /// Add `X-Mailkeep-Archived` to archived messages.
    pub add_header: bool,
    /// Spool directory for large messages.
    pub spool_dir: PathBuf,
    /// In-memory size limit before spooling.
    pub spool_threshold: usize,
    /// Larger messages are not archived (policy decides).
    pub max_message_size: Option<u64>,
}

/// Server-wide limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Concurrent MTA connections.
    pub max_connections: usize,
    /// Longest silence on a connection.
    pub timeout: Duration,
}

/// Everything the server needs besides its listener.
pub struct Service {
    /// The current settings; sessions take a snapshot when they start.
    pub settings: watch::Receiver<Arc<Snapshot>>,
    /// The shared archive writer.
    pub committer: GroupCommitter,
    /// Messages not archived, by policy.
    pub counters: Arc<FailureCounters>,
    /// Connection limit and timeout.
    pub limits: Limits,
}

/// Serves MTA connections on `listener` until `shutdown` completes, then
/// drains (see the module documentation).
pub async fn run(
    listener: Listener,
    service: Service,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let limits = service.limits;
    let service = Arc::new(service);
    crate::listen::serve(
        listener,
        limits.max_connections,
        DRAIN_TIMEOUT,
        shutdown,
        move |stream, draining| {
            let snapshot = service.settings.borrow().clone();
            let committer = service.committer.clone();
            let counters = service.counters.clone();
            serve_connection(
                stream,
                snapshot,
                committer,
                counters,
                draining,
                limits.timeout,
            )
        },
    )
    .await
}

async fn serve_connection(
    stream: Stream,
    snapshot: Arc<Snapshot>,
    committer: GroupCommitter,
    counters: Arc<FailureCounters>,
    draining: Arc<AtomicBool>,
    timeout: Duration,
) {
    let result = match stream {
        Stream::Tcp(s) => serve_stream(s, snapshot, committer, counters, draining, timeout).await,
        Stream::Unix(s) => serve_stream(s, snapshot, committer, counters, draining, timeout).await,
    };
    if let Some(Err(e)) = result {
        // The MTA hung up, timed out or spoke garbage: its problem, logged
        // for the administrator, and the MTA applies its default action.
        tracing::warn!("milter connection ended: {e}");
    }
}

/// Serves one MTA connection over any byte stream, exactly as [`run`]
/// does for an accepted socket: the milter protocol (`miltr-server`), the
/// "no reply" filter ([`noreply`]), the per-packet read deadline and the
/// drain rule. `None`: dropped because the server is shutting down.
pub async fn serve_stream<S>(
    stream: S,
    snapshot: Arc<Snapshot>,
    committer: GroupCommitter,
    counters: Arc<FailureCounters>,
    draining: Arc<AtomicBool>,
    timeout: Duration,
) -> Option<Result<(), miltr_server::Error<io::Error>>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let in_message = Arc::new(AtomicBool::new(false));
    let mut session = session::Session::new(
        snapshot,
        committer,
        counters,
        draining.clone(),
        in_message.clone(),
    );
    let mut server = miltr_server::Server::new(&mut session, false, MAX_PACKET);
    let conn =
        server.handle_connection(noreply::NoReply::new(IdleTimeout::new(stream, timeout)).compat());
    until_idle_while_draining(conn, &draining, &in_message).await
}

/// Runs a connection to its end, or, once draining, until it is between
/// messages (then it is dropped, closing the socket). `None` means it was
/// dropped for shutdown.
async fn until_idle_while_draining<F: Future>(
    conn: F,
    draining: &AtomicBool,
    in_message: &AtomicBool,
) -> Option<F::Output> {
    let mut conn = std::pin::pin!(conn);
    loop {
        tokio::select! {
            r = &mut conn => return Some(r),
            () = sleep(Duration::from_millis(100)) => {
                if draining.load(Ordering::Acquire) && !in_message.load(Ordering::Acquire) {
                    // Let a reply just given reach the MTA before closing.
                    return tokio::time::timeout(Duration::from_millis(200), &mut conn).await.ok();
                }
            }
        }
    }
}

/// A stream whose reads fail with `TimedOut` when the MTA is silent for
/// `timeout` between packets, or takes longer than `timeout` to send one
/// packet once it has begun (miltr-server has no timeouts of its own). The
/// second rule is why it follows the packet framing (4-byte length, then
/// the body): a peer trickling a byte at a time must not hold a session.
struct IdleTimeout<S> {
    inner: S,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
    /// Header bytes seen of the current packet (0..4).
    header: [u8; 4],
    header_len: usize,
    /// Body bytes still to come of the current packet.
    body_left: u64,
}

impl<S> IdleTimeout<S> {
    fn new(inner: S, timeout: Duration) -> Self {
        IdleTimeout {
            inner,
            timeout,
            deadline: Box::pin(sleep(timeout)),
            header: [0; 4],
            header_len: 0,
            body_left: 0,
        }
    }

    fn bump(&mut self) {
        let t = self.timeout;
        self.deadline.as_mut().reset(Instant::now() + t);
    }

    fn in_packet(&self) -> bool {
        self.header_len > 0 || self.body_left > 0
    }

    /// Follows the framing over newly read bytes; the deadline restarts
    /// when a packet begins and when one ends, never in the middle.
    fn saw(&mut self, mut bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let restart = !self.in_packet();
        let mut completed = false;
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(bytes.len() as u64) as usize;
                self.body_left -= n as u64;
                bytes = &bytes[n..];
                completed |= self.body_left == 0;
                continue;
            }
            self.header[self.header_len] = bytes[0];
            self.header_len += 1;
            bytes = &bytes[1..];
            if self.header_len == 4 {
                self.body_left = u64::from(u32::from_be_bytes(self.header));
                self.header_len = 0;
                completed |= self.body_left == 0;
            }
        }
        if restart || completed {
            self.bump();
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                let new = &buf.filled()[before..];
                if new.is_empty() {
                    this.bump();
                } else {
                    this.saw(new);
                }
                Poll::Ready(r)
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no data from the MTA within the milter timeout",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if r.is_ready() {
            self.bump();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
