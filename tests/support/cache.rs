//! A scriptable origin for the edge cache's tests: it counts every request it receives,
//! answers each with what a handler decides (status, headers, body, delays,
//! byte ranges it honours itself), and can be stopped like a killed process:
//! listener closed and every open connection cut.

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::net::read_head;

/// One request as the origin received it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: HashMap<String, String>,
}

impl Seen {
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }
}

/// What the origin answers.
#[derive(Clone, Debug, Default)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Wait this long before the status line.
    pub delay: Duration,
    /// Send the body in this many pieces, `pace` apart (0/1: at once).
    pub pieces: usize,
    pub pace: Duration,
}

impl Reply {
    pub fn ok(body: impl Into<Vec<u8>>) -> Reply {
        Reply { status: 200, body: body.into(), ..Reply::default() }
    }

    pub fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.into(), v.into()));
        self
    }

    pub fn status(mut self, s: u16) -> Reply {
        self.status = s;
        self
    }

    pub fn delay(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }

    pub fn paced(mut self, pieces: usize, pace: Duration) -> Reply {
        self.pieces = pieces;
        self.pace = pace;
        self
    }
}

type Handler = dyn Fn(&Seen) -> Reply + Send + Sync;

/// The origin. Stops (like a killed process) on drop or [`CountingOrigin::stop`].
#[derive(Debug)]
pub struct CountingOrigin {
    pub port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    stopped: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl CountingOrigin {
    /// Serves on a free loopback port with `handler`.
    pub fn start(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> CountingOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        CountingOrigin::serve(listener, Arc::new(handler))
    }

    /// Serves again on `port` (after [`CountingOrigin::stop`]), with `handler`.
    pub fn restart_on(port: u16, handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> CountingOrigin {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        CountingOrigin::serve(listener, Arc::new(handler))
    }

    fn serve(listener: TcpListener, handler: Arc<Handler>) -> CountingOrigin {
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stopped = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (seen2, stopped2, conns2) = (seen.clone(), stopped.clone(), conns.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                conns2.lock().unwrap().push(conn.try_clone().unwrap());
                let (seen, handler, stopped) = (seen2.clone(), handler.clone(), stopped2.clone());
                std::thread::spawn(move || serve_conn(conn, &seen, &*handler, &stopped));
            }
        });
        CountingOrigin { port, seen, stopped, conns }
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Requests so far for `path` (query ignored).
    pub fn count(&self, path: &str) -> usize {
        self.seen().iter().filter(|s| s.path() == path).count()
    }

    /// Closes the listener and cuts every open connection: from now on connecting fails.
    pub fn stop(&self) {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        // Wake the accept loop so it sees the flag and drops the listener.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
        // Wait until the port refuses connections.
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", self.port)).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("origin on {} did not stop", self.port);
    }
}

impl Drop for CountingOrigin {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve_conn(conn: TcpStream, seen: &Mutex<Vec<Seen>>, handler: &Handler, stopped: &AtomicBool) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut out = conn;
    loop {
        let Some(head) = read_head(&mut reader) else { return };
        let head: Vec<&str> = head.lines().map(str::trim_end).collect();
        if stopped.load(Ordering::SeqCst) || head.is_empty() {
            return;
        }
        let mut first = head[0].split_whitespace();
        let method = first.next().unwrap_or_default().to_owned();
        let target = first.next().unwrap_or_default().to_owned();
        let headers = head[1..]
            .iter()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let req = Seen { method, target, headers };
        seen.lock().unwrap().push(req.clone());
        let reply = handler(&req);
        std::thread::sleep(reply.delay);
        if stopped.load(Ordering::SeqCst) {
            return;
        }
        let mut resp = format!("HTTP/1.1 {} X\r\n", reply.status);
        let bodyless = req.method == "HEAD" || reply.status == 304 || reply.status == 204;
        if !reply.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-length")) && reply.status != 304 {
            resp.push_str(&format!("Content-Length: {}\r\n", reply.body.len()));
        }
        for (k, v) in &reply.headers {
            resp.push_str(&format!("{k}: {v}\r\n"));
        }
        resp.push_str("\r\n");
        if out.write_all(resp.as_bytes()).is_err() {
            return;
        }
        if !bodyless {
            let pieces = reply.pieces.max(1);
            let size = reply.body.len().div_ceil(pieces).max(1);
            for (i, piece) in reply.body.chunks(size).enumerate() {
                if i > 0 {
                    std::thread::sleep(reply.pace);
                }
                if out.write_all(piece).is_err() || out.flush().is_err() {
                    return;
                }
            }
        }
    }
}

/// Deterministic bytes for a body of `len` (so ranges can be checked against it).
pub fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed).collect()
}
