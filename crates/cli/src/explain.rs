//! `stile explain URL`: the support team's self-serve diagnostic.
//!
//! It finds the token the way an edge does (`stile_edge::transport::locate`:
//! path prefix > query parameter > cookie), decodes it offline, shows its claims
//! with times in UTC and relative to now, asks the control plane (when it can)
//! whether the key is known and whether a revocation matches — by whom, when,
//! why —, and runs the edge's checks in the edge's order for a given edge clock
//! (`--skew`, `--at`), client address and country. It ends with ONE line: why an
//! edge would deny the request, or that it would pass.
//!
//! Offline it cannot check the MAC (the control plane never reveals secrets):
//! it says so. With `--key-file` (an edge state file) it checks the MAC and the
//! file's revocations too.
//!
//! [`explain`] is a pure function of its inputs (no clock, no network), so the
//! tests below drive every verdict from a table.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use serde_json::json;
use stile_edge::transport::{Transport, TransportNames, locate};
use stile_proto::v1 as pb;
use stile_token::{Country, CountryRule, KeyRing, Reason, SecretKey, Token, TokenId, canonicalize_path};

use crate::client::output::{duration, parse_duration, parse_time, relative, utc};
use crate::client::{Client, Failure, Kind, now, print_json};
use crate::settings::Settings;

/// Arguments of `stile explain`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The link: a URL carrying the token in the path (`/_st/<token>/…`) or the
    /// query (`?st=<token>`), a URL without a token plus --cookie, or a bare token.
    link: String,
    /// The request's cookie: a `Cookie` header value (`stile=<token>; …`) or a bare token.
    #[arg(long, value_name = "COOKIE")]
    cookie: Option<String>,
    /// The request path to check the scope against (default: the URL's path).
    #[arg(long, value_name = "PATH")]
    path: Option<String>,
    /// The edge's clock skew: how far its clock is ahead (3s) or behind (-3s).
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    skew: Option<String>,
    /// Evaluate as an edge would at this time (RFC 3339, Unix seconds, -10m, +1h).
    #[arg(long, value_name = "TIME", allow_hyphen_values = true, conflicts_with = "skew")]
    at: Option<String>,
    /// The client's IP address (for IP-bound links).
    #[arg(long, value_name = "IP")]
    client_ip: Option<IpAddr>,
    /// The client's country, ISO 3166-1 alpha-2 (for country-bound links).
    #[arg(long, value_name = "CC")]
    country: Option<String>,
    /// The edge's `token.leeway_secs`.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    leeway: u32,
    /// An edge state file (JSON with `keys` and `revocations`): checks the
    /// signature and the file's revocations. It holds secrets: keep it private.
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Do not ask the control plane.
    #[arg(long)]
    offline: bool,
    /// The edge's `token.path_segment`.
    #[arg(long, default_value = "_st", hide = true)]
    path_segment: String,
    /// The edge's `token.query_param`.
    #[arg(long, default_value = "st", hide = true)]
    query_param: String,
    /// The edge's `cookie.name`.
    #[arg(long, default_value = "stile", hide = true)]
    cookie_name: String,
}

pub(crate) async fn run(settings: &Settings, a: Args) -> Result<(), Failure> {
    let real_now = now();
    let edge_now = match (&a.at, &a.skew) {
        (Some(t), _) => parse_time(t, real_now).map_err(|e| Failure::usage(format!("--at: {e}")))?,
        (None, Some(s)) => {
            let d = parse_duration(s).map_err(|e| Failure::usage(format!("--skew: {e}")))?;
            real_now.checked_add_signed(d).ok_or_else(|| Failure::usage("--skew is out of range"))?
        }
        (None, None) => real_now,
    };
    let country = match &a.country {
        Some(c) => Some(
            Country::parse(&c.to_ascii_uppercase())
                .ok_or_else(|| Failure::usage(format!("--country {c:?}: expected two letters, e.g. DE")))?,
        ),
        None => None,
    };
    let key_file = match &a.key_file {
        Some(p) => Some(KeyFile::load(p).map_err(Failure::usage)?),
        None => None,
    };
    let input = Input {
        link: a.link.clone(),
        cookie: a.cookie.clone(),
        path: a.path.clone(),
        names: Names { path_segment: a.path_segment, query_param: a.query_param, cookie_name: a.cookie_name },
    };
    let clock = match (&a.at, &a.skew) {
        (Some(_), _) => EdgeClock::At,
        (None, Some(_)) => EdgeClock::Skew(i64::try_from(edge_now).unwrap_or(0) - i64::try_from(real_now).unwrap_or(0)),
        (None, None) => EdgeClock::Now,
    };
    let request = RequestFacts { client_ip: a.client_ip, country, leeway: a.leeway, edge_now, real_now, clock };
    let server = if a.offline {
        ServerView::NotAsked("--offline".into())
    } else {
        let needs_token = Token::parse(located_token(&input).unwrap_or_default().as_str()).is_ok();
        if needs_token { ask(settings).await } else { ServerView::NotAsked("nothing to ask: no valid token".into()) }
    };
    let report = explain(&input, &request, key_file.as_ref(), &server);
    if settings.json() {
        print_json(&report.json());
    } else {
        print!("{}", report.text());
    }
    match report.verdict {
        Verdict::Deny(..) => Err(Failure::negative()),
        Verdict::Pass { .. } => Ok(()),
    }
}

/// The token id of a link (for `stile revoke --link`).
pub(crate) fn token_of(link: &str) -> Result<TokenId, String> {
    let input = Input { link: link.to_owned(), cookie: None, path: None, names: Names::default() };
    let token = located_token(&input).map_err(|(_, why)| why)?;
    Token::parse(&token).map(|t| t.token_id()).map_err(|_| malformed_hint(&token))
}

// ------------------------------------------------------------------ inputs

/// The transport names of the edge being explained.
#[derive(Clone, Debug)]
struct Names {
    path_segment: String,
    query_param: String,
    cookie_name: String,
}

impl Default for Names {
    fn default() -> Names {
        Names { path_segment: "_st".into(), query_param: "st".into(), cookie_name: "stile".into() }
    }
}

/// What the user gave.
#[derive(Clone, Debug)]
struct Input {
    link: String,
    cookie: Option<String>,
    path: Option<String>,
    names: Names,
}

/// What is known about the request and the edge.
#[derive(Clone, Copy, Debug)]
struct RequestFacts {
    client_ip: Option<IpAddr>,
    country: Option<Country>,
    leeway: u32,
    /// The edge's clock.
    edge_now: u64,
    /// The true time (for "4 min ago").
    real_now: u64,
    clock: EdgeClock,
}

#[derive(Clone, Copy, Debug)]
enum EdgeClock {
    Now,
    Skew(i64),
    At,
}

/// What the control plane said, if it was asked.
#[derive(Clone, Debug)]
enum ServerView {
    NotAsked(String),
    Failed(String),
    Answered { server: String, keys: Vec<pb::KeyInfo>, revocations: Vec<pb::Revocation> },
}

/// The keys and revocations of an edge state file.
#[derive(Debug)]
struct KeyFile {
    path: String,
    ring: KeyRing,
    ids: Vec<u32>,
    revocations: Vec<FileRevocation>,
}

#[derive(Debug, Clone)]
struct FileRevocation {
    kind: String,
    value: String,
    issued_before: u64,
}

impl KeyFile {
    fn load(path: &std::path::Path) -> Result<KeyFile, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read --key-file {}: {e}", path.display()))?;
        KeyFile::parse(&path.display().to_string(), &text)
    }

    fn parse(path: &str, text: &str) -> Result<KeyFile, String> {
        let bad = |why: String| format!("--key-file {path}: {why} (expected an edge state file, docs/edge.md)");
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        let mut ring = KeyRing::new();
        let mut ids = Vec::new();
        for k in v.get("keys").and_then(|k| k.as_array()).ok_or_else(|| bad("no \"keys\" array".into()))? {
            let id = k.get("id").and_then(serde_json::Value::as_u64).and_then(|i| u32::try_from(i).ok());
            let secret = k.get("secret").and_then(|s| s.as_str()).map(|s| s.trim_end_matches('='));
            let (Some(id), Some(secret)) = (id, secret) else { return Err(bad("a key without id or secret".into())) };
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(secret)
                .map_err(|_| bad(format!("key {id}: the secret is not base64url")))?;
            let key = SecretKey::from_slice(&bytes).ok_or_else(|| bad(format!("key {id}: not 32 bytes")))?;
            ring.insert(id, &key);
            ids.push(id);
        }
        let mut revocations = Vec::new();
        for r in v.get("revocations").and_then(|r| r.as_array()).into_iter().flatten() {
            let s = |k: &str| r.get(k).and_then(|x| x.as_str()).unwrap_or_default().to_owned();
            let issued_before = r.get("issued_before").and_then(serde_json::Value::as_u64).unwrap_or(0);
            revocations.push(FileRevocation { kind: s("kind"), value: s("value"), issued_before });
        }
        Ok(KeyFile { path: path.to_owned(), ring, ids, revocations })
    }
}

/// Asks the control plane for keys and revocations; never fails the command.
async fn ask(settings: &Settings) -> ServerView {
    if settings.api_key.is_none() {
        return ServerView::NotAsked(
            "no API key (--api-key or STILE_API_KEY, role operator): key state and revocations unknown".into(),
        );
    }
    let client = match Client::connect_with_timeout(settings, "operator", Duration::from_secs(2)).await {
        Ok(c) => c,
        Err(f) => return ServerView::Failed(f.message),
    };
    let keys = crate::client::ops_list_keys(&client, true).await;
    let revocations = crate::client::ops_list_revocations(&client).await;
    match (keys, revocations) {
        (Ok(keys), Ok(revocations)) => ServerView::Answered { server: client.server.clone(), keys, revocations },
        (Err(f), _) | (_, Err(f)) => ServerView::Failed(match f.kind {
            Kind::Auth => format!("{} (explain needs role operator)", f.message),
            _ => f.message,
        }),
    }
}

// ----------------------------------------------------------------- explain

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Pass,
    Fail(Reason),
    Unknown,
    NotApplicable,
}

#[derive(Debug)]
struct Check {
    name: &'static str,
    status: Status,
    detail: String,
}

#[derive(Debug)]
enum Verdict {
    /// The edge's reason and the one-line explanation.
    Deny(Reason, String),
    /// What could not be checked.
    Pass { caveats: Vec<&'static str>, line: String },
}

/// Everything `explain` found out.
#[derive(Debug)]
struct Report {
    transport: Option<Transport>,
    path: Option<String>,
    token: Option<Token>,
    real_now: u64,
    edge_now: u64,
    leeway: u32,
    server: String,
    checks: Vec<Check>,
    verdict: Verdict,
}

/// Finds the token as an edge would. Err: the reason an edge would give and why.
fn located_token(input: &Input) -> Result<String, (Reason, String)> {
    Ok(locate_all(input)?.0)
}

/// The token, its transport and the raw request path (when the input has one).
fn locate_all(input: &Input) -> Result<(String, Transport, Option<String>), (Reason, String)> {
    let n = &input.names;
    let link = input.link.trim();
    let cookie_header = input.cookie.as_ref().map(|c| {
        let c = c.trim().trim_start_matches("Cookie:").trim();
        if c.contains('=') { c.to_owned() } else { format!("{}={c}", n.cookie_name) }
    });
    // The request target: a URL's path and query, or a bare path, or nothing (a bare token).
    let target = if let Some(i) = link.find("://") {
        let rest = &link[i + 3..];
        let t = rest.find(['/', '?']).map_or("/", |j| &rest[j..]);
        Some(if t.starts_with('?') { format!("/{t}") } else { t.to_owned() })
    } else if link.starts_with('/') || link.starts_with('?') {
        Some(link.to_owned())
    } else {
        None
    };
    let Some(mut target) = target else {
        if link.is_empty() {
            return Err((Reason::Missing, "empty input: give a link or a token".into()));
        }
        return Ok((link.to_owned(), Transport::None, None));
    };
    if let Some(i) = target.find('#') {
        target.truncate(i);
    }
    let names = TransportNames {
        path_prefix: format!("/{}/", n.path_segment),
        query_param: n.query_param.clone(),
        cookie: Some(n.cookie_name.clone()),
    };
    let cookies: Vec<&[u8]> = cookie_header.iter().map(|c| c.as_bytes()).collect();
    let located = locate(target.as_bytes(), cookies, &names).map_err(|r| {
        let dup = target.split(['?', '&']).skip(1).filter(|p| p.split('=').next() == Some(&n.query_param)).count();
        let why = if dup > 1 {
            format!("the query carries {dup} `{}=` parameters; edges refuse that as ambiguous", n.query_param)
        } else if target.starts_with(&names.path_prefix) {
            format!("the path starts with {} but has no path after the token", names.path_prefix)
        } else {
            "the token is not valid text".into()
        };
        (r, why)
    })?;
    let path = String::from_utf8_lossy(located.path).into_owned();
    let path = if target.starts_with("/?") && located.path == b"/" { None } else { Some(path) };
    match located.token {
        Some(t) => Ok((t.to_owned(), located.transport, path)),
        None => Err((
            Reason::Missing,
            format!(
                "no token in the link: not in the path (/{}/<token>/…), not in the query ({}=…), \
                 and no cookie (--cookie)",
                n.path_segment, n.query_param
            ),
        )),
    }
}

/// Why a token string does not parse, in words.
fn malformed_hint(token: &str) -> String {
    let len = token.len();
    if let Some(c) = token.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_')) {
        let what = match c {
            '%' => "it looks percent-encoded: something re-encoded the link".to_owned(),
            ' ' => "it contains a space: a `+` or a line break got mangled in copying?".to_owned(),
            '=' => "it has `=` padding, which tokens never carry".to_owned(),
            '+' | '/' => "it uses standard base64 (`+`, `/`), not base64url".to_owned(),
            c => format!("it contains {c:?}, which is not base64url"),
        };
        return format!("the token cannot be decoded: {what}");
    }
    if len < 59 {
        format!("the token is too short ({len} characters; at least 59): truncated in copying?")
    } else if len > stile_token::MAX_TOKEN_LEN {
        format!("the token is too long ({len} characters; at most {})", stile_token::MAX_TOKEN_LEN)
    } else {
        format!("the token ({len} characters) is not a valid Stile v1 token: truncated, altered or not a Stile token")
    }
}

fn explain(input: &Input, req: &RequestFacts, key_file: Option<&KeyFile>, server: &ServerView) -> Report {
    let mut r = Report {
        transport: None,
        path: None,
        token: None,
        real_now: req.real_now,
        edge_now: req.edge_now,
        leeway: req.leeway,
        server: match server {
            ServerView::NotAsked(why) => format!("not asked: {why}"),
            ServerView::Failed(why) => format!("not reached: {why}"),
            ServerView::Answered { server, .. } => format!("asked {server}"),
        },
        checks: Vec::new(),
        verdict: Verdict::Pass { caveats: Vec::new(), line: String::new() },
    };
    let check = |r: &mut Report, name, status, detail: String| r.checks.push(Check { name, status, detail });

    // Transport and request path.
    let (token_str, path) = match locate_all(input) {
        Ok((t, transport, raw_path)) => {
            r.transport = Some(transport);
            (t, input.path.clone().or(raw_path))
        }
        Err((reason, why)) => {
            check(&mut r, "token", Status::Fail(reason), why);
            return r.finish(req);
        }
    };
    if let Some(raw) = path {
        match canonicalize_path(raw.as_bytes()) {
            Ok(p) => r.path = Some(p.into_owned()),
            Err(e) => {
                check(
                    &mut r,
                    "path",
                    Status::Fail(Reason::Malformed),
                    format!("the request path {raw:?} is refused: {e}"),
                );
                return r.finish(req);
            }
        }
    }

    // Format.
    let token = match Token::parse(&token_str) {
        Ok(t) => t,
        Err(_) => {
            check(&mut r, "format", Status::Fail(Reason::Malformed), malformed_hint(&token_str));
            return r.finish(req);
        }
    };
    check(&mut r, "format", Status::Pass, format!("a Stile v1 token, {} characters", token_str.len()));
    let kid = token.key_id();

    // Key.
    let mut key = (Status::Unknown, "not checked: no --key-file and no answer from the control plane".to_owned());
    if let Some(kf) = key_file {
        key = if kf.ring.contains(kid) {
            (Status::Pass, format!("key {kid} is in {}", kf.path))
        } else {
            let held = kf.ids.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
            (Status::Fail(Reason::UnknownKey), format!("key {kid} is not in {} (it holds keys {held})", kf.path))
        };
    }
    if let ServerView::Answered { server, keys, revocations } = server
        && !matches!(key.0, Status::Fail(_))
    {
        key = match keys.iter().find(|k| k.key_id == kid) {
            None => (
                Status::Fail(Reason::UnknownKey),
                format!("key {kid} is unknown to the control plane at {server}: minted by another installation?"),
            ),
            // An edge holds a retired key's revocation and denies its links as `revoked`.
            Some(k) if k.state == pb::KeyState::Retired as i32 => {
                let why = revocations
                    .iter()
                    .find(|rv| matches!(target(rv), Some(pb::revocation_target::Target::KeyId(id)) if *id == kid))
                    .map(|rv| format!(" by {}: \"{}\"", rv.actor, rv.reason))
                    .unwrap_or_default();
                (
                    Status::Fail(Reason::Revoked),
                    format!(
                        "key {kid} was retired {} ({}){why}; every link it signed is revoked",
                        relative(k.retired_at, req.real_now),
                        utc(k.retired_at)
                    ),
                )
            }
            Some(k) => (Status::Pass, format!("key {kid} is {} on {server}", crate::client::key_state_name(k.state))),
        };
    }
    check(&mut r, "key", key.0, key.1);

    // Signature.
    let sig = match key_file {
        Some(kf) if kf.ring.contains(kid) => match token.verify_mac(&kf.ring) {
            Ok(()) => (Status::Pass, format!("the MAC verifies with key {kid} from {}", kf.path)),
            Err(_) => (
                Status::Fail(Reason::BadSignature),
                format!("the MAC does not match key {kid} from {}: the token was altered, or the key differs", kf.path),
            ),
        },
        Some(_) => (Status::NotApplicable, "not checked: the key is missing".to_owned()),
        None => (
            Status::Unknown,
            "not checked offline: needs the key's secret (--key-file EDGE_STATE.json); the control plane never \
             reveals secrets"
                .to_owned(),
        ),
    };
    check(&mut r, "signature", sig.0, sig.1);

    // Time window, with the edge's clock and leeway.
    let (now, leeway) = (req.edge_now, u64::from(req.leeway));
    let (exp, from) = (token.expires_at(), token.valid_from());
    let clock = clock_words(req);
    let time = if now >= exp.saturating_add(leeway) {
        (
            Status::Fail(Reason::Expired),
            format!("expired {} ({}){clock}; edges allow {leeway} s of leeway", relative(exp, now), utc(exp)),
        )
    } else if now.saturating_add(leeway) < from {
        (
            Status::Fail(Reason::NotYetValid),
            format!("not valid until {} ({}){clock}; edges allow {leeway} s of leeway", utc(from), relative(from, now)),
        )
    } else if now >= exp {
        (Status::Pass, format!("expired {} ago but within the edge's {leeway} s leeway{clock}", duration(now - exp)))
    } else {
        (Status::Pass, format!("valid until {} ({}){clock}", utc(exp), relative(exp, now)))
    };
    check(&mut r, "time", time.0, time.1);

    // Scope.
    let scope = token.scope_path();
    let kind = if token.is_prefix() { "prefix" } else { "exact path" };
    let sc = match &r.path {
        Some(p) => {
            let ok = if token.is_prefix() { p.starts_with(scope) } else { p == scope };
            if ok {
                (Status::Pass, format!("{p} is within the link's scope {scope} ({kind})"))
            } else {
                (Status::Fail(Reason::Scope), format!("{p} is outside the link's scope {scope} ({kind})"))
            }
        }
        None => (Status::Unknown, format!("scope {scope} ({kind}); no request path to check (give a URL or --path)")),
    };
    check(&mut r, "scope", sc.0, sc.1);

    // IP.
    let ip = match (token.ip(), req.client_ip) {
        (None, _) => (Status::NotApplicable, "not bound to an address".to_owned()),
        (Some(b), Some(c)) if b.contains(c) => (Status::Pass, format!("{c} is within {b}")),
        (Some(b), Some(c)) => (Status::Fail(Reason::Ip), format!("{c} is outside the link's binding {b}")),
        (Some(b), None) => (Status::Unknown, format!("bound to {b}; give --client-ip to check")),
    };
    check(&mut r, "ip", ip.0, ip.1);

    // Country.
    let geo = match (token.country_rule(), req.country) {
        (None, _) => (Status::NotApplicable, "no country rule".to_owned()),
        (Some(rule), c) => {
            let (list, deny) = match &rule {
                CountryRule::Allow(l) => (l, false),
                CountryRule::Deny(l) => (l, true),
            };
            let names = list.iter().map(Country::as_str).collect::<Vec<_>>().join(", ");
            let rule_text = if deny { format!("deny-list {names}") } else { format!("allow-list {names}") };
            match c {
                None => (Status::Unknown, format!("{rule_text}; give --country to check")),
                Some(c) if list.contains(&c) != deny => (Status::Pass, format!("{c} is admitted by the {rule_text}")),
                Some(c) => (Status::Fail(Reason::Geo), format!("{c} is not admitted by the {rule_text}")),
            }
        }
    };
    check(&mut r, "country", geo.0, geo.1);

    // Revocations.
    let request_path = r.path.clone().unwrap_or_else(|| scope.to_owned());
    let mut rev = (
        Status::Unknown,
        "not checked: no answer from the control plane (--server, --api-key with role operator) and no --key-file"
            .to_owned(),
    );
    if let Some(kf) = key_file {
        rev = match kf.revocations.iter().find(|f| file_matches(f, &token, &request_path)) {
            Some(f) => (Status::Fail(Reason::Revoked), format!("{} revokes it ({})", describe_file(f), kf.path)),
            None => (Status::Pass, format!("none of the {} revocations in {} matches", kf.revocations.len(), kf.path)),
        };
    }
    if let ServerView::Answered { server, revocations, .. } = server
        && !matches!(rev.0, Status::Fail(_))
    {
        rev = match revocations.iter().find(|rv| matches(rv, &token, &request_path)) {
            Some(rv) => (
                Status::Fail(Reason::Revoked),
                format!(
                    "revoked by {} {} ({}): \"{}\" — {} (version {})",
                    rv.actor,
                    relative(rv.created_at, req.real_now),
                    utc(rv.created_at),
                    rv.reason,
                    crate::client::revocation_target_text(rv.target.as_ref()),
                    rv.version
                ),
            ),
            None => {
                (Status::Pass, format!("none of the {} revocations in force on {server} matches", revocations.len()))
            }
        };
    }
    check(&mut r, "revoked", rev.0, rev.1);
    r.token = Some(token);
    r.finish(req)
}

fn clock_words(req: &RequestFacts) -> String {
    match req.clock {
        EdgeClock::Now | EdgeClock::Skew(0) => String::new(),
        EdgeClock::Skew(s) if s > 0 => format!(" on an edge whose clock is {} ahead", duration(s.unsigned_abs())),
        EdgeClock::Skew(s) => format!(" on an edge whose clock is {} behind", duration(s.unsigned_abs())),
        EdgeClock::At => format!(" at {}", utc(req.edge_now)),
    }
}

fn target(rv: &pb::Revocation) -> Option<&pb::revocation_target::Target> {
    rv.target.as_ref().and_then(|t| t.target.as_ref())
}

/// Whether a control-plane revocation matches the token, as an edge decides it.
fn matches(rv: &pb::Revocation, t: &Token, path: &str) -> bool {
    use pb::revocation_target::Target as T;
    match target(rv) {
        Some(T::TokenId(id)) => TokenId::from_hex(id) == Some(t.token_id()),
        Some(T::Subject(s)) => t.subject() == Some(s.subject.as_str()) && t.issued_at() < s.issued_before,
        Some(T::PathPrefix(p)) => {
            (prefix_covers(&p.prefix, path) || prefix_covers(&p.prefix, t.scope_path()))
                && t.issued_at() < p.issued_before
        }
        Some(T::KeyId(k)) => *k == t.key_id(),
        None => false,
    }
}

fn file_matches(f: &FileRevocation, t: &Token, path: &str) -> bool {
    match f.kind.as_str() {
        "token_id" => TokenId::from_hex(&f.value) == Some(t.token_id()),
        "subject" => t.subject() == Some(f.value.as_str()) && t.issued_at() < f.issued_before,
        "prefix" => prefix_covers(&f.value, path) && t.issued_at() < f.issued_before,
        "key" => f.value.parse::<u32>().ok() == Some(t.key_id()),
        _ => false,
    }
}

fn prefix_covers(prefix: &str, path: &str) -> bool {
    if prefix.ends_with('/') { path.starts_with(prefix) } else { path == prefix }
}

fn describe_file(f: &FileRevocation) -> String {
    match f.kind.as_str() {
        "subject" | "prefix" => {
            format!("a {} revocation of {} (links issued before {})", f.kind, f.value, utc(f.issued_before))
        }
        kind => format!("a {kind} revocation of {}", f.value),
    }
}

impl Report {
    fn finish(mut self, req: &RequestFacts) -> Report {
        let edge = match req.clock {
            EdgeClock::Now | EdgeClock::Skew(0) => "an edge".to_owned(),
            EdgeClock::Skew(s) => format!(
                "an edge whose clock is {} {}",
                duration(s.unsigned_abs()),
                if s > 0 { "ahead" } else { "behind" }
            ),
            EdgeClock::At => format!("an edge at {}", utc(req.edge_now)),
        };
        if let Some(c) = self.checks.iter().find(|c| matches!(c.status, Status::Fail(_))) {
            let Status::Fail(reason) = c.status else { unreachable!("filtered on Fail") };
            self.verdict = Verdict::Deny(reason, c.detail.clone());
            return self;
        }
        let caveats: Vec<&'static str> =
            self.checks.iter().filter(|c| c.status == Status::Unknown).map(|c| c.name).collect();
        let what = self.path.as_deref().map_or_else(|| "this link".to_owned(), |p| format!("a request for {p}"));
        let line = if caveats.is_empty() {
            format!("{edge} would admit {what}")
        } else {
            format!("{edge} would admit {what}, as far as checked (not checked: {})", caveats.join(", "))
        };
        self.verdict = Verdict::Pass { caveats, line };
        self
    }

    /// The one line.
    fn verdict_line(&self) -> String {
        match &self.verdict {
            Verdict::Deny(reason, why) => {
                format!("DENY {} ({}) — {why}", reason.as_str(), reason.http_status())
            }
            Verdict::Pass { line, .. } => format!("PASS — {line}"),
        }
    }

    fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut o = String::new();
        let transport = match self.transport {
            Some(Transport::Path) => "path prefix (/_st/<token>/…)",
            Some(Transport::Query) => "query parameter (?st=…)",
            Some(Transport::Cookie) => "cookie",
            Some(Transport::None) => "bare token",
            None => "-",
        };
        let _ = writeln!(o, "transport   {transport}");
        let _ = writeln!(o, "request     {}", self.path.as_deref().unwrap_or("-"));
        if let Some(t) = &self.token {
            let now = self.real_now;
            let _ = writeln!(o, "\ntoken");
            let _ = writeln!(o, "  token id    {}", t.token_id());
            let _ = writeln!(o, "  key         {}", t.key_id());
            let _ = writeln!(o, "  issued      {} ({})", utc(t.issued_at()), relative(t.issued_at(), now));
            let nbf = t.not_before().map_or_else(|| "-".into(), |n| format!("{} ({})", utc(n), relative(n, now)));
            let _ = writeln!(o, "  not before  {nbf}");
            let _ = writeln!(o, "  expires     {} ({})", utc(t.expires_at()), relative(t.expires_at(), now));
            let _ = writeln!(o, "  lifetime    {}", duration(t.expires_at().saturating_sub(t.issued_at())));
            let kind = if t.is_prefix() { "prefix: everything under it" } else { "exact path" };
            let _ = writeln!(o, "  scope       {} ({kind})", t.scope_path());
            let _ = writeln!(o, "  subject     {}", t.subject().unwrap_or("-"));
            let _ = writeln!(o, "  channel     {}", t.channel().unwrap_or("-"));
            let _ = writeln!(o, "  ip          {}", t.ip().map_or_else(|| "-".into(), |b| b.to_string()));
            let countries = match t.country_rule() {
                None => "-".into(),
                Some(CountryRule::Allow(l)) => {
                    format!("allow {}", l.iter().map(Country::as_str).collect::<Vec<_>>().join(","))
                }
                Some(CountryRule::Deny(l)) => {
                    format!("deny {}", l.iter().map(Country::as_str).collect::<Vec<_>>().join(","))
                }
            };
            let _ = writeln!(o, "  countries   {countries}");
        }
        let _ = writeln!(o, "\ncontrol     {}", self.server);
        let _ =
            writeln!(o, "\nchecks, in the edge's order (edge clock {}, leeway {} s)", utc(self.edge_now), self.leeway);
        for c in &self.checks {
            let mark = match c.status {
                Status::Pass => "ok  ",
                Status::Fail(_) => "FAIL",
                Status::Unknown => "?   ",
                Status::NotApplicable => "-   ",
            };
            let _ = writeln!(o, "  {mark}  {:<9}  {}", c.name, c.detail);
        }
        let _ = writeln!(o, "\n{}", self.verdict_line());
        o
    }

    fn json(&self) -> serde_json::Value {
        let token = self.token.as_ref().map(|t| {
            json!({
                "token_id": t.token_id().to_string(), "key_id": t.key_id(), "issued_at": t.issued_at(),
                "not_before": t.not_before(), "expires_at": t.expires_at(), "scope": t.scope_path(),
                "scope_is_prefix": t.is_prefix(), "subject": t.subject(), "channel": t.channel(),
                "ip": t.ip().map(|b| b.to_string()),
                "countries": t.country_rule().map(|r| match r {
                    CountryRule::Allow(l) => json!({ "allow": l.iter().map(Country::as_str).collect::<Vec<_>>() }),
                    CountryRule::Deny(l) => json!({ "deny": l.iter().map(Country::as_str).collect::<Vec<_>>() }),
                }),
            })
        });
        let checks: Vec<_> = self
            .checks
            .iter()
            .map(|c| {
                let (status, reason) = match c.status {
                    Status::Pass => ("pass", None),
                    Status::Fail(r) => ("fail", Some(r.as_str())),
                    Status::Unknown => ("unknown", None),
                    Status::NotApplicable => ("n/a", None),
                };
                json!({ "check": c.name, "status": status, "reason": reason, "detail": c.detail })
            })
            .collect();
        let verdict = match &self.verdict {
            Verdict::Deny(r, _) => json!({
                "decision": "deny", "reason": r.as_str(), "http_status": r.http_status(), "line": self.verdict_line(),
            }),
            Verdict::Pass { caveats, .. } => json!({
                "decision": "pass", "reason": null, "not_checked": caveats, "line": self.verdict_line(),
            }),
        };
        json!({
            "transport": self.transport.map(Transport::as_str),
            "path": self.path,
            "token": token,
            "edge_time": self.edge_now,
            "leeway_secs": self.leeway,
            "control_plane": self.server,
            "checks": checks,
            "verdict": verdict,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stile_token::{Claims, IpBinding, Scope};

    const NOW: u64 = 1_700_000_000;
    const SECRET: [u8; 32] = [7; 32];

    fn claims() -> Claims {
        Claims {
            key_id: 1,
            token_id: TokenId::from_u64(0x0123_4567_89ab_cdef),
            issued_at: NOW - 600,
            not_before: None,
            expires_at: NOW + 3000,
            scope: Scope::parse("/vod/abc/").unwrap(),
            ip: None,
            countries: None,
            subject: Some("viewer-1".into()),
            channel: Some("email".into()),
        }
    }

    fn token(f: impl FnOnce(&mut Claims)) -> String {
        let mut c = claims();
        f(&mut c);
        let mut ring = KeyRing::new();
        ring.insert(1, &SecretKey::from_bytes(SECRET));
        ring.insert(2, &SecretKey::from_bytes([9; 32]));
        stile_token::sign(&c, &ring).unwrap()
    }

    fn facts() -> RequestFacts {
        RequestFacts { client_ip: None, country: None, leeway: 5, edge_now: NOW, real_now: NOW, clock: EdgeClock::Now }
    }

    fn key(id: u32, state: pb::KeyState) -> pb::KeyInfo {
        pb::KeyInfo { key_id: id, state: state.into(), created_at: NOW - 9000, activated_at: 0, retired_at: NOW - 60 }
    }

    fn answered(revocations: Vec<pb::Revocation>) -> ServerView {
        ServerView::Answered { server: "http://cp".into(), keys: vec![key(1, pb::KeyState::Active)], revocations }
    }

    fn revocation(target: pb::revocation_target::Target) -> pb::Revocation {
        pb::Revocation {
            version: 9,
            target: Some(pb::RevocationTarget { target: Some(target) }),
            reason: "leaked on a forum".into(),
            actor: "sre-alice".into(),
            created_at: NOW - 240,
            expires_at: NOW + 90_000,
        }
    }

    fn key_file(revocations: &str) -> KeyFile {
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(SECRET);
        let text = format!(r#"{{"version":1,"keys":[{{"id":1,"secret":"{secret}"}}],"revocations":[{revocations}]}}"#);
        KeyFile::parse("state.json", &text).unwrap()
    }

    /// One row: the input link (with `TOKEN` replaced), extra setup, and the
    /// expected verdict code (`pass`) plus a fragment of the verdict line.
    fn check(link: &str, tok: &str, f: &RequestFacts, kf: Option<&KeyFile>, sv: &ServerView, want: &str, words: &str) {
        let input = Input { link: link.replace("TOKEN", tok), cookie: None, path: None, names: Names::default() };
        let report = explain(&input, f, kf, sv);
        let line = report.verdict_line();
        let got = match &report.verdict {
            Verdict::Deny(r, _) => r.as_str(),
            Verdict::Pass { .. } => "pass",
        };
        assert_eq!(got, want, "{link}: {line}\n{}", report.text());
        assert!(line.contains(words), "{link}: {line:?} lacks {words:?}");
        assert_eq!(line.lines().count(), 1, "one line: {line}");
        assert!(!report.text().contains(tok) || tok.len() < 20, "explain never prints the token");
        let j = report.json();
        assert_eq!(j["verdict"]["reason"].as_str().unwrap_or("pass"), want);
    }

    #[test]
    fn verdict_table() {
        use pb::revocation_target::Target as T;
        let ok = token(|_| {});
        let url = "http://edge:8080/vod/abc/master.m3u8?st=TOKEN";
        let none = ServerView::NotAsked("--offline".into());
        let f = facts();
        let kf = key_file("");

        // Passes, with and without what cannot be checked offline.
        check(url, &ok, &f, None, &none, "pass", "not checked: key, signature, revoked");
        check(url, &ok, &f, Some(&kf), &none, "pass", "would admit a request for /vod/abc/master.m3u8");
        check("http://edge/_st/TOKEN/vod/abc/v1/seg0.ts", &ok, &f, Some(&kf), &none, "pass", "/vod/abc/v1/seg0.ts");
        check(url, &ok, &f, None, &answered(vec![]), "pass", "not checked: signature");
        // Time.
        let expired = token(|c| c.expires_at = NOW - 240);
        check(url, &expired, &f, None, &none, "expired", "expired 4 min ago");
        let skewed = RequestFacts { edge_now: NOW + 3, clock: EdgeClock::Skew(3), ..f };
        let just = token(|c| c.expires_at = NOW + 1);
        check(url, &just, &f, None, &none, "pass", "would admit");
        check(url, &just, &skewed, None, &none, "pass", "clock is 3 s ahead");
        let ahead = RequestFacts { edge_now: NOW + 10, clock: EdgeClock::Skew(10), ..f };
        check(url, &just, &ahead, None, &none, "expired", "on an edge whose clock is 10 s ahead");
        let later = token(|c| {
            c.issued_at = NOW + 600;
            c.expires_at = NOW + 4200;
        });
        check(url, &later, &f, None, &none, "not_yet_valid", "in 10 min");
        // Scope.
        check(
            "http://edge/vod/other/master.m3u8?st=TOKEN",
            &ok,
            &f,
            None,
            &none,
            "scope",
            "outside the link's scope /vod/abc/",
        );
        let exact = token(|c| c.scope = Scope::parse("/vod/abc/master.m3u8").unwrap());
        check("http://edge/vod/abc/v1/index.m3u8?st=TOKEN", &exact, &f, None, &none, "scope", "exact path");
        // Revoked: by the control plane (who, when, why) or by the state file.
        let rv = answered(vec![revocation(T::TokenId("0123456789abcdef".into()))]);
        check(url, &ok, &f, None, &rv, "revoked", "revoked by sre-alice 4 min ago");
        check(url, &ok, &f, None, &rv, "revoked", "\"leaked on a forum\"");
        let sub = answered(vec![revocation(T::Subject(pb::SubjectTarget {
            subject: "viewer-1".into(),
            issued_before: NOW,
        }))]);
        check(url, &ok, &f, None, &sub, "revoked", "subject viewer-1");
        let newer = answered(vec![revocation(T::Subject(pb::SubjectTarget {
            subject: "viewer-1".into(),
            issued_before: NOW - 601,
        }))]);
        check(url, &ok, &f, None, &newer, "pass", "would admit");
        let pre = answered(vec![revocation(T::PathPrefix(pb::PathPrefixTarget {
            prefix: "/vod/".into(),
            issued_before: NOW,
            purge: false,
        }))]);
        check(url, &ok, &f, None, &pre, "revoked", "prefix /vod/");
        let kf_rev = key_file(r#"{"kind":"token_id","value":"0123456789abcdef"}"#);
        check(url, &ok, &f, Some(&kf_rev), &none, "revoked", "token_id revocation");
        // Keys: unknown, retired, not in the state file; signature.
        let other = token(|c| c.key_id = 2);
        check(url, &other, &f, None, &answered(vec![]), "unknown_key", "key 2 is unknown to the control plane");
        let retired = ServerView::Answered {
            server: "http://cp".into(),
            keys: vec![key(1, pb::KeyState::Retired)],
            revocations: vec![revocation(T::KeyId(1))],
        };
        check(url, &ok, &f, None, &retired, "revoked", "key 1 was retired 1 min ago");
        check(url, &other, &f, Some(&kf), &none, "unknown_key", "not in state.json (it holds keys 1)");
        let mut forged = ok.clone().into_bytes();
        let last = forged.len() - 3;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        check(url, &String::from_utf8(forged).unwrap(), &f, Some(&kf), &none, "bad_signature", "MAC does not match");
        // Bindings.
        let bound = token(|c| c.ip = Some(IpBinding::new("203.0.113.0".parse().unwrap(), 24).unwrap()));
        check(url, &bound, &f, None, &none, "pass", "not checked: key, signature, ip, revoked");
        let from = RequestFacts { client_ip: Some("198.51.100.7".parse().unwrap()), ..f };
        check(url, &bound, &from, None, &none, "ip", "198.51.100.7 is outside the link's binding 203.0.113.0/24");
        let geo = token(|c| c.countries = Some(CountryRule::Allow(vec![Country::parse("DE").unwrap()])));
        let fr = RequestFacts { country: Country::parse("FR"), ..f };
        check(url, &geo, &fr, None, &none, "geo", "FR is not admitted by the allow-list DE");
        // Malformed input and missing tokens.
        check(url, "abc", &f, None, &none, "malformed", "too short");
        check(url, &format!("{ok}%3D"), &f, None, &none, "malformed", "percent-encoded");
        check("http://edge/vod/abc/master.m3u8", &ok, &f, None, &none, "missing", "no token in the link");
        check("http://edge/vod/abc/x.ts?st=TOKEN&st=TOKEN", &ok, &f, None, &none, "malformed", "2 `st=` parameters");
        check("http://edge/vod/abc/%2e%2e/x.ts?st=TOKEN", &ok, &f, None, &none, "malformed", "request path");
        // A bare token: no path, so the scope is unknown.
        check("TOKEN", &ok, &f, Some(&kf), &none, "pass", "not checked: scope");
    }

    #[test]
    fn cookie_transport_and_precedence() {
        let ok = token(|_| {});
        let expired = token(|c| c.expires_at = NOW - 100);
        let none = ServerView::NotAsked("--offline".into());
        let run = |link: &str, cookie: &str| {
            let input = Input { link: link.into(), cookie: Some(cookie.into()), path: None, names: Names::default() };
            explain(&input, &facts(), None, &none)
        };
        let r = run("http://edge/vod/abc/master.m3u8", &format!("a=b; stile={ok}"));
        assert_eq!(r.transport, Some(Transport::Cookie));
        assert!(matches!(r.verdict, Verdict::Pass { .. }), "{}", r.text());
        let r = run("http://edge/vod/abc/master.m3u8", &ok);
        assert_eq!(r.transport, Some(Transport::Cookie), "a bare cookie value works too");
        // The query wins over the cookie, as at the edge.
        let r = run(&format!("http://edge/vod/abc/master.m3u8?st={expired}"), &ok);
        assert_eq!(r.transport, Some(Transport::Query));
        assert!(matches!(r.verdict, Verdict::Deny(Reason::Expired, _)));
    }

    #[test]
    fn token_of_reads_every_form() {
        let ok = token(|_| {});
        for link in
            [ok.clone(), format!("http://e/vod/abc/m.m3u8?st={ok}"), format!("http://e/_st/{ok}/vod/abc/m.m3u8")]
        {
            assert_eq!(token_of(&link).unwrap().to_string(), "0123456789abcdef");
        }
        assert!(token_of("http://e/vod/abc/m.m3u8").unwrap_err().contains("no token"));
    }
}
