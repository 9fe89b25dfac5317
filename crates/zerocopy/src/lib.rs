//! Zero-copy cache hits for the edge (Linux), and the only `unsafe` in Stile.
//!
//! A cache hit on a large object costs a proxy one copy of the body into the
//! kernel per viewer when it is written from user memory; nginx's `sendfile`
//! copies nothing, as the kernel sends pages it already holds. This crate gives
//! the edge the same path:
//!
//! - [`Sealed`]: a body copied once into a memory file (`memfd_create`),
//!   sealed against every later change (`F_SEAL_WRITE | F_SEAL_SHRINK |
//!   F_SEAL_GROW | F_SEAL_SEAL`) and mapped read-only, so the memory tier holds
//!   it once and can both slice it as [`Bytes`] (ranges, TLS, HTTP/2) and hand
//!   its pages to the kernel with `sendfile`.
//! - [`send_hit`]: writes a response header and then a [`Sealed`] body to the
//!   plain-TCP socket of a Pingora stream, the body with `sendfile`. It refuses
//!   (returns `None`, having written nothing) any stream that is not Pingora's
//!   plain TCP stream, TLS included.
//!
//! The workspace forbids `unsafe`; this crate denies it and allows it on three
//! blocks below, each with its argument: the mapping, the socket's borrow, and
//! the registration of the socket's duplicate with the runtime.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use memmap2::{Mmap, MmapOptions};
use pingora_core::protocols::Stream;
use pingora_core::protocols::l4::stream::Stream as PlainStream;
use rustix::fs::{MemfdFlags, SealFlags};
use rustix::net::SendFlags;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// A body in a sealed, read-only memory file.
pub struct Sealed {
    file: File,
    map: Mmap,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealed").field("len", &self.map.len()).finish_non_exhaustive()
    }
}

impl Sealed {
    /// Copies `chunks` (in order) into a new memory file, seals it and maps it.
    /// An empty body is refused (`InvalidInput`): there is nothing to map.
    pub fn new(chunks: &[Bytes]) -> io::Result<Sealed> {
        let len: usize = chunks.iter().map(Bytes::len).sum();
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "an empty body is not sealed"));
        }
        let fd = rustix::fs::memfd_create("stile-cache", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
        let file = File::from(fd);
        file.set_len(len as u64)?;
        let mut at = 0u64;
        for c in chunks {
            file.write_all_at(c, at)?;
            at += c.len() as u64;
        }
        rustix::fs::fcntl_add_seals(&file, SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)?;
        // SAFETY: the mapping is read-only and the file is sealed against writes,
        // shrinking and growing, and against removing those seals (`F_SEAL_SEAL`);
        // no writable mapping of it exists (`F_SEAL_WRITE` would have failed). No
        // process can change the bytes the map shows for as long as it lives, which
        // is what `Mmap`'s `&[u8]` needs. The file is not truncated: it has `len` bytes.
        #[allow(unsafe_code)]
        let map = unsafe { MmapOptions::new().len(len).map(&file)? };
        Ok(Sealed { file, map })
    }

    /// The body's length in bytes (never 0).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Always false: an empty body is never sealed.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The body as [`Bytes`] over the mapping: no copy, the file kept open while
    /// any slice of it lives.
    pub fn bytes(self: &Arc<Self>) -> Bytes {
        Bytes::from_owner(Owner(self.clone()))
    }
}

struct Owner(Arc<Sealed>);

impl AsRef<[u8]> for Owner {
    fn as_ref(&self) -> &[u8] {
        &self.0.map
    }
}

/// Writes `head`, then the whole of `body` with `sendfile`, to the socket under
/// `stream`. `None` when `stream` is not Pingora's plain TCP (or Unix) stream:
/// nothing was written and the caller writes the response its usual way.
///
/// The caller must have nothing buffered in `stream` (Pingora flushes a response
/// when it finishes it, so before a response starts the buffer is empty).
/// `idle` bounds each wait for the socket to take more bytes; a client that
/// reads nothing for that long gets an error (`TimedOut`) and the caller closes
/// the connection. The socket is never left half-written on success.
pub async fn send_hit(stream: &Stream, head: &[u8], body: &Sealed, idle: Duration) -> Option<io::Result<()>> {
    // `Stream` is a `Box<dyn IO>`, itself an `IO`: ask the boxed stream, not the box.
    let plain = (**stream).as_any().downcast_ref::<PlainStream>()?;
    // SAFETY: `plain` is Pingora's plain L4 stream, which owns the socket whose
    // descriptor `as_raw_fd` returns; it stays open while `stream` is borrowed,
    // and the borrow outlives every use of `fd` (this function's body).
    #[allow(unsafe_code)]
    let fd = unsafe { BorrowedFd::borrow_raw(plain.as_raw_fd()) };
    Some(send_all(fd, head, body, idle).await)
}

/// Raises this process's soft limit of open file descriptors to its hard limit (as
/// nginx's `worker_rlimit_nofile` would) and returns the soft limit in force
/// afterwards: sealed bodies each hold a descriptor, beside every connection's.
pub fn raise_nofile_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let now = getrlimit(Resource::Nofile);
    if let (Some(cur), max) = (now.current, now.maximum)
        && max.is_none_or(|m| m > cur)
    {
        // An unlimited hard limit is not a valid soft one for descriptors: cap at 2^20.
        let want = max.unwrap_or(1 << 20).min(1 << 20).max(cur);
        let raised = rustix::process::Rlimit { current: Some(want), maximum: max };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return want;
        }
    }
    now.current.unwrap_or(1 << 20)
}

async fn send_all(fd: BorrowedFd<'_>, head: &[u8], body: &Sealed, idle: Duration) -> io::Result<()> {
    // Registered with the runtime only once the socket pushes back (a duplicate of
    // the descriptor: Pingora's registration of the original stays as it is).
    let mut waiter: Option<AsyncFd<OwnedFd>> = None;
    let mut head_at = 0;
    let mut offset = 0u64;
    let total = body.len() as u64;
    loop {
        let step = if head_at < head.len() {
            // MSG_MORE: the header waits for the body's first bytes (one segment, as corked).
            rustix::net::send(fd, &head[head_at..], SendFlags::MORE | SendFlags::NOSIGNAL).inspect(|&n| head_at += n)
        } else if offset < total {
            let want = usize::try_from(total - offset).unwrap_or(usize::MAX);
            rustix::fs::sendfile(fd, body.file.as_fd(), Some(&mut offset), want)
        } else {
            return Ok(());
        };
        match step {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "the socket took no bytes")),
            Ok(_) => {}
            Err(e) if e == rustix::io::Errno::AGAIN => {
                if waiter.is_none() {
                    let dup = rustix::io::fcntl_dupfd_cloexec(fd, 0)?;
                    // SAFETY: `dup` is an `OwnedFd` the `AsyncFd` owns: open, and the same
                    // descriptor of the same file description, until the `AsyncFd` drops it.
                    #[allow(unsafe_code)]
                    let registered = unsafe { AsyncFd::register_with_interest(dup, Interest::WRITABLE) };
                    waiter = Some(registered.map_err(io::Error::from)?);
                }
                if let Some(w) = &waiter {
                    let mut ready = tokio::time::timeout(idle, w.writable())
                        .await
                        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the client read nothing"))??;
                    // Edge-triggered: forget the readiness that led here; the next
                    // EAGAIN waits for a new one.
                    ready.clear_ready();
                }
            }
            Err(e) if e == rustix::io::Errno::INTR => {}
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_body_reads_back_and_cannot_change() {
        let chunks = [Bytes::from_static(b"hello "), Bytes::from(vec![b'x'; 70_000]), Bytes::from_static(b"!")];
        let s = Arc::new(Sealed::new(&chunks).unwrap());
        let b = s.bytes();
        assert_eq!(b.len(), 70_007);
        assert_eq!(&b[..6], b"hello ");
        assert_eq!(b[b.len() - 1], b'!');
        assert_eq!(b.slice(6..10).as_ref(), b"xxxx");
        // The seals hold: no write, no resize.
        assert!(s.file.write_all_at(b"j", 0).is_err());
        assert!(s.file.set_len(1).is_err());
        assert!(s.file.set_len(1 << 20).is_err());
        drop(s);
        // Slices keep the mapping alive.
        assert_eq!(&b[..6], b"hello ");
    }

    #[test]
    fn the_descriptor_limit_is_raised_to_its_maximum() {
        let soft = raise_nofile_limit();
        let now = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        assert_eq!(now.current, Some(soft));
        assert!(now.maximum.is_none_or(|m| m == soft || soft == 1 << 20));
    }

    /// A socket pair on loopback: the sending side registered with the runtime (as
    /// Pingora's streams are), the receiving side a plain blocking socket.
    async fn pair() -> (tokio::net::TcpStream, std::net::TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().await.unwrap();
        (server, client)
    }

    #[tokio::test]
    async fn a_body_larger_than_the_socket_takes_waits_for_a_slow_reader() {
        use std::io::Read;
        let body: Vec<u8> = (0..8u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let sealed = Sealed::new(&[Bytes::from(body.clone())]).unwrap();
        let (server, mut client) = pair().await;
        let reader = std::thread::spawn(move || {
            // Nothing read for a while: the sender finds the socket full.
            std::thread::sleep(Duration::from_millis(300));
            let mut got = Vec::new();
            client.read_to_end(&mut got).unwrap();
            got
        });
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 8388608\r\n\r\n";
        send_all(server.as_fd(), head, &sealed, Duration::from_secs(10)).await.unwrap();
        drop(server);
        let got = reader.join().unwrap();
        assert_eq!(&got[..head.len()], head);
        assert!(got[head.len()..] == body[..], "the bytes differ");
    }

    #[tokio::test]
    async fn a_reader_that_takes_nothing_times_out() {
        let sealed = Sealed::new(&[Bytes::from(vec![1u8; 16 << 20])]).unwrap();
        let (server, client) = pair().await;
        let e = send_all(server.as_fd(), b"", &sealed, Duration::from_millis(200)).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        drop(client);
    }

    #[test]
    fn an_empty_body_is_refused() {
        let e = Sealed::new(&[Bytes::new()]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
