//! nginx `secure_link` / `secure_link_secret` against the real nginx
//! (Debian's nginx-light, installed by scripts/install-deps) as the oracle:
//! the same links go to nginx over HTTP and to our verifier, and the
//! verdicts must agree (nginx 200 = admitted, 410 = expired, 403 = refused).
//!
//! The configuration is the example of nginx's own documentation
//! (<https://nginx.org/en/docs/http/ngx_http_secure_link_module.html>), and
//! one hash is made with the documentation's own recipe (`openssl md5 -binary
//! | openssl base64 | tr +/ -_ | tr -d =`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use stile_foreign::{Config, Format, Key, KeyEncoding, Keys, Reason, Request, nginx};

const SECRET: &str = "secret";
/// Our verifier's clock; nginx uses the real one. Test expiries avoid the
/// years around it: 1_000_000_000 is long past, 2_000_000_000 far ahead.
const NOW: u64 = 1_800_000_000;

struct Nginx {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_binary() -> String {
    for c in ["nginx", "/usr/sbin/nginx"] {
        if Command::new(c).arg("-v").stderr(Stdio::null()).status().is_ok_and(|s| s.success()) {
            return c.into();
        }
    }
    panic!("nginx is needed as the secure_link oracle: run scripts/install-deps (nginx-light)");
}

fn start() -> Nginx {
    let bin = nginx_binary();
    // nginx reports no port: pick a free one and retry if another process takes it first.
    for _ in 0..5 {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().display();
        let conf = format!(
            r#"daemon off;
master_process off;
pid {p}/nginx.pid;
error_log stderr error;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {p}/body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location /s/ {{
            secure_link $arg_md5,$arg_expires;
            secure_link_md5 "$secure_link_expires$uri$remote_addr {SECRET}";
            if ($secure_link = "") {{ return 403; }}
            if ($secure_link = "0") {{ return 410; }}
            return 200 "ok";
        }}
        location /p/ {{
            secure_link_secret {SECRET};
            if ($secure_link = "") {{ return 403; }}
            return 200 "/secure/$secure_link";
        }}
    }}
}}
"#
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let child = Command::new(&bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut n = Nginx { child, addr: SocketAddr::from(([127, 0, 0, 1], port)), _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = n.child.try_wait() {
                break; // exited: most likely the port was taken; retry
            }
            if TcpStream::connect(n.addr).is_ok() {
                return n;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(n);
    }
    panic!("nginx did not start");
}

/// One HTTP/1.0 GET; returns the status and body.
fn get(addr: SocketAddr, target: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {target} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp.get(9..12).and_then(|c| c.parse().ok()).expect("status line");
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// The documentation's recipe: `echo -n '…' | openssl md5 -binary | openssl base64 | tr +/ -_ | tr -d =`.
fn openssl_md5(input: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg("printf %s \"$1\" | openssl md5 -binary | openssl base64 | tr +/ -_ | tr -d =")
        .arg("sh")
        .arg(input)
        .output()
        .expect("openssl");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn md5_hex(input: &str) -> String {
    use md5::{Digest, Md5};
    Md5::digest(input.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn ours(cfg: &Config, target: &str) -> Result<String, Reason> {
    let keys = Keys::new(vec![Key::parse_secret("nginx", SECRET, KeyEncoding::Raw).unwrap()]).unwrap();
    let found = cfg.locate(target.as_bytes(), &[])?.ok_or(Reason::Missing)?;
    let mut req = Request::new("http", "localhost", NOW);
    req.client_ip = Some("127.0.0.1".parse().unwrap());
    cfg.verify(&found, &keys, &req)?;
    Ok(found.upstream.clone())
}

fn agree(n: &Nginx, cfg: &Config, target: &str, want_status: u16) {
    let (status, body) = get(n.addr, target);
    assert_eq!(status, want_status, "nginx on {target}: {body}");
    let verdict = ours(cfg, target);
    match status {
        200 => assert!(verdict.is_ok(), "nginx admits {target}, we say {verdict:?}"),
        410 => assert_eq!(verdict, Err(Reason::Expired), "{target}"),
        _ => assert!(
            matches!(verdict, Err(Reason::BadSignature | Reason::Malformed)),
            "nginx refuses {target}, we say {verdict:?}"
        ),
    }
    if status == 200 && target.starts_with("/p/") {
        // nginx's rewrite target and our upstream name the same object.
        assert_eq!(verdict.unwrap(), body, "{target}");
    }
}

#[test]
fn verdicts_match_real_nginx() {
    let n = start();
    let link = Config::default_for(Format::NginxSecureLink);
    let secret = Config::NginxSecureLink(nginx::Config::SecureLinkSecret {
        location: "/p/".into(),
        rewrite_to: "/secure/".into(),
    });
    link.validate().unwrap();
    secret.validate().unwrap();

    let future = 2_000_000_000u64;
    let doc = openssl_md5(&format!("{future}/s/link.txt127.0.0.1 {SECRET}"));
    assert_eq!(doc, nginx::sign_default(SECRET.as_bytes(), future, "/s/link.txt", "127.0.0.1"));
    agree(&n, &link, &format!("/s/link.txt?md5={doc}&expires={future}"), 200);
    agree(&n, &link, &format!("/s/link.txt?expires={future}&x=1&md5={doc}"), 200);
    agree(&n, &link, &format!("/s/link.txt?md5={doc}==&expires={future}"), 200);
    agree(&n, &link, &format!("/s/l%69nk.txt?md5={doc}&expires={future}"), 200);
    agree(&n, &link, &format!("/s/other.txt?md5={doc}&expires={future}"), 403);
    agree(&n, &link, &format!("/s/link.txt?md5={doc}&expires={}", future + 1), 403);
    agree(&n, &link, &format!("/s/link.txt?md5={doc}"), 403);
    let mut bad = doc.clone().into_bytes();
    bad[3] = if bad[3] == b'A' { b'B' } else { b'A' };
    agree(&n, &link, &format!("/s/link.txt?md5={}&expires={future}", String::from_utf8(bad).unwrap()), 403);
    let past = 1_000_000_000u64;
    let old = nginx::sign_default(SECRET.as_bytes(), past, "/s/link.txt", "127.0.0.1");
    agree(&n, &link, &format!("/s/link.txt?md5={old}&expires={past}"), 410);
    let spaced = nginx::sign_default(SECRET.as_bytes(), future, "/s/my file.txt", "127.0.0.1");
    agree(&n, &link, &format!("/s/my%20file.txt?md5={spaced}&expires={future}"), 200);
    let elsewhere = nginx::sign_default(SECRET.as_bytes(), future, "/s/link.txt", "10.0.0.1");
    agree(&n, &link, &format!("/s/link.txt?md5={elsewhere}&expires={future}"), 403);

    // The documentation's own example links.
    agree(&n, &link, "/s/link?md5=_e4Nc3iduzkWRm01TBBNYw&expires=2147483647", 200);
    agree(&n, &secret, "/p/5e814704a28d9bc1914ff19fa0c4a00a/link", 200);

    let h = md5_hex(&format!("link.txt{SECRET}"));
    agree(&n, &secret, &format!("/p/{h}/link.txt"), 200);
    agree(&n, &secret, &format!("/p/{}/link.txt", h.to_uppercase()), 200);
    agree(&n, &secret, &format!("/p/{h}/other.txt"), 403);
    agree(&n, &secret, &format!("/p/{}/link.txt", &h[..31]), 403);
    let hq = md5_hex(&format!("dir/link.txt?a=1{SECRET}"));
    agree(&n, &secret, &format!("/p/{hq}/dir/link.txt?a=1"), 200);
    agree(&n, &secret, &format!("/p/{hq}/dir/link.txt?a=2"), 403);
}
