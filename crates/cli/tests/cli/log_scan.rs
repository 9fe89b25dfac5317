//! Secrets never reach a log: a full end-to-end run with real processes —
//! `stile control`, a `stile edge` in sync mode and an origin, then `stile dev` —
//! at `debug` level (`trace` for Stile's own crates), driven through every token
//! transport, valid, tampered, out-of-scope and revoked links, a key rotation
//! and retirement, every kind of revocation and the client commands (and, under
//! `stile dev`, a playback session ended by its link's revocation: the
//! `session.ended` event). Every line
//! the processes write (stdout and stderr, the dev log file) and the stderr of
//! every client command is then scanned for any minted token or its signature
//! (the HMAC tag, as the token's trailing characters, hex or base64), any API
//! key used (valid or not), and any signing key secret (hex or base64, read
//! from the edge's state cache, which holds them). The scanner itself is tested
//! on planted lines, so the scan can fail.

use std::collections::BTreeSet;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use stile_tests::dev::Run;
use stile_tests::dev::stile;
use stile_tests::edge::{EdgeToml, Origin};
use stile_tests::fleet::content;
use stile_tests::net::free_port;
use stile_tests::net::get;
use stile_tests::process::signal;
use stile_tests::process::until;

/// `debug` everywhere, `trace` for Stile's crates; `STILE_LOG_SCAN_LEVEL`
/// overrides it (e.g. `trace` to see what third-party crates print there).
const LOG_LEVEL: &str = "debug,stile=trace,stile_cli=trace,stile_control=trace,stile_edge=trace,stile_token=trace";

fn log_level() -> String {
    std::env::var("STILE_LOG_SCAN_LEVEL").unwrap_or_else(|_| LOG_LEVEL.to_owned())
}

// ---------------------------------------------------------------- the scanner

/// Material that must never appear in a log line, with what it is.
#[derive(Debug, Default)]
struct Secrets {
    needles: Vec<(String, String)>,
}

impl Secrets {
    fn add(&mut self, what: &str, needle: &str) {
        assert!(needle.len() >= 12, "needle for {what} too short to scan for: {needle:?}");
        if !self.needles.iter().any(|(_, n)| n == needle) {
            self.needles.push((what.to_owned(), needle.to_owned()));
        }
    }

    /// A token: the string itself, its tag (the HMAC: last 16 bytes) in hex and
    /// base64, and the token's last 21 characters (they encode tag bits only).
    fn token(&mut self, what: &str, token: &str) {
        self.add(what, token);
        let raw = URL_SAFE_NO_PAD.decode(token).unwrap_or_else(|e| panic!("{what}: not base64url ({e}): {token}"));
        assert!(raw.len() > 16, "{what}: too short for a tag");
        let tag = &raw[raw.len() - 16..];
        self.add(&format!("{what} signature (hex)"), &hex(tag));
        self.add(&format!("{what} signature (base64url)"), &URL_SAFE_NO_PAD.encode(tag));
        self.add(&format!("{what} signature (base64)"), &STANDARD_NO_PAD.encode(tag));
        self.add(&format!("{what} signature (token suffix)"), &token[token.len() - 21..]);
    }

    /// A signing key's secret bytes, in every usual text form.
    fn key(&mut self, what: &str, secret: &[u8]) {
        self.add(&format!("{what} (hex)"), &hex(secret));
        self.add(&format!("{what} (HEX)"), &hex(secret).to_uppercase());
        self.add(&format!("{what} (base64)"), &STANDARD_NO_PAD.encode(secret));
        self.add(&format!("{what} (base64url)"), &URL_SAFE_NO_PAD.encode(secret));
        // The padded forms share the unpadded prefix; scanning for it covers them.
        assert!(STANDARD.encode(secret).starts_with(&STANDARD_NO_PAD.encode(secret)));
        assert!(URL_SAFE.encode(secret).starts_with(&URL_SAFE_NO_PAD.encode(secret)));
    }

    /// An API key's plaintext.
    fn api_key(&mut self, what: &str, key: &str) {
        self.add(what, key);
    }

    /// Every (source, line number, what) found in `logs`.
    fn scan<'a>(&self, logs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<String> {
        let mut found = Vec::new();
        for (source, text) in logs {
            for (i, line) in text.lines().enumerate() {
                for (what, needle) in &self.needles {
                    if line.contains(needle.as_str()) {
                        let shown: String = line.chars().take(300).collect();
                        found.push(format!("{source}:{}: {what}\n    {shown}", i + 1));
                    }
                }
            }
        }
        found
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random suffix for this run's API keys.
fn random() -> String {
    format!("{:016x}", std::collections::hash_map::RandomState::new().hash_one(std::process::id()))
}

#[test]
fn the_scanner_finds_planted_material() {
    // A real token (the edge tests' key 7…7) and key.
    let token = stile_tests::token::mint(|_| {});
    let mut s = Secrets::default();
    s.token("token", &token);
    s.key("key", &stile_tests::token::SECRET);
    s.api_key("api key", "stk_planted-0123456789");
    let raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
    let tag = &raw[raw.len() - 16..];
    let planted = [
        format!("GET /_st/{token}/vod/abc/seg.ts 200"),
        format!("{{\"msg\":\"cookie\",\"value\":\"stile={token}; Path=/\"}}"),
        format!("mac={}", hex(tag)),
        format!("tag: {}", URL_SAFE_NO_PAD.encode(tag)),
        format!("truncated token …{}", &token[token.len() - 24..]),
        format!("key bytes {}", hex(&stile_tests::token::SECRET)),
        format!("key {}", STANDARD.encode(stile_tests::token::SECRET)),
        format!("key {}", URL_SAFE_NO_PAD.encode(stile_tests::token::SECRET)),
        "authorization: Bearer stk_planted-0123456789".to_owned(),
    ];
    for line in &planted {
        assert!(!s.scan([("synthetic", line.as_str())]).is_empty(), "not found: {line}");
    }
    let clean = format!("token.id=1111222233334444 decision=allow path=/vod/abc/seg.ts key_id=1 len={}", token.len());
    assert_eq!(s.scan([("synthetic", clean.as_str())]), Vec::<String>::new());
}

// ---------------------------------------------------------------- processes

/// A process whose stdout and stderr go to files; killed on drop.
struct Proc {
    name: String,
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl Proc {
    fn spawn(name: &str, dir: &Path, args: &[&str]) -> Proc {
        let out = dir.join(format!("{name}.stdout"));
        let err = dir.join(format!("{name}.stderr"));
        let child = Command::new(env!("CARGO_BIN_EXE_stile"))
            .args(args)
            .env("RUST_LOG", log_level())
            .env("HOME", dir)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        Proc { name: name.to_owned(), child, out, err }
    }

    fn alive(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("{} exited with {status}:\n{}", self.name, self.output());
        }
    }

    /// SIGTERM (SIGINT for `stile dev`), and wait: shutdown logs are scanned too.
    fn stop(&mut self, sig: &str) {
        if self.child.try_wait().unwrap().is_none() {
            signal(self.child.id(), sig);
            until(Duration::from_secs(20), &format!("{} to exit", self.name), || {
                self.child.try_wait().unwrap().map(|_| ())
            });
        }
    }

    fn output(&self) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!("{}{}", read(&self.out), read(&self.err))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The API keys of this run, one per role.
struct ApiKeys {
    admin: String,
    operator: String,
    minter: String,
    edge: String,
}

fn control_config(dir: &Path, port: u16, edge_port: u16, keys: &ApiKeys) -> PathBuf {
    let entry = |name: &str, key: &str| {
        format!(
            "[[auth.keys]]\nname = \"{name}\"\nrole = \"{name}\"\nsha256 = \"{}\"\n{}",
            hex(&stile_control::auth::hash_api_key(key)),
            if name == "edge" { "edge_ids = [\"*\"]\n" } else { "" }
        )
    };
    let path = dir.join("control.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\
             [store]\npath = \"{d}/control.redb\"\n[links]\ndefault_base_url = \"http://127.0.0.1:{edge_port}\"\n\
             [sync]\nheartbeat_interval_ms = 200\nkey_activation_timeout_secs = 10\n{}{}{}{}",
            entry("admin", &keys.admin),
            entry("operator", &keys.operator),
            entry("minter", &keys.minter),
            entry("edge", &keys.edge),
            admin = free_port(),
            d = dir.display(),
        ),
    )
    .unwrap();
    path
}

fn edge_config(dir: &Path, port: u16, admin: u16, origin: &Origin, control: &str, key: &str) -> PathBuf {
    EdgeToml {
        cookie: true,
        heartbeat_timeout_ms: Some(1500),
        cache_interval_ms: Some(100),
        ..EdgeToml::new(dir, port, admin, origin.port, &[control.to_owned()], key, "scan-edge")
    }
    .write()
    .unwrap()
}

/// Every key secret in an edge state file (the sync cache holds them).
fn cached_secrets(path: &Path) -> Vec<(u32, Vec<u8>)> {
    let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(&text) else { return Vec::new() };
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    doc["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| Some((k["id"].as_u64()? as u32, engine.decode(k["secret"].as_str()?).ok()?)))
        .collect()
}

/// The request target of a URL.
fn target(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap();
    rest[rest.find('/').unwrap()..].to_owned()
}

/// Runs client commands against one control plane, keeping every run for the scan.
struct Cli {
    server: String,
    runs: Vec<(String, Run)>,
}

impl Cli {
    fn run(&mut self, key: &str, args: &[&str]) -> &Run {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--server", &self.server, "--api-key", key]);
        let level = log_level();
        let r = stile(&all, &[("RUST_LOG", &level)]);
        self.runs.push((format!("stile {}", args.join(" ")), r));
        &self.runs.last().unwrap().1
    }

    fn ok(&mut self, key: &str, args: &[&str]) -> &Run {
        let r = self.run(key, args);
        assert_eq!(r.code, 0, "stile {args:?}: {r:?}");
        r
    }

    fn mint(&mut self, key: &str, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["mint", "abc", "--json"];
        a.extend_from_slice(args);
        self.ok(key, &a).json()
    }
}

/// The token a minted link carries, and its forms checked against the edge.
struct Minted {
    token: String,
    query: String,
    path: String,
    cookie_url: String,
}

fn minted(link: &serde_json::Value) -> Minted {
    let token = link["token"].as_str().unwrap().to_owned();
    let path = target(link["path_url"].as_str().unwrap());
    assert!(path.contains(&token));
    Minted {
        query: target(link["query_url"].as_str().unwrap()),
        cookie_url: target(link["cookie"]["url"].as_str().unwrap()),
        path,
        token,
    }
}

/// Sends raw bytes as one request and waits for the edge to answer or close.
fn send_raw(port: u16, bytes: &[u8]) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// The outside audit's hostile requests, each carrying a real token somewhere the
/// edge does not take it from or in a request it refuses: markers it does not
/// recognise, a doubled prefix, token-shaped path segments, request lines Pingora
/// re-encodes or refuses (raw space, `#`, `<`, backtick, non-UTF-8, 2 MiB, absolute
/// form, CONNECT, garbage). None of them may put the token in any log line.
fn hostile(port: u16, t: &str) {
    let req = |target: &[u8]| [b"GET ", target, b" HTTP/1.1\r\nHost: edge.test\r\nConnection: close\r\n\r\n"].concat();
    let encoded: String = t.bytes().map(|b| format!("%{b:02X}")).collect();
    let huge = format!("/_st/{t}/vod/abc/{}.ts", "a".repeat(2 * 1024 * 1024));
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (req(format!("/_ST/{t}/vod/abc/seg.ts").as_bytes()), "HTTP/1.1 40"),
        (req(format!("/%5Fst/{t}/vod/abc/seg.ts").as_bytes()), "HTTP/1.1 40"),
        (req(format!("/_st/{t}/_st/{t}/vod/abc/seg.ts").as_bytes()), "HTTP/1.1 403"),
        (req(format!("/vod/abc/{t}/seg.ts").as_bytes()), "HTTP/1.1 40"),
        (req(format!("/vod/abc/{encoded}.ts").as_bytes()), "HTTP/1.1 40"),
        (req(format!("/vod/abc/seg ts?st={t}").as_bytes()), "HTTP/1.1 400"),
        (req(format!("/_st/{t}/vod/abc/seg.ts#/../../x.ts").as_bytes()), "HTTP/1.1 400"),
        (req(format!("/_st/{t}/vod/abc/a<b.ts").as_bytes()), "HTTP/1.1 400"),
        (req(format!("/vod/abc/a`b.ts?st={t}").as_bytes()), "HTTP/1.1 400"),
        (req(&[b"/_st/", t.as_bytes(), b"/vod/\xff.ts"].concat()), "HTTP/1.1 400"),
        (req(huge.as_bytes()), "HTTP/1.1 400"),
        (req(format!("http://a@b/_st/{t}/vod/abc/seg.ts").as_bytes()), "HTTP/1.1 400"),
        (format!("CONNECT {t}.example:443 HTTP/1.1\r\nHost: {t}.example:443\r\n\r\n").into_bytes(), "HTTP/1.1 405"),
        (format!("\x16\x03\x01 {t}\r\n\r\n").into_bytes(), "HTTP/1.1 400"),
    ];
    for (bytes, answer) in cases {
        let out = send_raw(port, &bytes);
        let head = String::from_utf8_lossy(&out[..out.len().min(12)]).into_owned();
        assert!(
            head.starts_with(answer),
            "{answer}… expected, got {head:?} for {:?}",
            String::from_utf8_lossy(&bytes[..80])
        );
    }
}

// ---------------------------------------------------------------- the run

#[test]
fn no_token_or_key_material_in_any_log() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let suffix = random();
    let keys = ApiKeys {
        admin: format!("stk_scan-admin-{suffix}"),
        operator: format!("stk_scan-operator-{suffix}"),
        minter: format!("stk_scan-minter-{suffix}"),
        edge: format!("stk_scan-edge-{suffix}"),
    };
    let wrong_key = format!("stk_scan-wrong-{suffix}");
    let mut secrets = Secrets::default();
    for (what, k) in [
        ("admin API key", &keys.admin),
        ("operator API key", &keys.operator),
        ("minter API key", &keys.minter),
        ("edge API key", &keys.edge),
        ("wrong API key", &wrong_key),
    ] {
        secrets.api_key(what, k);
    }

    let (_content, origin) = content();
    let (control_port, edge_port, edge_admin) = (free_port(), free_port(), free_port());
    let control_toml = control_config(d, control_port, edge_port, &keys);
    let mut control = Proc::spawn("control", d, &["control", "--config", control_toml.to_str().unwrap()]);
    let server = format!("http://127.0.0.1:{control_port}");
    let mut cli = Cli { server: server.clone(), runs: Vec::new() };
    until(Duration::from_secs(20), "the control plane", || {
        control.alive();
        (cli.run(&keys.operator, &["keys", "ls"]).code == 0).then_some(())
    });
    let edge_toml = edge_config(d, edge_port, edge_admin, &origin, &server, &keys.edge);
    let mut edge = Proc::spawn("edge", d, &["edge", "--config", edge_toml.to_str().unwrap()]);
    until(Duration::from_secs(20), "the edge ready", || {
        edge.alive();
        get(edge_admin, "/readyz", &[]).is_some_and(|r| r.status == 200).then_some(())
    });
    let mut key_ids = BTreeSet::new();
    let mut collect_keys = |secrets: &mut Secrets| {
        for (id, secret) in cached_secrets(&d.join("cache.json")) {
            if key_ids.insert((id, secret.clone())) {
                secrets.key(&format!("signing key {id}"), &secret);
            }
        }
    };

    // Publish the asset; mint links; each transport admits them.
    let op = keys.operator.clone();
    cli.ok(&op, &["assets", "put", "abc", "--path", "/vod/abc/", "--entry", "master.m3u8"]);
    cli.ok(&op, &["assets", "state", "abc", "ready"]);
    cli.ok(&op, &["assets", "state", "abc", "published"]);
    let first = minted(&cli.mint(&keys.minter, &["--subject", "viewer-1", "--channel", "email"]));
    secrets.token("token 1", &first.token);
    assert_eq!(get(edge_port, &first.path, &[]).unwrap().status, 200, "path form");
    let playlist = get(edge_port, &first.query, &[]).unwrap();
    assert_eq!(playlist.status, 200, "query form");
    assert!(String::from_utf8_lossy(&playlist.body).contains(&first.token), "the playlist is rewritten");
    let cookie = format!("stile={}", first.token);
    let seg = get(edge_port, &first.cookie_url.replace("master.m3u8", "seg.ts"), &[("Cookie", &cookie)]).unwrap();
    assert_eq!(seg.status, 200, "cookie form");
    assert_eq!(get(edge_port, &first.cookie_url, &[("Cookie", &cookie)]).unwrap().status, 200);
    assert!(playlist.header("set-cookie").is_some_and(|c| c.contains(&first.token)), "cookie mode sets the cookie");

    // Denials: tampered signature (several places), wrong scope, nothing at all.
    let mut tampered = first.token.clone().into_bytes();
    for at in [tampered.len() - 1, tampered.len() - 10, 20] {
        let mut t = tampered.clone();
        // 'A' and 'Q' differ in a data bit and leave the last symbol's unused low bits zero,
        // so the tampered token still decodes (strict base64url) wherever the change is.
        t[at] = if t[at] == b'A' { b'Q' } else { b'A' };
        let t = String::from_utf8(t).unwrap();
        secrets.token(&format!("tampered token @{at}"), &t);
        for target in [format!("/_st/{t}/vod/abc/seg.ts"), format!("/vod/abc/seg.ts?st={t}")] {
            let r = get(edge_port, &target, &[]).unwrap();
            assert_eq!(r.status, 403, "{target}");
        }
        let r = get(edge_port, "/vod/abc/seg.ts", &[("Cookie", &format!("stile={t}"))]).unwrap();
        assert_eq!(r.status, 403);
    }
    tampered.truncate(tampered.len() - 3);
    let truncated = String::from_utf8(tampered).unwrap();
    assert_eq!(get(edge_port, &format!("/vod/abc/seg.ts?st={truncated}"), &[]).unwrap().status, 403);
    secrets.add("truncated token", &truncated);
    hostile(edge_port, &first.token);
    let other = first.path.replace("/vod/abc/", "/vod/other/");
    assert_eq!(get(edge_port, &other, &[]).unwrap().header("x-stile-reason"), Some("scope"), "wrong scope");
    assert_eq!(get(edge_port, "/vod/abc/seg.ts", &[]).unwrap().status, 401);
    collect_keys(&mut secrets);

    // Revoke it (by link, waiting for the edge): denied as revoked.
    let link_url = format!("{server}{}", first.query);
    cli.ok(&op, &["revoke", "--link", &link_url, "--reason", "leaked", "--wait", "--deadline", "5s"]);
    assert_eq!(get(edge_port, &first.path, &[]).unwrap().header("x-stile-reason"), Some("revoked"));
    cli.run(&op, &["explain", &link_url]);
    cli.run(&op, &["explain", "--json", &first.path]);

    // Rotate; a link from the new key works; the old key is retired and its links revoked.
    let second = minted(&cli.mint(&keys.minter, &["--subject", "viewer-2"]));
    secrets.token("token 2 (key 1)", &second.token);
    cli.ok(&op, &["keys", "rotate", "--reason", "scheduled"]);
    let third = minted(&cli.mint(&keys.minter, &["--subject", "viewer-3", "--channel", "embed:partner-x"]));
    secrets.token("token 3 (key 2)", &third.token);
    until(Duration::from_secs(10), "the new key at the edge", || {
        (get(edge_port, &third.path, &[]).unwrap().status == 200).then_some(())
    });
    until(Duration::from_secs(10), "the cache with both keys", || {
        (cached_secrets(&d.join("cache.json")).len() >= 2).then_some(())
    });
    collect_keys(&mut secrets);
    cli.ok(&op, &["keys", "ls"]);
    cli.ok(&op, &["keys", "ls", "--json"]);
    let old = cli.ok(&op, &["keys", "ls", "--json"]).json()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["state"] == "VERIFY_ONLY")
        .map(|k| k["key_id"].to_string())
        .expect("a verify-only key after the rotation");
    cli.ok(&op, &["revoke", "--key-id", &old, "--reason", "retired", "--wait", "--deadline", "5s"]);
    assert_eq!(get(edge_port, &second.path, &[]).unwrap().header("x-stile-reason"), Some("revoked"));
    assert_eq!(get(edge_port, &third.query, &[]).unwrap().status, 200);

    // Every other revocation kind, listings, status, audit, explain.
    cli.ok(&op, &["revoke", "--subject", "viewer-3", "--before", "-1h", "--reason", "test"]);
    cli.ok(&op, &["revoke", "--prefix", "/vod/abc/", "--before", "-1h", "--purge", "--reason", "test", "--wait"]);
    cli.ok(&op, &["revoke", "--token-id", "00000000000000aa", "--reason", "test"]);
    for args in [
        &["revocations", "ls"][..],
        &["revocations", "ls", "--json"],
        &["revocations", "status"],
        &["edges", "ls"],
        &["edges", "ls", "--json"],
        &["audit", "tail"],
        &["audit", "tail", "--json"],
        &["assets", "ls"],
        &["assets", "get", "abc"],
    ] {
        cli.ok(&op, args);
    }
    let third_url = format!("{server}{}", third.query);
    cli.run(&op, &["explain", &third_url]);
    cli.run(&op, &["explain", "--json", &third_url]);
    cli.run(&op, &["explain", "--offline", &third_url]);
    let state_file = d.join("cache.json");
    cli.run(&op, &["explain", "--offline", "--key-file", state_file.to_str().unwrap(), &third_url]);

    // Batch minting; a new API key, used; a wrong key; a minter overstepping.
    let out = d.join("links.txt");
    cli.ok(&keys.minter, &["mint", "abc", "--count", "3", "--form", "path", "--out", out.to_str().unwrap()]);
    for (i, line) in std::fs::read_to_string(&out).unwrap().lines().enumerate() {
        let t = target(line);
        let token = t.strip_prefix("/_st/").unwrap().split('/').next().unwrap().to_owned();
        secrets.token(&format!("batch token {i}"), &token);
        assert_eq!(get(edge_port, &t, &[]).unwrap().status, 200);
    }
    let created = cli.ok(&keys.admin, &["api-keys", "create", "scan-backend", "--role", "minter", "--json"]).json();
    let new_key = created["key"].as_str().unwrap().to_owned();
    secrets.api_key("created API key", &new_key);
    let fourth = minted(&cli.mint(&new_key, &["--subject", "viewer-4"]));
    secrets.token("token 4 (created key)", &fourth.token);
    assert_eq!(get(edge_port, &fourth.path, &[]).unwrap().status, 200);
    cli.ok(&keys.admin, &["api-keys", "ls"]);
    cli.ok(&keys.admin, &["api-keys", "delete", "scan-backend"]);
    assert_eq!(cli.run(&new_key, &["mint", "abc"]).code, 3, "a deleted key");
    assert_eq!(cli.run(&wrong_key, &["keys", "ls"]).code, 3, "a wrong key");
    assert_eq!(cli.run(&keys.minter, &["keys", "ls"]).code, 3, "a minter listing keys");
    assert_eq!(get(edge_port, &fourth.path, &[("Authorization", &format!("Bearer {wrong_key}"))]).unwrap().status, 200);

    // Restart the edge from its cache (logs the cache load), then stop everything gracefully.
    edge.stop("TERM");
    let mut edge2 = Proc::spawn("edge-restarted", d, &["edge", "--config", edge_toml.to_str().unwrap()]);
    until(Duration::from_secs(20), "the restarted edge", || {
        edge2.alive();
        get(edge_admin, "/readyz", &[]).is_some_and(|r| r.status == 200).then_some(())
    });
    assert_eq!(get(edge_port, &third.path, &[]).unwrap().status, 200);
    collect_keys(&mut secrets);
    edge2.stop("TERM");
    control.stop("TERM");

    // The scan.
    let mut logs: Vec<(String, String)> = Vec::new();
    for p in [&control, &edge, &edge2] {
        logs.push((p.name.clone(), p.output()));
    }
    for (cmd, r) in &cli.runs {
        logs.push((format!("{cmd} (stderr)"), r.stderr.clone()));
        // Output that is not a link or a new key by design is scanned too.
        if !cmd.starts_with("stile mint") && !cmd.starts_with("stile api-keys create") {
            logs.push((format!("{cmd} (stdout)"), r.stdout.clone()));
        }
    }
    logs.push(("origin requests".into(), origin.request_lines().join("\n")));
    let debug_lines =
        logs.iter().map(|(_, t)| t.lines().filter(|l| l.contains("DEBUG") || l.contains("TRACE")).count());
    assert!(debug_lines.sum::<usize>() > 50, "the processes did not log at debug level");
    assert!(key_ids.len() >= 2, "the signing keys were not found in the edge's cache");
    let found = secrets.scan(logs.iter().map(|(s, t)| (s.as_str(), t.as_str())));
    let lines: usize = logs.iter().map(|(_, t)| t.lines().count()).sum();
    eprintln!("log_scan: {lines} lines from {} sources, {} needles", logs.len(), secrets.needles.len());
    assert!(found.is_empty(), "secret material in logs ({} hits):\n{}", found.len(), found.join("\n"));

    dev_flow();
}

// ---------------------------------------------------------------- stile dev

/// Five consecutive free ports for `stile dev --port-base`.
fn free_base() -> u16 {
    let mut seed = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
    loop {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let base = 20_000 + (seed >> 33) as u16 % 40_000;
        if (0..5).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
}

/// `stile dev` at debug level: its log file and stderr hold no secrets. Its
/// banner (stdout) prints a link and API keys by design and is not scanned.
fn dev_flow() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("dev");
    let base = free_base();
    let mut dev =
        Proc::spawn("dev", dir.path(), &["dev", "--dir", d.to_str().unwrap(), "--port-base", &base.to_string()]);
    // The first start on a machine generates the sample stream with ffmpeg (cached).
    let banner = until(Duration::from_secs(180), "the dev banner", || {
        dev.alive();
        let out = std::fs::read_to_string(&dev.out).unwrap_or_default();
        out.contains("Ctrl-C stops everything").then_some(out)
    });
    let field = |label: &str| -> String {
        banner
            .lines()
            .find_map(|l| {
                l.trim_start().strip_prefix(label).map(|r| r.split_whitespace().next().unwrap_or("").to_owned())
            })
            .unwrap_or_else(|| panic!("no {label:?} in the banner:\n{banner}"))
    };
    let (query_url, operator) = (field("query "), field("operator "));
    let mut secrets = Secrets::default();
    for label in ["operator ", "minter ", "admin "] {
        secrets.api_key(&format!("dev {label}API key"), &field(label));
    }
    let token = query_url.split("st=").nth(1).unwrap().split('&').next().unwrap().to_owned();
    secrets.token("dev token", &token);
    let edge = base + 1;
    let q = target(&query_url);
    assert_eq!(get(edge, &q, &[]).unwrap().status, 200);
    // `stile dev` enables playback sessions: a path link's manifest redirects to the same
    // target with a session credential in the prefix (docs/sessions.md), itself a secret.
    let r = get(edge, &target(&field("path ")), &[]).unwrap();
    assert_eq!(r.status, 302, "a path link starts a playback session");
    let location = r.header("location").unwrap().to_owned();
    let session = location.strip_prefix("/_st/").unwrap().split('/').next().unwrap();
    secrets.token("dev session part", session.split_once('.').expect("link.session").1);
    assert_eq!(get(edge, &location, &[]).unwrap().status, 200);
    let server = format!("http://127.0.0.1:{base}");
    let mut cli = Cli { server, runs: Vec::new() };
    cli.ok(&operator, &["revoke", "--link", &query_url, "--reason", "dev", "--wait", "--deadline", "5s"]);
    assert_eq!(get(edge, &q, &[]).unwrap().status, 403);
    // Its playback session dies with it, which logs one `session.ended` event (scanned below).
    assert_eq!(get(edge, &location, &[]).unwrap().status, 403, "the session of a revoked link");
    cli.run(&operator, &["explain", &query_url]);
    until(Duration::from_secs(10), "the dev edge's state file", || {
        let keys = cached_secrets(&d.join("edge-state.json"));
        (!keys.is_empty()).then_some(keys)
    })
    .iter()
    .for_each(|(id, secret)| secrets.key(&format!("dev signing key {id}"), secret));
    dev.stop("INT");

    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let log = read(&d.join("stile-dev.log"));
    assert!(log.contains("DEBUG"), "stile dev did not log at debug level:\n{}", &log[..log.len().min(2000)]);
    assert!(
        log.lines().any(|l| l.contains("session.ended") && l.contains("revoked")),
        "no session.ended event for the revoked session:\n{}",
        log.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
    let mut logs = vec![("stile-dev.log".to_owned(), log), ("dev (stderr)".to_owned(), read(&dev.err))];
    for (cmd, r) in &cli.runs {
        logs.push((format!("{cmd} (stderr)"), r.stderr.clone()));
        logs.push((format!("{cmd} (stdout)"), r.stdout.clone()));
    }
    let found = secrets.scan(logs.iter().map(|(s, t)| (s.as_str(), t.as_str())));
    let lines: usize = logs.iter().map(|(_, t)| t.lines().count()).sum();
    eprintln!("log_scan (dev): {lines} lines from {} sources, {} needles", logs.len(), secrets.needles.len());
    assert!(found.is_empty(), "secret material in the dev logs ({} hits):\n{}", found.len(), found.join("\n"));
}
