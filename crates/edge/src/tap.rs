//! The request line as the client sent it: a tap on an HTTP/1 connection's
//! stream ([`TapStream`]) that keeps, per request, the first line as read from
//! the socket and the status line of the answer ([`Capture`]).
//!
//! Pingora 0.9 rewrites or refuses some requests before any `ProxyHttp` phase
//! sees them (see [`crate::intake`], which puts the tap on every HTTP/1
//! connection). The proxy's phases read the capture of their session
//! ([`capture`]) to compare the line as sent with what Pingora parsed
//! ([`Capture::line_matches`]); the intake reads it after each request to find
//! the ones Pingora answered itself ([`Capture::refused`]). Nothing here knows
//! the proxy: both depend on this module, not on each other.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream, TimingDigest,
    UniqueID, UniqueIDType,
};
use pingora::proxy::Session;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::validate::MAX_TARGET_LEN;

/// Longest request line kept: a method, the longest target the validator looks at,
/// and the version. A longer line is kept cut (and its target is over the limit anyway).
pub(crate) const LINE_CAP: usize = MAX_TARGET_LEN + 64;

/// The capture of the tapped connection a session runs on, if it has one.
pub(crate) fn capture(session: &Session) -> Option<&Capture> {
    let stream = session.as_downstream().stream()?;
    (**stream).as_any().downcast_ref::<TapStream>().map(|t| &*t.capture)
}

const LINE_DONE: u8 = 1;
const STATUS_DONE: u8 = 2;

/// What the tap saw of the current request: shared by the stream, the proxy's
/// phases and the intake loop. Reads and writes take the lock only until the
/// request line and the status line are complete.
#[derive(Debug, Default)]
pub(crate) struct Capture {
    done: AtomicU8,
    state: Mutex<CaptureState>,
}

#[derive(Debug, Default)]
struct CaptureState {
    /// The request line without its line ending, at most [`LINE_CAP`] bytes.
    line: Vec<u8>,
    /// The line was longer than [`LINE_CAP`].
    cut: bool,
    /// Bytes of this request were read.
    read_any: bool,
    /// The first bytes written in answer (`HTTP/1.1 400`).
    status: Vec<u8>,
    /// The proxy's `logging` phase ran for this request.
    logged: bool,
}

impl Capture {
    fn lock(&self) -> MutexGuard<'_, CaptureState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn observe_read(&self, bytes: &[u8]) {
        if bytes.is_empty() || self.done.load(Ordering::Relaxed) & LINE_DONE != 0 {
            return;
        }
        let mut s = self.lock();
        s.read_any = true;
        // Empty lines before the request line are skipped, as the parser does.
        let bytes = if s.line.is_empty() { trim_leading_newlines(bytes) } else { bytes };
        let (part, complete) = match bytes.iter().position(|&b| b == b'\n') {
            Some(i) => (&bytes[..i], true),
            None => (bytes, false),
        };
        let room = LINE_CAP - s.line.len();
        s.line.extend_from_slice(&part[..part.len().min(room)]);
        if part.len() > room {
            s.cut = true;
        }
        if complete || s.cut {
            if s.line.last() == Some(&b'\r') {
                s.line.pop();
            }
            self.done.fetch_or(LINE_DONE, Ordering::Relaxed);
        }
    }

    fn observe_write(&self, bytes: &[u8]) {
        if bytes.is_empty() || self.done.load(Ordering::Relaxed) & STATUS_DONE != 0 {
            return;
        }
        let mut s = self.lock();
        let take = bytes.len().min(12 - s.status.len());
        s.status.extend_from_slice(&bytes[..take]);
        if s.status.len() == 12 {
            self.done.fetch_or(STATUS_DONE, Ordering::Relaxed);
        }
    }

    /// Whether the request line as sent is exactly `method SP target SP version` for
    /// the method and target Pingora parsed. False when Pingora re-encoded the line,
    /// dropped a `#fragment`, or the line was not captured.
    pub(crate) fn line_matches(&self, method: &[u8], target: &[u8]) -> bool {
        let s = self.lock();
        line_matches(&s.line, s.cut, method, target)
    }

    /// Records that the proxy's `logging` phase ran for the current request.
    pub(crate) fn mark_logged(&self) {
        self.lock().logged = true;
    }

    /// The request line and status of a request that Pingora answered without
    /// running the proxy's phases (bytes were read, an answer was written, no
    /// access-log line): a request its parser refused.
    pub(crate) fn refused(&self) -> Option<(Vec<u8>, u16)> {
        let s = self.lock();
        if !s.read_any || s.logged {
            return None;
        }
        let status = s.status.strip_prefix(b"HTTP/1.")?.get(2..5)?;
        let status = std::str::from_utf8(status).ok()?.parse().ok()?;
        Some((s.line.clone(), status))
    }

    /// Forgets the current request (the next one on the connection starts).
    pub(crate) fn reset(&self) {
        *self.lock() = CaptureState::default();
        self.done.store(0, Ordering::Relaxed);
    }
}

fn trim_leading_newlines(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|&c| c != b'\r' && c != b'\n').unwrap_or(b.len());
    &b[start..]
}

/// `sent` (cut to its first [`LINE_CAP`] bytes when `cut`) is `method SP target SP
/// HTTP/x` with nothing else.
pub(crate) fn line_matches(sent: &[u8], cut: bool, method: &[u8], target: &[u8]) -> bool {
    if cut {
        // Only a prefix was kept: it must agree with the parsed line as far as it goes.
        let parts = [method, b" ", target];
        let mut rest = sent;
        for p in parts {
            let n = rest.len().min(p.len());
            if rest[..n] != p[..n] {
                return false;
            }
            rest = &rest[n..];
        }
        return rest.is_empty() || rest.starts_with(b" HTTP/");
    }
    let Some(rest) = sent.strip_prefix(method).and_then(|r| r.strip_prefix(b" ")) else { return false };
    let Some(version) = rest.strip_prefix(target).and_then(|r| r.strip_prefix(b" ")) else { return false };
    version.starts_with(b"HTTP/") && !version.contains(&b' ')
}

/// The stream under a session's tap (the connection's own stream; the session's
/// stream when it has no tap), for a response the proxy writes to the socket itself
/// (`EdgeProxy::direct_hit`); `written` then tells the tap what went out that way.
pub(crate) fn untapped(session: &Session) -> Option<&Stream> {
    let stream = session.as_downstream().stream()?;
    Some((**stream).as_any().downcast_ref::<TapStream>().map_or(stream, |t| &t.inner))
}

/// Records bytes written to the socket under the tap (see [`untapped`]).
pub(crate) fn written(session: &Session, bytes: &[u8]) {
    if let Some(c) = capture(session) {
        c.observe_write(bytes);
    }
}

/// A connection's stream with the tap on it; everything else is passed through.
#[derive(Debug)]
pub(crate) struct TapStream {
    inner: Stream,
    capture: Arc<Capture>,
}

impl TapStream {
    /// Taps `inner`: what is read and written is observed by `capture`.
    pub(crate) fn new(inner: Stream, capture: Arc<Capture>) -> TapStream {
        TapStream { inner, capture }
    }
}

impl AsyncRead for TapStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut *self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            self.capture.observe_read(&buf.filled()[before..]);
        }
        r
    }
}

impl AsyncWrite for TapStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut *self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.capture.observe_write(&buf[..n]);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut *self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(mut n)) = r {
            for b in bufs {
                if n == 0 {
                    break;
                }
                let take = n.min(b.len());
                self.capture.observe_write(&b[..take]);
                n -= take;
            }
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for TapStream {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
    }
}

impl UniqueID for TapStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for TapStream {}

impl GetTimingDigest for TapStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for TapStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for TapStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[async_trait]
impl Peek for TapStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_matches_only_as_parsed() {
        let m = |sent: &str, target: &str| line_matches(sent.as_bytes(), false, b"GET", target.as_bytes());
        assert!(m("GET /vod/a.ts HTTP/1.1", "/vod/a.ts"));
        assert!(m("GET /vod/a.ts?st=x HTTP/1.0", "/vod/a.ts?st=x"));
        assert!(m("GET http://h/a HTTP/1.1", "http://h/a"));
        // Re-encoded by Pingora: raw space, raw UTF-8 next to a space, controls.
        assert!(!m("GET /vod/a b.ts HTTP/1.1", "/vod/a%20b.ts"));
        assert!(!m("GET /vod/caf\u{e9} x.ts HTTP/1.1", "/vod/caf%C3%A9%20x.ts"));
        assert!(!m("GET /vod/a.ts?x=a b HTTP/1.1", "/vod/a.ts?x=a%20b"));
        // The fragment dropped by the target parser.
        assert!(!m("GET /vod/a.ts#/../../b HTTP/1.1", "/vod/a.ts"));
        // Not a line at all, or something after the version.
        assert!(!m("", "/vod/a.ts"));
        assert!(!m("GET /vod/a.ts HTTP/1.1 x", "/vod/a.ts"));
        assert!(!m("POST /vod/a.ts HTTP/1.1", "/vod/a.ts"));
    }

    #[test]
    fn a_cut_line_must_agree_as_far_as_it_goes() {
        let target = format!("/vod/{}", "a".repeat(100));
        let sent = format!("GET {target} HTTP/1.1");
        assert!(line_matches(&sent.as_bytes()[..50], true, b"GET", target.as_bytes()));
        let spaced = format!("GET /vod/a a{}", "a".repeat(100));
        assert!(!line_matches(&spaced.as_bytes()[..50], true, b"GET", target.replacen("a a", "a%20a", 1).as_bytes()));
    }

    #[test]
    fn the_capture_keeps_the_first_line_and_the_status() {
        let c = Capture::default();
        c.observe_read(b"\r\nGET /a");
        c.observe_read(b" b HTTP/1.1\r\nHost: x\r\n");
        c.observe_read(b"more body bytes");
        assert!(!c.line_matches(b"GET", b"/a%20b"), "re-encoded by the parser");
        assert_eq!(c.lock().line, b"GET /a b HTTP/1.1");
        c.observe_write(b"HTTP/1.1 4");
        c.observe_write(b"00 Bad Request\r\n");
        assert_eq!(c.refused(), Some((b"GET /a b HTTP/1.1".to_vec(), 400)));
        c.mark_logged();
        assert_eq!(c.refused(), None, "logged by the proxy: not a refusal");
        c.reset();
        assert_eq!(c.refused(), None, "nothing read");
        let long = vec![b'a'; LINE_CAP + 10];
        c.observe_read(&long);
        let s = c.lock();
        assert!(s.cut && s.line.len() == LINE_CAP);
    }
}
