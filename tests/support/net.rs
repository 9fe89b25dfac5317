//! Loopback networking for tests: free ports, a raw HTTP/1.1 client (request
//! targets sent byte for byte, so tests can send paths no URL library would),
//! reading request heads, and scraping a Prometheus `/metrics` listener.

use std::collections::HashMap;
use std::io::{BufRead, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// A port on 127.0.0.1 nobody listens on right now (the OS picks it; a server
/// that cannot bind port 0 itself must retry if another process takes it first).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// An HTTP/1.1 answer: status, headers (lower-case names, every value kept), body (de-chunked).
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header values by lower-case name, in the order received.
    pub headers: HashMap<String, Vec<String>>,
    /// The body, de-chunked; empty for `HEAD`.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).and_then(|v| v.first()).map(String::as_str)
    }
}

/// One raw HTTP/1.1 GET to 127.0.0.1:`port` (`target` sent byte for byte),
/// `Connection: close`; `None` if it cannot connect or the answer does not parse.
pub fn get(port: u16, target: &str, headers: &[(&str, &str)]) -> Option<Response> {
    request(port, "GET", target, headers)
}

/// [`get`] with any method; a `HEAD` answer has no body.
pub fn request(port: u16, method: &str, target: &str, headers: &[(&str, &str)]) -> Option<Response> {
    send(port, method, target, headers, b"")
}

/// [`request`] with `body` sent after the head in the same write (`headers` must
/// frame it: `Content-Length` or `Transfer-Encoding`).
pub fn send(port: u16, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Option<Response> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    s.write_all(&bytes).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    parse_response(&raw, method == "HEAD")
}

/// Parses a whole HTTP/1.1 answer read to the end of the connection.
pub fn parse_response(raw: &[u8], head_only: bool) -> Option<Response> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let mut headers: HashMap<String, Vec<String>> = HashMap::new();
    for l in lines {
        let (k, v) = l.split_once(':')?;
        headers.entry(k.trim().to_ascii_lowercase()).or_default().push(v.trim().to_owned());
    }
    let rest = &raw[end + 4..];
    let chunked = headers.get("transfer-encoding").is_some_and(|v| v.iter().any(|x| x.eq_ignore_ascii_case("chunked")));
    let body = if head_only {
        Vec::new()
    } else if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Some(Response { status, headers, body })
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(std::str::from_utf8(&b[..eol]).ok()?.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// Reads one request head (request line and headers, without the blank line);
/// `None` at end of stream. The test origins' parser.
pub fn read_head(reader: &mut impl BufRead) -> Option<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        if line == "\r\n" || line == "\n" {
            return Some(head);
        }
        head.push_str(&line);
    }
}

/// Every series of the admin listener on `admin` (`/metrics`) as text; empty if it does not answer.
pub fn metrics_text(admin: u16) -> String {
    get(admin, "/metrics", &[]).map(|r| String::from_utf8_lossy(&r.body).into_owned()).unwrap_or_default()
}

/// The samples of `series` in a metrics text: `series` is a metric name (every
/// label set matches) or a whole series `name{label="v",...}` as exported (labels
/// sorted); never a prefix of a longer name.
pub fn samples<'a>(text: &'a str, series: &'a str) -> impl Iterator<Item = f64> + 'a {
    text.lines()
        .filter(move |l| l.starts_with(series) && l[series.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// The value of the first sample of `series` (see [`metrics_text`]) on the admin
/// listener `admin`; `None` if it is not exported or the listener does not answer.
pub fn metric(admin: u16, series: &str) -> Option<f64> {
    samples(&metrics_text(admin), series).next()
}

/// The sum of every sample of `series` on `admin` (all label sets of a name);
/// `None` if it is not exported.
pub fn metric_sum(admin: u16, series: &str) -> Option<f64> {
    let text = metrics_text(admin);
    let all: Vec<f64> = samples(&text, series).collect();
    (!all.is_empty()).then(|| all.iter().sum())
}
