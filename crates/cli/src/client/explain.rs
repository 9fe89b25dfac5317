//! `stile explain URL`: the support team's self-serve diagnostic.
//!
//! It builds the request an edge would receive for the link, and the state an
//! edge would hold as far as it is known — the keys and revocations of
//! `--key-file` (read by the edge's own state-file codec) and the revocations
//! the control plane lists —, then runs the edge's own validator on them
//! (`stile_edge::validate::Validator::validate_traced`) for a given edge clock
//! (`--skew`, `--at`), client address and country. Every decision is the
//! edge's; this module only renders the trace: claims with times in UTC and
//! relative to now, who revoked and why, and ONE line: why an edge would deny
//! the request, or that it would pass.
//!
//! What it does not know it says so, rather than guessing: without the key's
//! secret (the control plane never reveals it) the MAC is not checked, and
//! without `--client-ip`/`--country` neither are IP and country rules; a key
//! the control plane lists counts as held.
//!
//! [`explain`] is a pure function of its inputs (no clock, no network), so the
//! tests below drive every verdict from a table, and check it against the
//! edge's own verdict.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use stile_edge::EdgeConfig;
use stile_edge::state::{RevocationEntry, RevocationKind, State, StateFile, revocation_set};
use stile_edge::transport::{Transport, TransportNames, locate};
use stile_edge::validate::{self, Check, MAX_TARGET_LEN, Validator};
use stile_proto::v1 as pb;
use stile_token::{
    Algorithm, Country, CountryRule, KeyId, KeyRing, Reason, Session, Token, TokenId, VerifyKey, canonicalize_path,
};

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
    /// Judge the link as another vendor's signed link instead of a Stile link:
    /// akamai, cloud-cdn, media-cdn, bunny or nginx-secure-link (docs/migration.md).
    /// Works offline, with the keys given by --foreign-key or --key. `stile` (the
    /// default) is a Stile link.
    #[arg(long, value_name = "FORMAT")]
    format: Option<String>,
    /// A key for --format, NAME=KEY, written as the vendor writes it: hex (akamai),
    /// base64 (cloud-cdn, media-cdn; `ed25519:<base64>` for a Media CDN public key),
    /// the text itself (bunny, nginx-secure-link). Repeatable, at most 8.
    #[arg(long = "foreign-key", value_name = "NAME=KEY", requires = "format")]
    foreign_keys: Vec<String>,
    /// One key, written as the vendor writes it (as for --foreign-key; with
    /// `--format stile`, a Stile key's 32 bytes in base64url, base64 or hex: the
    /// HMAC secret, or an Ed25519 link's public key). Its name is --key-name, or
    /// the one the link names (Stile: its key id).
    #[arg(long, value_name = "KEY", requires = "format")]
    key: Option<String>,
    /// The name (Stile: the key id) of --key.
    #[arg(long, value_name = "NAME", requires = "key")]
    key_name: Option<String>,
    /// The --format's settings as a TOML table of that format's fields
    /// (docs/migration.md); fields left out keep the vendor's defaults.
    #[arg(long, value_name = "FILE", requires = "format")]
    format_config: Option<PathBuf>,
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
    if let Some(format) = a.format.as_deref().filter(|f| *f != "stile") {
        let report = super::foreign::explain(&super::foreign::ForeignInput {
            link: &a.link,
            cookie: a.cookie.as_deref(),
            format,
            keys: &a.foreign_keys,
            key: a.key.as_deref().map(|k| (k, a.key_name.as_deref())),
            config_file: a.format_config.as_deref(),
            client_ip: a.client_ip,
            country,
            leeway: a.leeway,
            edge_now,
            real_now,
        })?;
        if settings.json() {
            print_json(&report.json);
        } else {
            print!("{}", report.text);
        }
        return if report.admitted { Ok(()) } else { Err(Failure::negative()) };
    }
    if !a.foreign_keys.is_empty() || a.format_config.is_some() {
        return Err(Failure::usage("--foreign-key and --format-config are for another vendor's --format"));
    }
    let input = Input {
        link: a.link.clone(),
        cookie: a.cookie.clone(),
        path: a.path.clone(),
        names: Names { path_segment: a.path_segment, query_param: a.query_param, cookie_name: a.cookie_name },
    };
    let key_file = match (&a.key_file, &a.key) {
        (Some(_), Some(_)) => return Err(Failure::usage("give --key-file or --key, not both")),
        (Some(p), None) => Some(KeyFile::load(p).map_err(Failure::usage)?),
        (None, Some(k)) => Some(KeyFile::one_key(&input, k, a.key_name.as_deref()).map_err(Failure::usage)?),
        (None, None) => None,
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

/// The keys and revocations of an edge state file, read by the edge's codec.
#[derive(Debug)]
struct KeyFile {
    path: String,
    keys: Vec<(KeyId, VerifyKey)>,
    revocations: Vec<RevocationEntry>,
}

impl KeyFile {
    fn load(path: &std::path::Path) -> Result<KeyFile, String> {
        let file = StateFile::read(path).map_err(|e| format!("--key-file: {e}"))?;
        KeyFile::decode(path, &file)
    }

    /// `--format stile --key KEY [--key-name ID]`: a key file holding that one key,
    /// under the id given or the link's own, of the link's algorithm.
    fn one_key(input: &Input, key: &str, name: Option<&str>) -> Result<KeyFile, String> {
        use base64::Engine as _;
        let token = located_token(input).ok().and_then(|t| Token::parse(&t).ok());
        let id = match name {
            Some(n) => n.parse::<KeyId>().map_err(|_| format!("--key-name {n:?}: a Stile key id is a number"))?,
            None => token.as_ref().map_or(1, Token::key_id),
        };
        let bytes = if key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32).map(|i| u8::from_str_radix(&key[2 * i..2 * i + 2], 16).unwrap_or(0)).collect()
        } else {
            let url = key.trim_end_matches('=').replace('+', "-").replace('/', "_");
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(url)
                .map_err(|_| "--key: expected a key's 32 bytes in base64url, base64 or hex".to_owned())?
        };
        if bytes.len() != 32 {
            return Err(format!("--key: a Stile key is 32 bytes, this one {}", bytes.len()));
        }
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes);
        let entry = match token.map(|t| t.algorithm()) {
            Some(Algorithm::Ed25519) => json!({"id": id, "algorithm": "ed25519", "public_key": b64}),
            _ => json!({"id": id, "secret": b64}),
        };
        KeyFile::parse("--key", &json!({"version": 1, "keys": [entry], "revocations": []}).to_string())
    }

    fn parse(path: &str, text: &str) -> Result<KeyFile, String> {
        let file: StateFile = serde_json::from_str(text).map_err(|e| format!("--key-file {path}: {e}"))?;
        KeyFile::decode(std::path::Path::new(path), &file)
    }

    fn decode(path: &std::path::Path, file: &StateFile) -> Result<KeyFile, String> {
        let d =
            file.decode(path).map_err(|e| format!("--key-file: {e} (expected an edge state file, docs/edge.md)"))?;
        Ok(KeyFile { path: path.display().to_string(), keys: d.keys, revocations: d.revocations })
    }

    fn ring(&self) -> KeyRing {
        let mut ring = KeyRing::new();
        for (id, key) in &self.keys {
            // The edge's codec checked every key (an Ed25519 key is a valid, non-weak point).
            if let Err(e) = ring.insert_key(*id, key) {
                tracing::warn!(key.id = id, error = %e, "explain.key_refused");
            }
        }
        ring
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

/// One line of the report's checks.
#[derive(Debug)]
struct Row {
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
    checks: Vec<Row>,
    verdict: Verdict,
}

/// Finds the token as an edge would. Err: the reason an edge would give and why.
fn located_token(input: &Input) -> Result<String, (Reason, String)> {
    Ok(locate_all(input)?.0)
}

/// The token found in a link, its transport and the raw request path (when the
/// link has one); or the reason an edge would give and why.
type Located = Result<(String, Transport, Option<String>), (Reason, String)>;

/// Finds the token as an edge does (path prefix › query › cookie).
fn locate_all(input: &Input) -> Located {
    let n = &input.names;
    let link = input.link.trim();
    let Some(target) = target_of(link) else {
        if link.is_empty() {
            return Err((Reason::Missing, "empty input: give a link or a token".into()));
        }
        return Ok((link.to_owned(), Transport::None, None));
    };
    let cookie = cookie_header(input);
    let cookies = cookie.iter().map(|c| c.as_bytes());
    let located =
        locate(target.as_bytes(), cookies, &transport_names(n)).map_err(|r| (r, locate_failure(n, &target)))?;
    let path = String::from_utf8_lossy(located.path).into_owned();
    let path = if target.starts_with("/?") && located.path == b"/" { None } else { Some(path) };
    match located.token {
        Some(t) => Ok((t.to_owned(), located.transport, path)),
        None => Err((Reason::Missing, no_token(n))),
    }
}

/// The request target of a link: a URL's path and query, a bare path or query, or
/// nothing (a bare token). The fragment never reaches an edge.
fn target_of(link: &str) -> Option<String> {
    let mut target = if let Some(i) = link.find("://") {
        let rest = &link[i + 3..];
        let t = rest.find(['/', '?']).map_or("/", |j| &rest[j..]);
        if t.starts_with('?') { format!("/{t}") } else { t.to_owned() }
    } else if link.starts_with('/') || link.starts_with('?') {
        link.to_owned()
    } else {
        return None;
    };
    if let Some(i) = target.find('#') {
        target.truncate(i);
    }
    Some(target)
}

/// The request's `Cookie` header: `--cookie` as given, or a bare value as the edge's cookie.
fn cookie_header(input: &Input) -> Option<String> {
    input.cookie.as_ref().map(|c| {
        let c = c.trim().trim_start_matches("Cookie:").trim();
        if c.contains('=') { c.to_owned() } else { format!("{}={c}", input.names.cookie_name) }
    })
}

fn transport_names(n: &Names) -> TransportNames {
    TransportNames {
        path_prefix: format!("/{}/", n.path_segment),
        query_param: n.query_param.clone(),
        cookie: Some(n.cookie_name.clone()),
    }
}

/// Why finding the token failed, in words.
fn locate_failure(n: &Names, target: &str) -> String {
    let dup = target.split(['?', '&']).skip(1).filter(|p| p.split('=').next() == Some(&n.query_param)).count();
    if dup > 1 {
        format!("the query carries {dup} `{}=` parameters; edges refuse that as ambiguous", n.query_param)
    } else if target.starts_with(&format!("/{}/", n.path_segment)) {
        format!("the path starts with /{}/ but has no path after the token", n.path_segment)
    } else {
        "the token is not valid text".into()
    }
}

fn no_token(n: &Names) -> String {
    format!(
        "no token in the link: not in the path (/{}/<token>/…), not in the query ({}=…), and no cookie (--cookie)",
        n.path_segment, n.query_param
    )
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

/// The request an edge would receive for the input.
#[derive(Debug)]
struct EdgeRequest {
    target: String,
    cookie: Option<String>,
    /// The raw path it asks for, when the input names one (else the scope stands in).
    path: Option<String>,
    /// The raw path the edge checks: `path`, or the scope (never a path token).
    checked: String,
}

impl EdgeRequest {
    /// The link's own request, or, when the path is not the link's (a bare token,
    /// `--path`), the token in a cookie on that path (the scope when there is none).
    fn new(input: &Input, located: &Located) -> EdgeRequest {
        let link = input.link.trim();
        match located {
            Ok((token, _, raw_path)) if input.path.is_some() || raw_path.is_none() => {
                let path = input.path.clone();
                let target = path.clone().unwrap_or_else(|| {
                    Token::parse(token).map_or_else(|_| "/".to_owned(), |t| t.scope_path().to_owned())
                });
                let checked = target.split('?').next().unwrap_or_default().to_owned();
                EdgeRequest { target, cookie: Some(format!("{}={token}", input.names.cookie_name)), path, checked }
            }
            Ok((_, _, raw_path)) => EdgeRequest {
                target: target_of(link).unwrap_or_default(),
                cookie: cookie_header(input),
                path: raw_path.clone(),
                checked: raw_path.clone().unwrap_or_default(),
            },
            Err(_) => EdgeRequest {
                target: target_of(link).unwrap_or_default(),
                cookie: cookie_header(input),
                path: None,
                checked: String::new(),
            },
        }
    }
}

/// The configuration an edge with these names and leeway runs (cookies on; no
/// staleness rule, which explain cannot know).
fn edge_config(n: &Names, leeway: u32) -> EdgeConfig {
    let mut c = EdgeConfig::default();
    c.token.path_segment = n.path_segment.clone();
    c.token.query_param = n.query_param.clone();
    c.token.leeway_secs = leeway;
    c.cookie.enabled = true;
    c.cookie.name = n.cookie_name.clone();
    c.state.max_age_secs = 0;
    c
}

/// What the state an edge would hold is made of: the key file's keys and
/// revocations, and the revocations the control plane lists.
struct Known<'a> {
    key_file: Option<&'a KeyFile>,
    server: &'a ServerView,
    /// The control plane's revocations as the edge's entries, with the originals.
    listed: Vec<(RevocationEntry, &'a pb::Revocation)>,
}

impl<'a> Known<'a> {
    fn new(key_file: Option<&'a KeyFile>, server: &'a ServerView) -> Known<'a> {
        let listed = match server {
            ServerView::Answered { revocations, .. } => {
                revocations.iter().filter_map(|rv| RevocationEntry::try_from(rv).ok().map(|e| (e, rv))).collect()
            }
            _ => Vec::new(),
        };
        Known { key_file, server, listed }
    }

    /// The state: keys with secrets, every revocation known, pruned as an edge prunes.
    fn state(&self, now: u64, leeway: u64) -> State {
        let mut entries: Vec<RevocationEntry> = self.key_file.map(|k| k.revocations.clone()).unwrap_or_default();
        entries.extend(self.listed.iter().map(|(e, _)| e.clone()));
        State {
            keys: self.key_file.map(KeyFile::ring).unwrap_or_default(),
            revocations: revocation_set(&entries, now.saturating_sub(leeway)),
            fresh_at: now,
            ..State::default()
        }
    }

    /// The control plane's view of a key, when it answered.
    fn cp_key(&self, kid: KeyId) -> Option<(&str, Option<&pb::KeyInfo>)> {
        match self.server {
            ServerView::Answered { server, keys, .. } => Some((server.as_str(), keys.iter().find(|k| k.key_id == kid))),
            _ => None,
        }
    }

    /// Which revocation, on its own, denies `token` on `path` (`key_only`: by its key).
    fn matching(&self, token: &Token, path: &str, key_only: bool) -> Option<Source<'a>> {
        let hits = |e: &RevocationEntry| {
            let set = revocation_set(std::slice::from_ref(e), 0);
            if key_only { set.key_revoked(token.key_id()) } else { set.is_revoked(token, path) }
        };
        let file = self.key_file.and_then(|k| k.revocations.iter().find(|e| hits(e)).map(|e| Source::File(k, e)));
        file.or_else(|| self.listed.iter().find(|(e, _)| hits(e)).map(|(_, rv)| Source::ControlPlane(rv)))
    }
}

/// Where a matching revocation came from.
#[derive(Clone, Copy)]
enum Source<'a> {
    File(&'a KeyFile, &'a RevocationEntry),
    ControlPlane(&'a pb::Revocation),
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
    let located = locate_all(input);
    if let Err((Reason::Missing, why)) = &located
        && input.link.trim().is_empty()
    {
        r.checks.push(Row { name: "token", status: Status::Fail(Reason::Missing), detail: why.clone() });
        return r.finish(req);
    }
    let request = EdgeRequest::new(input, &located);
    r.transport = located.as_ref().ok().map(|(_, t, _)| *t);
    r.path = request.path.as_deref().and_then(|p| canonicalize_path(p.as_bytes()).ok()).map(|p| p.into_owned());

    // The edge's own validator, on the state it would hold.
    let known = Known::new(key_file, server);
    let state = known.state(req.edge_now, u64::from(req.leeway));
    let validator = Validator::new(&edge_config(&input.names, req.leeway));
    let edge_input = validate::Input { target: request.target.as_bytes(), client_ip: req.client_ip, now: req.edge_now };
    let mut trace = Vec::new();
    let verdict = validator.validate_traced(
        &state,
        &edge_input,
        request.cookie.as_deref().map(str::as_bytes),
        || req.country,
        &mut |check, outcome| trace.push((check, outcome)),
    );
    let ctx = Render {
        input,
        req,
        known: &known,
        request: &request,
        located: &located,
        token: verdict.token.as_ref(),
        session: verdict.session.as_deref(),
    };
    for (check, outcome) in trace {
        ctx.rows(check, outcome, &mut r.checks);
    }
    r.token = verdict.token;
    r.finish(req)
}

/// What the rows are rendered from.
struct Render<'a> {
    input: &'a Input,
    req: &'a RequestFacts,
    known: &'a Known<'a>,
    request: &'a EdgeRequest,
    located: &'a Located,
    token: Option<&'a Token>,
    /// The session credential, when the link is one (`docs/sessions.md`); `token` is its link.
    session: Option<&'a Session>,
}

impl Render<'_> {
    /// The report's rows for one traced check. The status is the edge's
    /// outcome, except where explain lacks a fact the edge would have (the
    /// key's secret, the client's address or country, the request path): then
    /// it is `unknown`, and `n/a` where the token has no such rule.
    fn rows(&self, check: Check, outcome: Result<(), Reason>, rows: &mut Vec<Row>) {
        let n = &self.input.names;
        let mut push = |name, (status, detail): (Status, String)| rows.push(Row { name, status, detail });
        let token_text = self.located.as_ref().map(|(t, _, _)| t.as_str()).unwrap_or_default();
        match (check, outcome, self.token) {
            // Before the token parses, only failures are shown.
            (Check::Target | Check::Transport | Check::Path | Check::Token, Ok(()), _) => {}
            (Check::Target, Err(r), _) => {
                push("token", (Status::Fail(r), format!("the request is longer than {MAX_TARGET_LEN} bytes")));
            }
            (Check::Transport, Err(r), _) => push("token", (Status::Fail(r), locate_failure(n, &self.request.target))),
            (Check::Path, Err(r), _) => {
                let raw = &self.request.checked;
                let why = canonicalize_path(raw.as_bytes()).err().map_or_else(String::new, |e| e.to_string());
                push("path", (Status::Fail(r), format!("the request path {raw:?} is refused: {why}")));
            }
            (Check::Token, Err(r), _) => push("token", (Status::Fail(r), no_token(n))),
            (Check::Format, Err(r), _) => push("format", (Status::Fail(r), malformed_hint(token_text))),
            (Check::Format, Ok(()), _) => match self.session {
                Some(s) => push(
                    "format",
                    (
                        Status::Pass,
                        format!(
                            "a playback session credential ({} characters): session {} of the link {}",
                            token_text.len(),
                            s.id(),
                            s.link().token_id()
                        ),
                    ),
                ),
                None => {
                    push("format", (Status::Pass, format!("a Stile v1 token, {} characters", token_text.len())));
                }
            },
            (_, _, None) => {}
            (Check::Key, outcome, Some(t)) => {
                push("key", self.key(t, outcome));
                if outcome.is_err() {
                    // The edge checks no MAC without the key.
                    push("signature", self.unchecked_signature(t));
                    // Nor the session tag that stands for an HMAC link's MAC (an
                    // Ed25519 link's session tag is a step of its own, below).
                    if self.session.is_some_and(Session::tag_covers_link) {
                        push("session", self.session_tag(t, Err(Reason::UnknownKey)));
                    }
                }
            }
            (Check::Signature, outcome, Some(t)) => match self.session {
                // An HMAC link under a session: the edge's signature step is the session tag.
                Some(s) if s.tag_covers_link() => {
                    push(
                        "signature",
                        (
                            Status::NotApplicable,
                            "not checked on its own: the session tag covers the link and its MAC (an HMAC link)".into(),
                        ),
                    );
                    push("session", self.session_tag(t, outcome));
                }
                _ => push("signature", self.signature(t, outcome)),
            },
            (Check::Session, outcome, Some(t)) => push("session", self.session_tag(t, outcome)),
            (Check::Time, outcome, Some(t)) => match self.session {
                Some(s) => push("time", self.session_time(s, outcome)),
                None => push("time", self.time(t, outcome)),
            },
            (Check::Client, outcome, Some(_)) => push("client", self.session_client(outcome)),
            (Check::Scope, outcome, Some(t)) => push("scope", self.scope(t, outcome)),
            (Check::Ip, outcome, Some(t)) => push("ip", self.ip(t, outcome)),
            (Check::Country, outcome, Some(t)) => push("country", self.country(t, outcome)),
            (Check::Revoked, outcome, Some(t)) => push("revoked", self.revoked(t, outcome)),
            (Check::Stale, outcome, Some(_)) => push("state", (status(outcome), "the edge's state is too old".into())),
        }
    }

    fn key(&self, t: &Token, outcome: Result<(), Reason>) -> (Status, String) {
        let kid = t.key_id();
        let cp = self.known.cp_key(kid);
        match (outcome, self.known.key_file) {
            (Ok(()), Some(kf)) => match cp {
                Some((server, Some(k))) => {
                    (Status::Pass, format!("key {kid} is in {}; {} on {server}", kf.path, key_state(k.state)))
                }
                _ => (Status::Pass, format!("key {kid} is in {}", kf.path)),
            },
            (Ok(()), None) => (Status::Pass, format!("key {kid} verifies")),
            (Err(Reason::Revoked), _) => {
                let why = match self.known.matching(t, "", true) {
                    Some(Source::ControlPlane(rv)) => format!(" by {}: \"{}\"", rv.actor, rv.reason),
                    Some(Source::File(kf, _)) => format!(" (a key revocation in {})", kf.path),
                    None => String::new(),
                };
                let when = match cp {
                    Some((_, Some(k))) if k.state == pb::KeyState::Retired as i32 => {
                        format!("was retired {} ({})", relative(k.retired_at, self.req.real_now), utc(k.retired_at))
                    }
                    _ => "is revoked".to_owned(),
                };
                (Status::Fail(Reason::Revoked), format!("key {kid} {when}{why}; every link it signed is revoked"))
            }
            (Err(r), Some(kf)) => {
                let held = kf.keys.iter().map(|(id, _)| id.to_string()).collect::<Vec<_>>().join(", ");
                (Status::Fail(r), format!("key {kid} is not in {} (it holds keys {held})", kf.path))
            }
            // Without a key file the state holds no secrets: the control plane says whether edges hold the key.
            (Err(r), None) => match cp {
                Some((server, None)) => (
                    Status::Fail(r),
                    format!("key {kid} is unknown to the control plane at {server}: minted by another installation?"),
                ),
                Some((_, Some(k))) if k.state == pb::KeyState::Retired as i32 => (
                    Status::Fail(r),
                    format!(
                        "key {kid} was retired {} ({}) and its revocation has expired: edges no longer hold it",
                        relative(k.retired_at, self.req.real_now),
                        utc(k.retired_at)
                    ),
                ),
                Some((server, Some(k))) => (Status::Pass, format!("key {kid} is {} on {server}", key_state(k.state))),
                None => (Status::Unknown, "not checked: no --key-file and no answer from the control plane".into()),
            },
        }
    }

    fn unchecked_signature(&self, t: &Token) -> (Status, String) {
        match (self.known.key_file, t.algorithm()) {
            (Some(_), _) => (Status::NotApplicable, "not checked: the key is missing".into()),
            (None, Algorithm::Ed25519) => (
                Status::Unknown,
                "not checked offline: needs the key's Ed25519 public key (--key-file EDGE_STATE.json, as an edge \
                 holds it)"
                    .into(),
            ),
            (None, _) => (
                Status::Unknown,
                "not checked offline: needs the key's secret (--key-file EDGE_STATE.json); the control plane never \
                 reveals secrets"
                    .into(),
            ),
        }
    }

    fn signature(&self, t: &Token, outcome: Result<(), Reason>) -> (Status, String) {
        let (kid, file) = (t.key_id(), self.known.key_file.map_or("the key file", |k| k.path.as_str()));
        let what = match t.algorithm() {
            Algorithm::Ed25519 => "Ed25519 signature",
            Algorithm::HmacSha256 => "MAC",
        };
        match outcome {
            Ok(()) => (Status::Pass, format!("the {what} verifies with key {kid} from {file}")),
            Err(r) => (
                Status::Fail(r),
                format!("the {what} does not match key {kid} from {file}: the token was altered, or the key differs"),
            ),
        }
    }

    fn session_tag(&self, t: &Token, outcome: Result<(), Reason>) -> (Status, String) {
        let kid = t.key_id();
        match (outcome, self.known.key_file) {
            (Ok(()), _) => (Status::Pass, format!("the session tag verifies with key {kid}'s session secret")),
            (Err(Reason::UnknownKey), None) => (
                Status::Unknown,
                "not checked offline: needs the key's session secret (--key-file EDGE_STATE.json)".into(),
            ),
            (Err(Reason::UnknownKey), Some(kf)) => (
                Status::Fail(Reason::UnknownKey),
                format!(
                    "{} holds no session secret for key {kid} (an Ed25519 key needs its session_secret): edges \
                     without it refuse every session of this key's links",
                    kf.path
                ),
            ),
            (Err(r), _) => (
                Status::Fail(r),
                "the session tag does not match: the session part was altered, moved to another link, or issued \
                 with another secret"
                    .into(),
            ),
        }
    }

    fn session_time(&self, s: &Session, outcome: Result<(), Reason>) -> (Status, String) {
        let (now, leeway, clock) = (self.req.edge_now, self.req.leeway, clock_words(self.req));
        let c = s.claims();
        let (idle_end, max_end) = (c.expires_at(), s.max_at());
        let link_exp = s.link().expires_at();
        let facts = format!(
            "session started {} ({}), link expired {}, this credential issued {} lives to {} ({}), hard maximum {} ({})",
            utc(c.started_at),
            relative(c.started_at, now),
            relative(link_exp, now),
            relative(c.issued_at, now),
            utc(idle_end),
            relative(idle_end, now),
            utc(max_end),
            relative(max_end, now)
        );
        match outcome {
            Ok(()) => (Status::Pass, format!("{facts}{clock}")),
            Err(Reason::SessionMax) => (
                Status::Fail(Reason::SessionMax),
                format!("the session reached its hard maximum: {facts}{clock}; edges allow {leeway} s of leeway"),
            ),
            Err(Reason::SessionExpired) => (
                Status::Fail(Reason::SessionExpired),
                format!("the session was not renewed in time (idle): {facts}{clock}; edges allow {leeway} s of leeway"),
            ),
            Err(Reason::Expired) => {
                (Status::Fail(Reason::Expired), format!("the session started after its link expired: {facts}"))
            }
            Err(r) => (Status::Fail(r), format!("the session is not valid yet: {facts}{clock}")),
        }
    }

    fn session_client(&self, outcome: Result<(), Reason>) -> (Status, String) {
        let Some(s) = self.session else { return (Status::NotApplicable, String::new()) };
        let p = s.policy();
        let policy = format!("the link's policy binds IPv4 /{} and IPv6 /{} (0: not bound)", p.bind_v4, p.bind_v6);
        match (s.claims().bind, self.req.client_ip, outcome) {
            (None, _, Ok(())) => (Status::Pass, format!("the session is not bound; {policy}")),
            (Some(b), None, _) => (Status::Unknown, format!("the session is bound to {b}; give --client-ip to check")),
            (Some(b), Some(c), Ok(())) => (Status::Pass, format!("{c} is within the session's binding {b}")),
            (b, c, Err(r)) => (
                Status::Fail(r),
                format!(
                    "client {} does not meet the session's binding {}; {policy}",
                    c.map_or("unknown".into(), |c| c.to_string()),
                    b.map_or("(none)".into(), |b| b.to_string())
                ),
            ),
        }
    }

    fn time(&self, t: &Token, outcome: Result<(), Reason>) -> (Status, String) {
        let (now, leeway, clock) = (self.req.edge_now, self.req.leeway, clock_words(self.req));
        let (exp, from) = (t.expires_at(), t.valid_from());
        match outcome {
            Err(Reason::NotYetValid) => (
                Status::Fail(Reason::NotYetValid),
                format!(
                    "not valid until {} ({}){clock}; edges allow {leeway} s of leeway",
                    utc(from),
                    relative(from, now)
                ),
            ),
            Err(r) => (
                Status::Fail(r),
                format!("expired {} ({}){clock}; edges allow {leeway} s of leeway", relative(exp, now), utc(exp)),
            ),
            Ok(()) if now >= exp => (
                Status::Pass,
                format!("expired {} ago but within the edge's {leeway} s leeway{clock}", duration(now - exp)),
            ),
            Ok(()) => (Status::Pass, format!("valid until {} ({}){clock}", utc(exp), relative(exp, now))),
        }
    }

    fn scope(&self, t: &Token, outcome: Result<(), Reason>) -> (Status, String) {
        let scope = t.scope_path();
        let kind = if t.is_prefix() { "prefix" } else { "exact path" };
        let Some(p) = self.request.path.as_deref() else {
            return (
                Status::Unknown,
                format!("scope {scope} ({kind}); no request path to check (give a URL or --path)"),
            );
        };
        let p = canonicalize_path(p.as_bytes()).map_or_else(|_| p.to_owned(), |c| c.into_owned());
        match outcome {
            Ok(()) => (Status::Pass, format!("{p} is within the link's scope {scope} ({kind})")),
            Err(r) => (Status::Fail(r), format!("{p} is outside the link's scope {scope} ({kind})")),
        }
    }

    fn ip(&self, t: &Token, outcome: Result<(), Reason>) -> (Status, String) {
        match (t.ip(), self.req.client_ip, outcome) {
            (None, _, _) => (Status::NotApplicable, "not bound to an address".into()),
            (Some(b), None, _) => (Status::Unknown, format!("bound to {b}; give --client-ip to check")),
            (Some(b), Some(c), Ok(())) => (Status::Pass, format!("{c} is within {b}")),
            (Some(b), Some(c), Err(r)) => (Status::Fail(r), format!("{c} is outside the link's binding {b}")),
        }
    }

    fn country(&self, t: &Token, outcome: Result<(), Reason>) -> (Status, String) {
        let Some(rule) = t.country_rule() else { return (Status::NotApplicable, "no country rule".into()) };
        let (list, deny) = match &rule {
            CountryRule::Allow(l) => (l, false),
            CountryRule::Deny(l) => (l, true),
        };
        let names = list.iter().map(Country::as_str).collect::<Vec<_>>().join(", ");
        let rule_text = if deny { format!("deny-list {names}") } else { format!("allow-list {names}") };
        match (self.req.country, outcome) {
            (None, _) => (Status::Unknown, format!("{rule_text}; give --country to check")),
            (Some(c), Ok(())) => (Status::Pass, format!("{c} is admitted by the {rule_text}")),
            (Some(c), Err(r)) => (Status::Fail(r), format!("{c} is not admitted by the {rule_text}")),
        }
    }

    fn revoked(&self, t: &Token, outcome: Result<(), Reason>) -> (Status, String) {
        let path = canonicalize_path(self.request.checked.as_bytes()).unwrap_or_default();
        match (outcome, self.known.matching(t, &path, false)) {
            (Err(r), Some(Source::File(kf, e))) => {
                (Status::Fail(r), format!("{} revokes it ({})", describe(e), kf.path))
            }
            (Err(r), Some(Source::ControlPlane(rv))) => (
                Status::Fail(r),
                format!(
                    "revoked by {} {} ({}): \"{}\" — {} (version {})",
                    rv.actor,
                    relative(rv.created_at, self.req.real_now),
                    utc(rv.created_at),
                    rv.reason,
                    crate::client::revocation_target_text(rv.target.as_ref()),
                    rv.version
                ),
            ),
            (Err(r), None) => (Status::Fail(r), "a revocation in force matches".into()),
            (Ok(()), _) => match (self.known.server, self.known.key_file) {
                (ServerView::Answered { server, revocations, .. }, _) => (
                    Status::Pass,
                    format!("none of the {} revocations in force on {server} matches", revocations.len()),
                ),
                (_, Some(kf)) => {
                    (Status::Pass, format!("none of the {} revocations in {} matches", kf.revocations.len(), kf.path))
                }
                _ => (
                    Status::Unknown,
                    "not checked: no answer from the control plane (--server, --api-key with role operator) and no \
                     --key-file"
                        .into(),
                ),
            },
        }
    }
}

fn status(outcome: Result<(), Reason>) -> Status {
    outcome.map_or_else(Status::Fail, |()| Status::Pass)
}

fn key_state(state: i32) -> String {
    crate::client::key_state_name(state)
}

fn clock_words(req: &RequestFacts) -> String {
    match req.clock {
        EdgeClock::Now | EdgeClock::Skew(0) => String::new(),
        EdgeClock::Skew(s) if s > 0 => format!(" on an edge whose clock is {} ahead", duration(s.unsigned_abs())),
        EdgeClock::Skew(s) => format!(" on an edge whose clock is {} behind", duration(s.unsigned_abs())),
        EdgeClock::At => format!(" at {}", utc(req.edge_now)),
    }
}

/// A state-file revocation in words.
fn describe(e: &RevocationEntry) -> String {
    match (e.kind, e.issued_before) {
        (RevocationKind::Subject | RevocationKind::Prefix, Some(before)) => {
            format!("a {} revocation of {} (links issued before {})", e.kind.as_str(), e.value, utc(before))
        }
        (kind, _) => format!("a {} revocation of {}", kind.as_str(), e.value),
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
    use base64::Engine as _;
    use stile_token::{Claims, IpBinding, Scope, SecretKey};

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
        pb::KeyInfo {
            key_id: id,
            state: state.into(),
            created_at: NOW - 9000,
            activated_at: 0,
            retired_at: NOW - 60,
            ..Default::default()
        }
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
        check("http://edge/_st/TOKEN/vod/%2e%2e/x.ts", &ok, &f, None, &none, "malformed", "\"/vod/%2e%2e/x.ts\"");
        let kf_prefix = key_file(&format!(r#"{{"kind":"prefix","value":"/vod/abc/v1/","issued_before":{NOW}}}"#));
        let seg = "http://edge/_st/TOKEN/vod/abc/v1/seg0.ts";
        check(seg, &ok, &f, Some(&kf_prefix), &none, "revoked", "a prefix revocation of /vod/abc/v1/");
        // A bare token: no path, so the scope is unknown.
        check("TOKEN", &ok, &f, Some(&kf), &none, "pass", "not checked: scope");
    }

    /// For a table of links, explain's verdict is the edge's own: the edge's
    /// file-mode loader builds the state from the same state file, and its
    /// validator judges the same request, address, country and clock.
    #[test]
    fn explain_says_what_the_edge_does() {
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(SECRET);
        let ok = token(|_| {});
        let mut forged = ok.clone().into_bytes();
        let last = forged.len() - 3;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        let bound = token(|c| c.ip = Some(IpBinding::new("203.0.113.0".parse().unwrap(), 24).unwrap()));
        let allow_de = token(|c| c.countries = Some(CountryRule::Allow(vec![Country::parse("DE").unwrap()])));
        let deny_fr = token(|c| c.countries = Some(CountryRule::Deny(vec![Country::parse("FR").unwrap()])));
        let key2 = token(|c| c.key_id = 2);
        let url = "http://edge:8080/vod/abc/master.m3u8?st=TOKEN";
        let (inside, outside) = ("203.0.113.9".parse().ok(), "198.51.100.7".parse().ok());
        let (de, fr) = (Country::parse("DE"), Country::parse("FR"));
        let rev = |kind: &str, value: &str, before: u64| {
            format!(r#"{{"kind":"{kind}","value":"{value}","issued_before":{before},"expires_at":{}}}"#, NOW + 9000)
        };
        #[rustfmt::skip]
        type Case<'a> = (&'a str, &'a str, String, Option<IpAddr>, Option<Country>, u64, &'a str);
        let rows: Vec<Case<'_>> = vec![
            // (link, token, revocations, client ip, country, edge clock, the edge's verdict)
            (url, &ok, String::new(), None, None, NOW, "pass"),
            ("http://edge/_st/TOKEN/vod/abc/v1/seg0.ts", &ok, String::new(), None, None, NOW, "pass"),
            (url, &ok, String::new(), None, None, NOW + 3000 + 4, "pass"),
            (url, &ok, String::new(), None, None, NOW + 3000 + 5, "expired"),
            (url, &ok, String::new(), None, None, NOW - 600 - 6, "not_yet_valid"),
            ("http://edge/vod/other/a.ts?st=TOKEN", &ok, String::new(), None, None, NOW, "scope"),
            ("http://edge/vod/abc/%2e%2e/x.ts?st=TOKEN", &ok, String::new(), None, None, NOW, "malformed"),
            ("http://edge/vod/abc/a.ts?st=TOKEN&st=TOKEN", &ok, String::new(), None, None, NOW, "malformed"),
            ("http://edge/vod/abc/a.ts", &ok, String::new(), None, None, NOW, "missing"),
            (url, "AAAA", String::new(), None, None, NOW, "malformed"),
            (url, &bound, String::new(), inside, None, NOW, "pass"),
            (url, &bound, String::new(), outside, None, NOW, "ip"),
            (url, &allow_de, String::new(), None, de, NOW, "pass"),
            (url, &allow_de, String::new(), None, fr, NOW, "geo"),
            (url, &deny_fr, String::new(), None, fr, NOW, "geo"),
            (url, &deny_fr, String::new(), None, de, NOW, "pass"),
            (url, &ok, r#"{"kind":"token_id","value":"0123456789ABCDEF"}"#.into(), None, None, NOW, "revoked"),
            (url, &ok, rev("subject", "viewer-1", NOW), None, None, NOW, "revoked"),
            (url, &ok, rev("subject", "viewer-1", NOW - 600), None, None, NOW, "pass"),
            (url, &ok, rev("prefix", "/vod/", NOW), None, None, NOW, "revoked"),
            (url, &ok, rev("prefix", "/vod/abc/master.m3u8", NOW), None, None, NOW, "revoked"),
            (url, &ok, rev("prefix", "/vod/abc/v1/", NOW), None, None, NOW, "pass"),
            (url, &ok, r#"{"kind":"key","value":"1"}"#.into(), None, None, NOW, "revoked"),
            (url, &key2, r#"{"kind":"key","value":"2"}"#.into(), None, None, NOW, "revoked"),
            (url, &key2, String::new(), None, None, NOW, "unknown_key"),
            (url, &forged, String::new(), None, None, NOW, "bad_signature"),
            (url, &bound, r#"{"kind":"key","value":"1"}"#.into(), outside, None, NOW + 3000 + 5, "expired"),
        ];
        let mut seen = std::collections::BTreeSet::new();
        for (link, tok, revocations, client_ip, country, now, want) in rows {
            let json =
                format!(r#"{{"version":3,"keys":[{{"id":1,"secret":"{secret}"}}],"revocations":[{revocations}]}}"#);
            let link = link.replace("TOKEN", tok);
            let facts = RequestFacts { client_ip, country, edge_now: now, clock: EdgeClock::At, ..facts() };
            let input = Input { link: link.clone(), cookie: None, path: None, names: Names::default() };
            let kf = KeyFile::parse("state.json", &json).unwrap();
            let report = explain(&input, &facts, Some(&kf), &ServerView::NotAsked("--offline".into()));
            let explained = match report.verdict {
                Verdict::Deny(r, _) => r.as_str(),
                Verdict::Pass { .. } => "pass",
            };
            // The edge: its file loader, its configuration's defaults (cookies on), its validator.
            let file: StateFile = serde_json::from_str(&json).unwrap();
            let state = file.into_state(std::path::Path::new("state.json"), now, 5).unwrap();
            let mut config = EdgeConfig::default();
            config.cookie.enabled = true;
            let target = target_of(&link).unwrap();
            let edge_input = validate::Input { target: target.as_bytes(), client_ip, now };
            let edge = Validator::new(&config).validate(&state, &edge_input, None, || country).result;
            let edge = edge.map_or_else(|r| r.as_str(), |()| "pass");
            assert_eq!(explained, edge, "{link} at {now}:\n{}", report.text());
            assert_eq!(edge, want, "{link} at {now}");
            seen.insert(want);
        }
        let every = ["pass", "expired", "not_yet_valid", "scope", "ip", "geo", "revoked", "unknown_key"];
        for reason in every.into_iter().chain(["bad_signature", "malformed", "missing"]) {
            assert!(seen.contains(reason), "no row for {reason}");
        }
    }

    /// A session credential: the session's own rows, and its reasons as the edge decides them.
    #[test]
    fn session_credentials_are_explained() {
        let mut ring = KeyRing::new();
        ring.insert(1, &SecretKey::from_bytes(SECRET));
        let policy = stile_token::SessionPolicy { idle_secs: 60, max_secs: 3600, bind_v4: 0, bind_v6: 0 };
        let link = stile_token::sign_with_session(&claims(), Some(&policy), &ring).unwrap();
        let link = Token::parse(&link).unwrap();
        let cred = stile_token::session::start(&link, stile_token::SessionId(0xfeed), NOW, 60, None, &ring).unwrap();
        let kf = key_file("");
        let none = ServerView::NotAsked("--offline".into());
        let url = "http://edge/vod/abc/v1/seg0.ts?st=TOKEN";
        let at = |now| RequestFacts { edge_now: now, clock: EdgeClock::At, ..facts() };
        check(url, &cred, &at(NOW + 30), Some(&kf), &none, "pass", "admit");
        check(url, &cred, &at(NOW + 65), Some(&kf), &none, "session_expired", "not renewed in time");
        let late = Session::parse(&cred).unwrap().renew(&ring, NOW + 3590, 60).unwrap();
        check(url, &late, &at(NOW + 3600 + 5), Some(&kf), &none, "session_max", "hard maximum");
        let mut forged = cred.clone().into_bytes();
        let i = forged.len() - 5;
        forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        check(url, &forged, &at(NOW + 30), Some(&kf), &none, "bad_signature", "session tag");
        let forged_input =
            Input { link: url.replace("TOKEN", &forged), cookie: None, path: None, names: Names::default() };
        let text = explain(&forged_input, &at(NOW + 30), Some(&kf), &none).text();
        assert!(
            text.contains("the session part was altered, moved to another link, or issued with another secret"),
            "{text}"
        );
        let input = Input { link: url.replace("TOKEN", &cred), cookie: None, path: None, names: Names::default() };
        let text = explain(&input, &at(NOW + 30), Some(&kf), &none).text();
        assert!(text.contains("session 000000000000feed of the link 0123456789abcdef"), "{text}");
        // Offline, with no key file: the session tag is a row of its own, not checked.
        check(url, &cred, &at(NOW + 30), None, &none, "pass", "not checked: key, signature, session, revoked");
        let text = explain(&input, &at(NOW + 30), None, &none).text();
        assert!(text.contains("needs the key's session secret"), "{text}");
    }

    /// `--format stile --key KEY`: the one key, under the link's key id, of its algorithm.
    #[test]
    fn one_stile_key_on_the_command_line() {
        let link = format!("http://edge/vod/abc/master.m3u8?st={}", token(|_| {}));
        let input = Input { link, cookie: None, path: None, names: Names::default() };
        let none = ServerView::NotAsked("--offline".into());
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(SECRET);
        let hex: String = SECRET.iter().map(|b| format!("{b:02x}")).collect();
        let padded = base64::engine::general_purpose::STANDARD.encode(SECRET);
        for key in [&b64, &hex, &padded] {
            let kf = KeyFile::one_key(&input, key, None).unwrap();
            let r = explain(&input, &facts(), Some(&kf), &none);
            assert!(matches!(r.verdict, Verdict::Pass { .. }), "{key}: {}", r.text());
        }
        let other = KeyFile::one_key(&input, &b64, Some("9")).unwrap();
        let r = explain(&input, &facts(), Some(&other), &none);
        assert!(matches!(r.verdict, Verdict::Deny(Reason::UnknownKey, _)), "{}", r.text());
        let wrong = KeyFile::one_key(&input, &"5b".repeat(32), None).unwrap();
        let r = explain(&input, &facts(), Some(&wrong), &none);
        assert!(matches!(r.verdict, Verdict::Deny(Reason::BadSignature, _)), "{}", r.text());
        assert!(KeyFile::one_key(&input, "AAAA", None).unwrap_err().contains("32 bytes"));
        assert!(KeyFile::one_key(&input, &b64, Some("x")).unwrap_err().contains("key id is a number"));
    }

    /// Offline, an Ed25519 link's signature needs the public key an edge holds, not a secret.
    #[test]
    fn offline_an_ed25519_link_needs_the_public_key() {
        let mut ring = KeyRing::new();
        ring.insert_ed25519_secret(2, &stile_token::Ed25519Secret::from_bytes([7; 32]));
        let link = stile_token::sign(&Claims { key_id: 2, ..claims() }, &ring).unwrap();
        let none = ServerView::NotAsked("--offline".into());
        let link = format!("http://edge/vod/abc/master.m3u8?st={link}");
        let input = Input { link, cookie: None, path: None, names: Names::default() };
        let text = explain(&input, &facts(), None, &none).text();
        assert!(text.contains("needs the key's Ed25519 public key"), "{text}");
        assert!(!text.contains("needs the key's secret"), "{text}");
    }

    #[test]
    fn a_revoked_key_missing_from_the_file_is_revoked_as_at_the_edge() {
        // The edge says `revoked` for a retired key (its revocation in force, its secret gone).
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(SECRET);
        let text = format!(
            r#"{{"version":1,"keys":[{{"id":1,"secret":"{secret}"}}],"revocations":[{{"kind":"key","value":"2"}}]}}"#
        );
        let kf = KeyFile::parse("state.json", &text).unwrap();
        let other = token(|c| c.key_id = 2);
        let none = ServerView::NotAsked("--offline".into());
        let url = "http://edge/vod/abc/master.m3u8?st=TOKEN";
        check(url, &other, &facts(), Some(&kf), &none, "revoked", "a key revocation in state.json");
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
