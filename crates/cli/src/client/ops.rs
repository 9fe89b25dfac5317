//! Operator and admin commands: `revoke`, `purge`, `revocations`, `keys`, `assets`,
//! `audit`, `api-keys`, and `config` (the effective client settings).

use std::time::Duration;

use clap::{ArgGroup, Subcommand};
use serde_json::json;
use stile_proto::v1 as pb;
use stile_proto::v1::api_key_service_client::ApiKeyServiceClient;
use stile_proto::v1::asset_service_client::AssetServiceClient;
use stile_proto::v1::audit_service_client::AuditServiceClient;
use stile_proto::v1::key_service_client::KeyServiceClient;
use stile_proto::v1::purge_service_client::PurgeServiceClient;
use stile_proto::v1::revocation_service_client::RevocationServiceClient;

use super::foreign_keys;
use super::output::{Table, parse_duration, parse_time, relative, rfc3339, utc};
use super::{Client, Failure, now, print_json, short};
use crate::settings::Settings;

// ------------------------------------------------------------------ revoke

/// Arguments of `stile revoke`: exactly one target.
#[derive(Debug, clap::Args)]
#[command(group(
    ArgGroup::new("target").required(true).args(["token_id", "link", "subject", "prefix", "key_id", "batch"])
))]
pub(crate) struct RevokeArgs {
    /// One link, by its token id (16 hex digits, as `stile mint` and `stile explain` show).
    #[arg(long, value_name = "HEX")]
    token_id: Option<String>,
    /// One link, by the link itself (URL or bare token); decoded offline for its token id.
    #[arg(long, value_name = "URL")]
    link: Option<String>,
    /// Every link of one viewer issued before --before.
    #[arg(long)]
    subject: Option<String>,
    /// Every link whose scope lies under this path prefix (ending in /), issued before --before.
    #[arg(long, value_name = "PATH")]
    prefix: Option<String>,
    /// Every link signed with this key (retires the key; rotate first if it is active).
    #[arg(long, value_name = "ID")]
    key_id: Option<u32>,
    /// Many targets in one atomic RevokeBatch call, from FILE (`-`: stdin), one
    /// per line: a token id (16 hex digits), `subject:ID`, `prefix:/path/`, or
    /// `purge:/path/` (a prefix whose cached objects are purged too); blank
    /// lines and `#` comments are skipped. --before applies to every subject and prefix.
    #[arg(long, value_name = "FILE")]
    batch: Option<std::path::PathBuf>,
    /// With --subject or --prefix (or --batch): links issued before this time (default now;
    /// Unix seconds, RFC 3339, or -10m).
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    before: Option<String>,
    /// With --prefix: also purge cached objects under the prefix at the edges.
    #[arg(long, requires = "prefix")]
    purge: bool,
    /// Why (1..200 characters); shown to support staff by `stile explain`.
    #[arg(long, required = true)]
    reason: String,
    /// Return only once every expected edge (connected, or seen within the
    /// control plane's `sync.seen_window_secs`) enforces it; else name the
    /// edges that did not by --deadline (exit 4; exit 5 when no edge did).
    #[arg(long)]
    wait: bool,
    /// With --wait: the longest wait, e.g. 2s, 500ms (default: the control
    /// plane's `sync.revoke_wait_default_ms`).
    #[arg(long, value_name = "DURATION", requires = "wait")]
    deadline: Option<String>,
    #[command(flatten)]
    expect: ExpectArgs,
}

/// What `--wait` (and key rotation) must be confirmed by.
#[derive(Debug, clap::Args)]
pub(crate) struct ExpectArgs {
    /// At least N expected edges must confirm (default 1; 0 accepts "confirmed by 0 edges").
    #[arg(long, value_name = "N")]
    min_edges: Option<u32>,
    /// Expect exactly these edges (ids, or prefixes ending in `*`) instead of
    /// every edge connected or recently seen. Repeatable.
    #[arg(long = "expect-edge", value_name = "ID")]
    expect_edges: Vec<String>,
}

impl ExpectArgs {
    fn request(&self) -> Option<pb::WaitExpectation> {
        (self.min_edges.is_some() || !self.expect_edges.is_empty())
            .then(|| pb::WaitExpectation { min_edges: self.min_edges, edges: self.expect_edges.clone() })
    }
}

pub(crate) async fn revoke(settings: &Settings, a: RevokeArgs) -> Result<(), Failure> {
    use pb::revocation_target::Target as T;
    let now = now();
    if a.before.is_some() && a.subject.is_none() && a.prefix.is_none() && a.batch.is_none() {
        return Err(Failure::usage("--before applies to --subject, --prefix and --batch only"));
    }
    let before = match &a.before {
        Some(t) => parse_time(t, now).map_err(|e| Failure::usage(format!("--before: {e}")))?,
        None => 0,
    };
    if !a.wait && a.expect.request().is_some() {
        return Err(Failure::usage("--min-edges and --expect-edge apply to --wait"));
    }
    if let Some(path) = a.batch.clone() {
        let targets = read_targets(&path, before)?;
        return revoke_batch(settings, a, targets).await;
    }
    let target = if let Some(id) = a.token_id {
        let id = id.trim().to_ascii_lowercase();
        if stile_token::TokenId::from_hex(&id).is_none() {
            return Err(Failure::usage(format!("--token-id {id:?}: expected 16 hex digits")));
        }
        T::TokenId(id)
    } else if let Some(link) = a.link {
        let found = super::explain::token_of(&link)
            .map_err(|e| Failure::usage(format!("--link: {e}")).hint("pass --token-id HEX instead"))?;
        T::TokenId(found.to_string())
    } else if let Some(subject) = a.subject {
        T::Subject(pb::SubjectTarget { subject, issued_before: before })
    } else if let Some(prefix) = a.prefix {
        T::PathPrefix(pb::PathPrefixTarget { prefix, issued_before: before, purge: a.purge })
    } else if let Some(key_id) = a.key_id {
        T::KeyId(key_id)
    } else {
        return Err(Failure::usage("nothing to revoke"));
    };
    let wait_timeout_ms = wait_timeout(a.deadline.as_deref())?;
    let client = Client::connect(settings, "operator").await?;
    let req = pb::RevokeRequest {
        target: Some(pb::RevocationTarget { target: Some(target) }),
        reason: a.reason,
        wait: a.wait,
        wait_timeout_ms,
        expect: a.expect.request(),
    };
    let resp = RevocationServiceClient::new(client.channel.clone())
        .revoke(client.req(req))
        .await
        .map_err(|s| client.fail(&s))?
        .into_inner();
    let r = resp.revocation.clone().unwrap_or_default();
    let waited = a.wait.then(|| Waited::of(resp.confirmation.clone(), resp.waited_ms, &resp.lagging));
    if settings.json() {
        let mut doc = json!({ "version": resp.version, "revocation": revocation_json(&r) });
        if a.wait {
            doc["edges"] = resp.edges.iter().map(edge_ack_json).collect();
        }
        return print_json_waited(doc, waited.as_ref());
    }
    println!("revoked {} — version {}", target_text(r.target.as_ref()), resp.version);
    println!("  by {} at {}, reason: {}", r.actor, utc(r.created_at), r.reason);
    println!(
        "  in force until {} ({}); then no link it matches can still be valid",
        utc(r.expires_at),
        relative(r.expires_at, now)
    );
    print_waited(waited.as_ref(), resp.version, "revocation", "emergency revoke")
}

// ------------------------------------------------------------------- purge

/// Arguments of `stile purge`: exactly one target.
#[derive(Debug, clap::Args)]
#[command(group(ArgGroup::new("target").required(true).args(["prefix", "path", "asset"])))]
pub(crate) struct PurgeArgs {
    /// Every cached object under this canonical path prefix (ending in /).
    #[arg(long, value_name = "PREFIX")]
    prefix: Option<String>,
    /// The cached object at exactly this canonical path (every query variant of it).
    #[arg(long, value_name = "PATH")]
    path: Option<String>,
    /// Every cached object under an asset's path (`stile assets get ID`).
    #[arg(long, value_name = "ID")]
    asset: Option<String>,
    /// Why (up to 200 characters); recorded in the change log and the audit log.
    #[arg(long, default_value = "")]
    reason: String,
    /// Return only once every expected edge (connected, or seen within the
    /// control plane's `sync.seen_window_secs`) has applied the purge; else
    /// name the edges that did not by --deadline (exit 4; exit 5 when no edge did).
    #[arg(long)]
    wait: bool,
    /// With --wait: the longest wait, e.g. 2s, 500ms (default: the control
    /// plane's `sync.revoke_wait_default_ms`).
    #[arg(long, value_name = "DURATION", requires = "wait")]
    deadline: Option<String>,
    #[command(flatten)]
    expect: ExpectArgs,
}

/// A `--prefix` or `--path` as the edges store it: canonical, and a prefix ends
/// with `/` while a path does not. The control plane checks the same.
fn purge_path(flag: &str, raw: &str, prefix: bool) -> Result<String, Failure> {
    let canonical = stile_token::canonicalize_path(raw.as_bytes())
        .map_err(|e| Failure::usage(format!("--{flag} {raw:?}: {e}")).hint("give a canonical path starting with /"))?;
    if canonical != raw {
        return Err(Failure::usage(format!("--{flag} {raw:?} is not canonical"))
            .hint(format!("the edges cache it as {canonical:?}")));
    }
    match (prefix, raw.ends_with('/')) {
        (true, false) => {
            Err(Failure::usage(format!("--prefix {raw:?} must end with / (it matches whole path segments)"))
                .hint(format!("one object: --path {raw}")))
        }
        (false, true) => {
            Err(Failure::usage(format!("--path {raw:?} ends with /")).hint(format!("a tree: --prefix {raw}")))
        }
        _ => Ok(raw.to_owned()),
    }
}

pub(crate) async fn purge(settings: &Settings, a: PurgeArgs) -> Result<(), Failure> {
    use pb::purge_request::Target as T;
    if !a.wait && a.expect.request().is_some() {
        return Err(Failure::usage("--min-edges and --expect-edge apply to --wait"));
    }
    let target = match (a.prefix, a.path, a.asset) {
        (Some(p), None, None) => T::Prefix(purge_path("prefix", &p, true)?),
        (None, Some(p), None) => T::Path(purge_path("path", &p, false)?),
        (None, None, Some(id)) => T::AssetId(id),
        _ => return Err(Failure::usage("give exactly one of --prefix, --path, --asset")),
    };
    let wait_timeout_ms = wait_timeout(a.deadline.as_deref())?;
    let client = Client::connect(settings, "operator").await?;
    let req = pb::PurgeRequest {
        target: Some(target),
        reason: a.reason,
        wait: a.wait,
        wait_timeout_ms,
        expect: a.expect.request(),
    };
    let resp = PurgeServiceClient::new(client.channel.clone())
        .purge(client.req(req))
        .await
        .map_err(|s| client.fail(&s))?
        .into_inner();
    let p = resp.purge.clone().unwrap_or_default();
    let waited = a.wait.then(|| Waited::of(resp.confirmation.clone(), resp.waited_ms, &resp.lagging));
    if settings.json() {
        return print_json_waited(json!({ "version": resp.version, "purge": purge_json(&p) }), waited.as_ref());
    }
    println!("purged {} — version {}", purge_target_text(&p), resp.version);
    let reason = if p.reason.is_empty() { String::new() } else { format!(", reason: {}", p.reason) };
    println!("  by {} at {}{reason}; links stay valid (nothing revoked)", p.actor, utc(p.created_at));
    print_waited(waited.as_ref(), resp.version, "purge", "cache invalidation")
}

/// What a `--wait` answered.
struct Waited {
    confirmation: pb::Confirmation,
    waited_ms: u32,
    lagging: Vec<String>,
}

impl Waited {
    fn of(confirmation: Option<pb::Confirmation>, waited_ms: u32, lagging: &[String]) -> Waited {
        Waited { confirmation: confirmation.unwrap_or_default(), waited_ms, lagging: lagging.to_vec() }
    }
}

/// `--deadline` in milliseconds; 0 (the control plane's default) without one.
fn wait_timeout(deadline: Option<&str>) -> Result<u32, Failure> {
    deadline.map_or(Ok(0), deadline_ms)
}

/// Prints `doc` with the wait's fields, and exits as the confirmation says.
fn print_json_waited(mut doc: serde_json::Value, waited: Option<&Waited>) -> Result<(), Failure> {
    let Some(w) = waited else {
        print_json(&doc);
        return Ok(());
    };
    doc["waited_ms"] = w.waited_ms.into();
    doc["lagging"] = json!(w.lagging);
    doc["confirmation"] = confirmation_json(&w.confirmation);
    print_json(&doc);
    confirmation_outcome(&w.confirmation)
}

/// The rollout lines of a durable change (`what`, at `version`): how to follow
/// it, or the wait's summary and the edges that did not confirm, and the exit.
fn print_waited(waited: Option<&Waited>, version: u64, what: &str, runbook: &str) -> Result<(), Failure> {
    let Some(w) = waited else {
        println!("  rollout to edges: stile revocations status {version}");
        return Ok(());
    };
    println!("  {} after {} ms", w.confirmation.summary, w.waited_ms);
    print_confirmation_edges(&w.confirmation);
    confirmation_outcome(&w.confirmation).map_err(|f| {
        f.hint(format!(
            "the {what} is durable and reaches edges as they connect; follow with `stile revocations status {version}` (docs/operations.md, {runbook})"
        ))
    })
}

fn purge_target_text(p: &pb::Purge) -> String {
    use pb::purge_target::Target as T;
    let what = match p.target.as_ref().and_then(|t| t.target.as_ref()) {
        Some(T::Prefix(prefix)) => format!("prefix {prefix}"),
        Some(T::Path(path)) => format!("path {path}"),
        None => "?".into(),
    };
    if p.asset_id.is_empty() { what } else { format!("asset {} ({what})", p.asset_id) }
}

fn purge_json(p: &pb::Purge) -> serde_json::Value {
    use pb::purge_target::Target as T;
    let (kind, path) = match p.target.as_ref().and_then(|t| t.target.as_ref()) {
        Some(T::Prefix(prefix)) => ("prefix", prefix.as_str()),
        Some(T::Path(path)) => ("path", path.as_str()),
        None => ("", ""),
    };
    json!({
        "version": p.version, "kind": kind, "path": path, "asset_id": p.asset_id, "reason": p.reason,
        "actor": p.actor, "created_at": p.created_at, "retained_until": p.expires_at,
    })
}

/// Exit status of a confirmation: 0 confirmed, 4 partial, 5 confirmed by no edge.
fn confirmation_outcome(c: &pb::Confirmation) -> Result<(), Failure> {
    match c.verdict() {
        pb::ConfirmationVerdict::Confirmed => Ok(()),
        pb::ConfirmationVerdict::None => Err(Failure::unconfirmed()),
        _ => Err(Failure::negative()),
    }
}

/// The expected edges that did not confirm, one line each.
fn print_confirmation_edges(c: &pb::Confirmation) {
    let now_ms = now().saturating_mul(1000);
    for e in c.edges.iter().filter(|e| e.expected && !e.applied) {
        let state = if e.connected {
            "connected".to_owned()
        } else if e.last_seen_ms == 0 {
            "never seen".to_owned()
        } else {
            format!("disconnected, last seen {} s ago", now_ms.saturating_sub(e.last_seen_ms) / 1000)
        };
        let err = if e.error.is_empty() { String::new() } else { format!("; last error: {}", e.error) };
        println!("    not confirmed: {} ({state}, applied {}){err}", e.edge_id, e.applied_version);
    }
}

fn confirmation_json(c: &pb::Confirmation) -> serde_json::Value {
    json!({
        "verdict": short(c.verdict().as_str_name(), "CONFIRMATION_VERDICT_"),
        "version": c.version,
        "confirmed": c.confirmed,
        "expected": c.expected,
        "min_edges": c.min_edges,
        "unmatched": c.unmatched,
        "summary": c.summary,
        "seen_window_secs": c.seen_window_secs,
        "edges": c.edges.iter().map(edge_ack_json).collect::<Vec<_>>(),
    })
}

/// The targets of a `--batch` file, one per line.
fn read_targets(path: &std::path::Path, before: u64) -> Result<Vec<pb::RevocationTarget>, Failure> {
    use pb::revocation_target::Target as T;
    let mut out = Vec::new();
    for (n, line) in super::batch_lines(path)? {
        let line = line.as_str();
        let prefix = |prefix: &str, purge| {
            T::PathPrefix(pb::PathPrefixTarget { prefix: prefix.into(), issued_before: before, purge })
        };
        let target = if let Some(s) = line.strip_prefix("subject:") {
            T::Subject(pb::SubjectTarget { subject: s.into(), issued_before: before })
        } else if let Some(p) = line.strip_prefix("prefix:") {
            prefix(p, false)
        } else if let Some(p) = line.strip_prefix("purge:") {
            prefix(p, true)
        } else if stile_token::TokenId::from_hex(line).is_some() {
            T::TokenId(line.to_ascii_lowercase())
        } else {
            return Err(Failure::usage(format!(
                "{} line {}: expected a token id (16 hex digits), subject:ID, prefix:/path/ or purge:/path/",
                path.display(),
                n
            )));
        };
        out.push(pb::RevocationTarget { target: Some(target) });
    }
    if out.is_empty() {
        return Err(Failure::usage(format!("--batch {}: no targets", path.display())));
    }
    Ok(out)
}

/// `stile revoke --batch FILE`: one RevokeBatch call.
async fn revoke_batch(settings: &Settings, a: RevokeArgs, targets: Vec<pb::RevocationTarget>) -> Result<(), Failure> {
    let wait_timeout_ms = wait_timeout(a.deadline.as_deref())?;
    let client = Client::connect(settings, "operator").await?;
    let req =
        pb::RevokeBatchRequest { targets, reason: a.reason, wait: a.wait, wait_timeout_ms, expect: a.expect.request() };
    let resp = RevocationServiceClient::new(client.channel.clone())
        .max_encoding_message_size(16 << 20)
        .revoke_batch(client.req(req))
        .await
        .map_err(|s| client.fail(&s))?
        .into_inner();
    let waited = a.wait.then(|| Waited::of(resp.confirmation.clone(), resp.waited_ms, &resp.lagging));
    if settings.json() {
        let doc = json!({
            "count": resp.count, "first_version": resp.first_version, "last_version": resp.last_version,
        });
        return print_json_waited(doc, waited.as_ref());
    }
    println!("revoked {} targets — versions {} to {}", resp.count, resp.first_version, resp.last_version);
    print_waited(waited.as_ref(), resp.last_version, "batch", "emergency revoke")
}

fn deadline_ms(d: &str) -> Result<u32, Failure> {
    let t = d.trim();
    let ms = if let Some(ms) = t.strip_suffix("ms") {
        ms.parse::<u64>().map_err(|_| Failure::usage(format!("--deadline {d:?}: expected e.g. 2s or 500ms")))?
    } else {
        let secs = parse_duration(t).map_err(|e| Failure::usage(format!("--deadline: {e}")))?;
        u64::try_from(secs).map_err(|_| Failure::usage("--deadline must not be negative"))? * 1000
    };
    if ms == 0 {
        return Err(Failure::usage("--deadline must be positive"));
    }
    Ok(u32::try_from(ms).unwrap_or(u32::MAX))
}

fn edge_ack_json(e: &pb::EdgeAck) -> serde_json::Value {
    json!({
        "edge_id": e.edge_id, "applied_version": e.applied_version, "applied": e.applied, "error": e.error,
        "connected": e.connected, "last_seen_ms": e.last_seen_ms, "expected": e.expected,
    })
}

// ------------------------------------------------------------- revocations

/// `stile revocations ...`
#[derive(Debug, Subcommand)]
pub(crate) enum RevocationsCmd {
    /// List the revocations in force, oldest first.
    Ls,
    /// Show where the change log stands and which edges applied VERSION (default: the newest).
    Status {
        /// A change log version, as `stile revoke` printed it.
        #[arg(value_name = "VERSION")]
        log_version: Option<u64>,
    },
}

pub(crate) async fn revocations(settings: &Settings, c: RevocationsCmd) -> Result<(), Failure> {
    let client = Client::connect(settings, "operator").await?;
    let mut rpc = RevocationServiceClient::new(client.channel.clone());
    match c {
        RevocationsCmd::Ls => {
            let all = list_revocations(&client).await?;
            if settings.json() {
                print_json(&json!({ "revocations": all.iter().map(revocation_json).collect::<Vec<_>>() }));
                return Ok(());
            }
            if all.is_empty() {
                println!("no revocations in force");
                return Ok(());
            }
            let mut t = Table::new(&["VERSION", "TARGET", "ISSUED BEFORE", "BY", "AT", "UNTIL", "REASON"]);
            for r in &all {
                t.row(vec![
                    r.version.to_string(),
                    target_text(r.target.as_ref()),
                    issued_before(r.target.as_ref()).map_or_else(|| "-".into(), utc),
                    r.actor.clone(),
                    utc(r.created_at),
                    utc(r.expires_at),
                    r.reason.clone(),
                ]);
            }
            print!("{}", t.render());
        }
        RevocationsCmd::Status { log_version } => {
            let req = pb::RevocationStatusRequest { version: log_version.unwrap_or(0) };
            let s = rpc.status(client.req(req)).await.map_err(|s| client.fail(&s))?.into_inner();
            if settings.json() {
                print_json(&json!({
                    "current_version": s.current_version, "version": s.version, "committed": s.committed,
                    "edges": s.edges.iter().map(edge_ack_json).collect::<Vec<_>>(),
                }));
                return Ok(());
            }
            println!(
                "version {} is {} (current version {})",
                s.version,
                if s.committed { "committed" } else { "NOT committed" },
                s.current_version
            );
            if s.edges.is_empty() {
                println!("no edges connected to this control plane");
            } else {
                let applied = s.edges.iter().filter(|e| e.applied).count();
                println!("applied by {applied} of {} connected edges", s.edges.len());
                let mut t = Table::new(&["EDGE", "APPLIED VERSION", "APPLIED", "ERROR"]);
                for e in &s.edges {
                    let yes = if e.applied { "yes" } else { "NO" };
                    t.row(vec![e.edge_id.clone(), e.applied_version.to_string(), yes.into(), e.error.clone()]);
                }
                print!("{}", t.render());
            }
        }
    }
    Ok(())
}

/// Every revocation in force, following the paging cursor.
pub(crate) async fn list_revocations(client: &Client) -> Result<Vec<pb::Revocation>, Failure> {
    let mut rpc = RevocationServiceClient::new(client.channel.clone());
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let req = pb::ListRevocationsRequest { after_version: after, limit: 1000 };
        let page = rpc.list(client.req(req)).await.map_err(|s| client.fail(&s))?.into_inner().revocations;
        let Some(last) = page.last() else { break };
        after = last.version;
        let full = page.len() == 1000;
        all.extend(page);
        if !full {
            break;
        }
    }
    Ok(all)
}

pub(crate) fn target_text(t: Option<&pb::RevocationTarget>) -> String {
    use pb::revocation_target::Target as T;
    match t.and_then(|t| t.target.as_ref()) {
        Some(T::TokenId(id)) => format!("token {id}"),
        Some(T::Subject(s)) => format!("subject {}", s.subject),
        Some(T::PathPrefix(p)) => format!("prefix {}{}", p.prefix, if p.purge { " (purge)" } else { "" }),
        Some(T::KeyId(k)) => format!("key {k}"),
        None => "?".into(),
    }
}

fn issued_before(t: Option<&pb::RevocationTarget>) -> Option<u64> {
    use pb::revocation_target::Target as T;
    match t.and_then(|t| t.target.as_ref()) {
        Some(T::Subject(s)) => Some(s.issued_before),
        Some(T::PathPrefix(p)) => Some(p.issued_before),
        _ => None,
    }
}

pub(crate) fn revocation_json(r: &pb::Revocation) -> serde_json::Value {
    use pb::revocation_target::Target as T;
    let target = match r.target.as_ref().and_then(|t| t.target.as_ref()) {
        Some(T::TokenId(id)) => json!({ "kind": "token_id", "token_id": id }),
        Some(T::Subject(s)) => json!({ "kind": "subject", "subject": s.subject, "issued_before": s.issued_before }),
        Some(T::PathPrefix(p)) => {
            json!({ "kind": "prefix", "prefix": p.prefix, "issued_before": p.issued_before, "purge": p.purge })
        }
        Some(T::KeyId(k)) => json!({ "kind": "key", "key_id": k }),
        None => serde_json::Value::Null,
    };
    json!({
        "version": r.version, "target": target, "reason": r.reason, "actor": r.actor,
        "created_at": r.created_at, "expires_at": r.expires_at,
    })
}

// -------------------------------------------------------------------- keys

/// `stile keys ...`
#[derive(Debug, Subcommand)]
pub(crate) enum KeysCmd {
    /// Create a new signing key and make it the minting key of its algorithm (the old one keeps verifying).
    Rotate {
        /// Why, for the audit log.
        #[arg(long, default_value = "")]
        reason: String,
        /// The new key's algorithm: `hmac-sha256` (edges hold the secret) or
        /// `ed25519` (edges hold only the public key and cannot mint). Policies
        /// choose which algorithm mints (`policies.<name>.algorithm`).
        #[arg(long, default_value = "hmac-sha256", value_parser = ["hmac-sha256", "ed25519"])]
        algorithm: String,
        /// With either flag, the activation also waits (up to the control
        /// plane's `sync.key_activation_timeout_secs`) for these edges, and
        /// the command exits 4 (5: no edge) when they did not all hold the key.
        #[command(flatten)]
        expect: ExpectArgs,
    },
    /// List signing keys (ids, states, dates; never secrets).
    Ls {
        /// Include retired keys.
        #[arg(long)]
        all: bool,
    },
    /// Retire a key: it stops verifying and every link it signed is revoked.
    Retire {
        /// Key id.
        key_id: u32,
        /// Why (1..200 characters).
        #[arg(long, required = true)]
        reason: String,
    },
    /// Add another vendor's signing key, pushed to every edge (docs/migration.md).
    AddForeign(foreign_keys::AddArgs),
    /// Remove a foreign key; edges forget it.
    RmForeign(foreign_keys::RmArgs),
    /// List foreign keys (format, name, when and by whom added; never the key).
    LsForeign,
}

pub(crate) async fn keys(settings: &Settings, c: KeysCmd) -> Result<(), Failure> {
    let client = Client::connect(settings, "operator").await?;
    let mut rpc = KeyServiceClient::new(client.channel.clone());
    let now = now();
    match c {
        KeysCmd::Rotate { reason, algorithm, expect } => {
            let asked = expect.request();
            let strict = asked.is_some();
            let algorithm =
                if algorithm == "ed25519" { pb::KeyAlgorithm::Ed25519 } else { pb::KeyAlgorithm::HmacSha256 };
            let r = rpc
                .rotate(client.req(pb::RotateKeyRequest { reason, expect: asked, algorithm: algorithm.into() }))
                .await
                .map_err(|s| client.fail(&s))?;
            let r = r.into_inner();
            let k = r.key.unwrap_or_default();
            let confirmation = r.confirmation.unwrap_or_default();
            if settings.json() {
                print_json(&json!({
                    "key": key_json(&k),
                    "version": r.version,
                    "pending_version": r.pending_version,
                    "confirmation": confirmation_json(&confirmation),
                }));
            } else {
                println!(
                    "{} key {} is now {} (version {}); earlier keys keep verifying their links",
                    key_algorithm(k.algorithm),
                    k.key_id,
                    key_state(k.state),
                    r.version
                );
                println!("  the key (version {}): {}", r.pending_version, confirmation.summary);
                print_confirmation_edges(&confirmation);
            }
            if strict {
                return confirmation_outcome(&confirmation).map_err(|f| {
                    f.hint("the key is active; edges without it refuse its links until they sync (`stile edges ls`)")
                });
            }
        }
        KeysCmd::Ls { all } => {
            let keys = list_keys(&client, all).await?;
            if settings.json() {
                print_json(&json!({ "keys": keys.iter().map(key_json).collect::<Vec<_>>() }));
                return Ok(());
            }
            let mut t = Table::new(&["ID", "ALGORITHM", "STATE", "CREATED", "ACTIVATED", "RETIRED"]);
            for k in &keys {
                t.row(vec![
                    k.key_id.to_string(),
                    key_algorithm(k.algorithm),
                    key_state(k.state),
                    when(k.created_at, now),
                    when(k.activated_at, now),
                    when(k.retired_at, now),
                ]);
            }
            print!("{}", t.render());
        }
        KeysCmd::Retire { key_id, reason } => {
            let r = rpc
                .retire(client.req(pb::RetireKeyRequest { key_id, reason }))
                .await
                .map_err(|s| client.fail(&s))?
                .into_inner();
            if settings.json() {
                print_json(&json!({
                    "key": key_json(&r.key.unwrap_or_default()),
                    "revocation": r.revocation.as_ref().map(revocation_json),
                    "version": r.version,
                }));
            } else {
                println!("key {key_id} retired (version {}); every link it signed is revoked", r.version);
            }
        }
        KeysCmd::AddForeign(a) => foreign_keys::add(settings, &client, a).await?,
        KeysCmd::RmForeign(a) => foreign_keys::rm(settings, &client, a).await?,
        KeysCmd::LsForeign => foreign_keys::ls(settings, &client, now).await?,
    }
    Ok(())
}

pub(crate) async fn list_keys(client: &Client, include_retired: bool) -> Result<Vec<pb::KeyInfo>, Failure> {
    let req = pb::ListKeysRequest { include_retired };
    let r = KeyServiceClient::new(client.channel.clone()).list(client.req(req)).await.map_err(|s| client.fail(&s))?;
    Ok(r.into_inner().keys)
}

pub(crate) fn key_state(s: i32) -> String {
    pb::KeyState::try_from(s).map_or_else(|_| format!("state {s}"), |s| short(s.as_str_name(), "KEY_STATE_"))
}

/// A key's algorithm as configuration and `--algorithm` name it (unset: `hmac-sha256`).
pub(crate) fn key_algorithm(a: i32) -> String {
    match pb::KeyAlgorithm::try_from(a) {
        Ok(pb::KeyAlgorithm::Unspecified | pb::KeyAlgorithm::HmacSha256) => "hmac-sha256".into(),
        Ok(pb::KeyAlgorithm::Ed25519) => "ed25519".into(),
        Err(_) => format!("algorithm {a}"),
    }
}

fn key_json(k: &pb::KeyInfo) -> serde_json::Value {
    json!({
        "key_id": k.key_id, "algorithm": key_algorithm(k.algorithm), "state": key_state(k.state), "created_at": k.created_at,
        "activated_at": k.activated_at, "retired_at": k.retired_at,
    })
}

fn when(secs: u64, now: u64) -> String {
    if secs == 0 { "-".into() } else { format!("{} ({})", utc(secs), relative(secs, now)) }
}

// ------------------------------------------------------------------ assets

/// `stile assets ...`
#[derive(Debug, Subcommand)]
pub(crate) enum AssetsCmd {
    /// Create an asset (in DRAFT) or update its entry manifest.
    Put {
        /// Asset id: 1..64 characters of [a-z0-9._-].
        id: String,
        /// Path prefix on the edge, ending in / (immutable once created).
        #[arg(long)]
        path: String,
        /// Entry manifest relative to the path, e.g. master.m3u8.
        #[arg(long, default_value = "")]
        entry: String,
    },
    /// Move an asset to a new state: draft, ready, published, archived.
    State {
        /// Asset id.
        id: String,
        /// Target state.
        #[arg(value_parser = ["draft", "ready", "published", "archived"])]
        state: String,
        /// Apply only if the asset is at this revision.
        #[arg(long)]
        expected_revision: Option<u64>,
    },
    /// Show one asset.
    Get {
        /// Asset id.
        id: String,
    },
    /// List assets.
    Ls {
        /// Only assets in this state.
        #[arg(long, value_parser = ["draft", "ready", "published", "archived"])]
        state: Option<String>,
    },
}

fn asset_state_of(s: &str) -> pb::AssetState {
    match s {
        "draft" => pb::AssetState::Draft,
        "ready" => pb::AssetState::Ready,
        "published" => pb::AssetState::Published,
        "archived" => pb::AssetState::Archived,
        _ => pb::AssetState::Unspecified,
    }
}

pub(crate) fn asset_state(s: i32) -> String {
    pb::AssetState::try_from(s).map_or_else(|_| format!("state {s}"), |s| short(s.as_str_name(), "ASSET_STATE_"))
}

pub(crate) async fn assets(settings: &Settings, c: AssetsCmd) -> Result<(), Failure> {
    let client = Client::connect(settings, "operator").await?;
    let mut rpc = AssetServiceClient::new(client.channel.clone());
    let now = now();
    let one = |a: Option<pb::Asset>, note: &str| -> Result<(), Failure> {
        let a = a.ok_or_else(|| Failure::runtime("the control plane returned no asset"))?;
        if settings.json() {
            print_json(&asset_json(&a));
        } else {
            println!(
                "asset {} {note}: {} {}{} (revision {}, by {} {})",
                a.id,
                asset_state(a.state),
                a.path,
                a.entry,
                a.revision,
                a.updated_by,
                relative(a.updated_at, now)
            );
        }
        Ok(())
    };
    match c {
        AssetsCmd::Put { id, path, entry } => {
            let r = rpc.put(client.req(pb::PutAssetRequest { id, path, entry })).await.map_err(|s| client.fail(&s))?;
            let r = r.into_inner();
            one(r.asset, if r.created { "created" } else { "updated" })?;
        }
        AssetsCmd::State { id, state, expected_revision } => {
            let req = pb::SetAssetStateRequest {
                id,
                state: asset_state_of(&state).into(),
                expected_revision: expected_revision.unwrap_or(0),
            };
            let r = rpc.set_state(client.req(req)).await.map_err(|s| client.fail(&s))?;
            one(r.into_inner().asset, "is now")?;
        }
        AssetsCmd::Get { id } => {
            let r = rpc.get(client.req(pb::GetAssetRequest { id })).await.map_err(|s| client.fail(&s))?;
            one(r.into_inner().asset, "is")?;
        }
        AssetsCmd::Ls { state } => {
            let filter = state.as_deref().map_or(pb::AssetState::Unspecified, asset_state_of);
            let mut all = Vec::new();
            let mut after = String::new();
            loop {
                let req = pb::ListAssetsRequest { state: filter.into(), after_id: after.clone(), limit: 1000 };
                let page = rpc.list(client.req(req)).await.map_err(|s| client.fail(&s))?.into_inner().assets;
                let full = page.len() == 1000;
                if let Some(last) = page.last() {
                    after = last.id.clone();
                }
                all.extend(page);
                if !full {
                    break;
                }
            }
            if settings.json() {
                print_json(&json!({ "assets": all.iter().map(asset_json).collect::<Vec<_>>() }));
                return Ok(());
            }
            if all.is_empty() {
                println!("no assets{}", state.map(|s| format!(" in state {s}")).unwrap_or_default());
                return Ok(());
            }
            let mut t = Table::new(&["ID", "STATE", "PATH", "ENTRY", "REV", "UPDATED", "BY"]);
            for a in &all {
                t.row(vec![
                    a.id.clone(),
                    asset_state(a.state),
                    a.path.clone(),
                    a.entry.clone(),
                    a.revision.to_string(),
                    relative(a.updated_at, now),
                    a.updated_by.clone(),
                ]);
            }
            print!("{}", t.render());
        }
    }
    Ok(())
}

fn asset_json(a: &pb::Asset) -> serde_json::Value {
    json!({
        "id": a.id, "path": a.path, "entry": a.entry, "state": asset_state(a.state), "revision": a.revision,
        "created_at": a.created_at, "updated_at": a.updated_at, "updated_by": a.updated_by,
    })
}

// ------------------------------------------------------------------- audit

/// `stile audit ...`
#[derive(Debug, Subcommand)]
pub(crate) enum AuditCmd {
    /// Show the newest audit events (oldest of them first), optionally following new ones.
    Tail(AuditTailArgs),
}

/// Arguments of `stile audit tail`.
#[derive(Debug, clap::Args)]
pub(crate) struct AuditTailArgs {
    /// How many events.
    #[arg(long, short = 'n', default_value_t = 20)]
    limit: u32,
    /// Only this actor (API key name).
    #[arg(long)]
    actor: Option<String>,
    /// Only this action.
    #[arg(long, value_parser = AUDIT_ACTIONS)]
    action: Option<String>,
    /// Only this share channel.
    #[arg(long)]
    channel: Option<String>,
    /// Only events at or after this time (RFC 3339, Unix seconds, or a duration ago: 1h, 30m).
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    since: Option<String>,
    /// Keep printing new events until Ctrl-C.
    #[arg(long, short)]
    follow: bool,
}

const AUDIT_ACTIONS: [&str; 16] = [
    "mint",
    "mint_batch",
    "revoke",
    "key_rotate",
    "key_retire",
    "asset_put",
    "asset_state",
    "api_key_create",
    "api_key_delete",
    "auth_denied",
    "sync_refused",
    "sync_replaced",
    "purge",
    "revoke_batch",
    "foreign_key_add",
    "foreign_key_remove",
];

fn audit_action(s: i32) -> String {
    pb::AuditAction::try_from(s)
        .map_or_else(|_| format!("action {s}"), |a| short(a.as_str_name(), "AUDIT_ACTION_").to_ascii_lowercase())
}

pub(crate) async fn audit(settings: &Settings, c: AuditCmd) -> Result<(), Failure> {
    let AuditCmd::Tail(a) = c;
    let now = now();
    let since = match &a.since {
        None => 0,
        Some(s) => match parse_duration(s) {
            Ok(d) if !s.starts_with('+') => now.saturating_sub(d.unsigned_abs()),
            _ => parse_time(s, now).map_err(|e| Failure::usage(format!("--since: {e}")))?,
        },
    };
    let action = match &a.action {
        Some(name) => pb::AuditAction::from_str_name(&format!("AUDIT_ACTION_{}", name.to_ascii_uppercase()))
            .ok_or_else(|| Failure::usage(format!("--action {name:?} is unknown")))?,
        None => pb::AuditAction::Unspecified,
    };
    let client = Client::connect(settings, "operator").await?;
    let mut rpc = AuditServiceClient::new(client.channel.clone());
    let request = |limit: u32| pb::ListAuditRequest {
        actor: a.actor.clone().unwrap_or_default(),
        action: action.into(),
        since,
        until: 0,
        limit,
        before_seq: 0,
        channel: a.channel.clone().unwrap_or_default(),
    };
    let mut events = rpc.list(client.req(request(a.limit))).await.map_err(|s| client.fail(&s))?.into_inner().events;
    events.reverse();
    let mut last = events.last().map_or(0, |e| e.seq);
    if settings.json() && !a.follow {
        print_json(&json!({ "events": events.iter().map(audit_json).collect::<Vec<_>>() }));
        return Ok(());
    }
    let mut t = Table::new(&["SEQ", "AT", "ACTOR", "ACTION", "TARGET", "CHANNEL", "COUNT", "DETAIL"]);
    let row = |e: &pb::AuditEvent| {
        vec![
            e.seq.to_string(),
            utc(e.at),
            e.actor.clone(),
            audit_action(e.action),
            e.target.clone(),
            e.channel.clone(),
            e.count.to_string(),
            e.detail.clone(),
        ]
    };
    if settings.json() {
        // --follow --json: one JSON object per line (JSON Lines), so consumers can stream.
        for e in &events {
            println!("{}", audit_json(e));
        }
    } else if events.is_empty() && !a.follow {
        println!("no audit events match");
    } else {
        for e in &events {
            t.row(row(e));
        }
        print!("{}", t.render());
    }
    if !a.follow {
        return Ok(());
    }
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let new = rpc.list(client.req(request(1000))).await.map_err(|s| client.fail(&s))?.into_inner().events;
        let seen = last;
        for e in new.iter().rev().filter(|e| e.seq > seen) {
            if settings.json() {
                println!("{}", audit_json(e));
            } else {
                println!("{}", row(e).join("  "));
            }
            last = e.seq;
        }
    }
}

fn audit_json(e: &pb::AuditEvent) -> serde_json::Value {
    json!({
        "seq": e.seq, "at": e.at, "time": rfc3339(e.at), "actor": e.actor, "action": audit_action(e.action),
        "target": e.target, "channel": e.channel, "count": e.count, "detail": e.detail,
    })
}

// ---------------------------------------------------------------- api keys

/// `stile api-keys ...` (admin)
#[derive(Debug, Subcommand)]
pub(crate) enum ApiKeysCmd {
    /// Create an API key; it is printed once.
    Create {
        /// Name: 1..64 characters of [a-z0-9._-]; the actor in the audit log.
        name: String,
        /// Role.
        #[arg(long, value_parser = ["minter", "operator", "edge", "admin"])]
        role: String,
        /// Role edge (required there): an edge id the key may sync as, or a
        /// prefix ending in `*` (`edge-eu-*`; `*`: any id). Repeatable.
        #[arg(long = "edge-id", value_name = "ID")]
        edge_ids: Vec<String>,
    },
    /// List API keys (names, roles, dates; never secrets).
    Ls,
    /// Delete a stored API key; it stops working at once.
    Delete {
        /// Name.
        name: String,
    },
}

fn role(r: i32) -> String {
    pb::Role::try_from(r).map_or_else(|_| format!("role {r}"), |r| short(r.as_str_name(), "ROLE_").to_ascii_lowercase())
}

pub(crate) async fn api_keys(settings: &Settings, c: ApiKeysCmd) -> Result<(), Failure> {
    let client = Client::connect(settings, "admin").await?;
    let mut rpc = ApiKeyServiceClient::new(client.channel.clone());
    match c {
        ApiKeysCmd::Create { name, role: r, edge_ids } => {
            let role_value = pb::Role::from_str_name(&format!("ROLE_{}", r.to_ascii_uppercase())).unwrap_or_default();
            let req = pb::CreateApiKeyRequest { name, role: role_value.into(), edge_ids };
            let resp = rpc.create(client.req(req)).await.map_err(|s| client.fail(&s))?.into_inner();
            let info = resp.info.unwrap_or_default();
            if settings.json() {
                print_json(&json!({ "name": info.name, "role": role(info.role), "key": resp.key }));
            } else {
                println!("created API key {:?} with role {}; it is shown only now:", info.name, role(info.role));
                println!("{}", resp.key);
            }
        }
        ApiKeysCmd::Ls => {
            let keys = rpc.list(client.req(pb::ListApiKeysRequest::default())).await.map_err(|s| client.fail(&s))?;
            let keys = keys.into_inner().keys;
            if settings.json() {
                print_json(&json!({ "keys": keys.iter().map(|k| json!({
                    "name": k.name, "role": role(k.role), "created_at": k.created_at, "created_by": k.created_by,
                    "edge_ids": k.edge_ids,
                })).collect::<Vec<_>>() }));
                return Ok(());
            }
            let mut t = Table::new(&["NAME", "ROLE", "EDGE IDS", "CREATED", "BY"]);
            for k in &keys {
                let ids = if k.edge_ids.is_empty() { "-".to_owned() } else { k.edge_ids.join(",") };
                t.row(vec![k.name.clone(), role(k.role), ids, utc(k.created_at), k.created_by.clone()]);
            }
            print!("{}", t.render());
        }
        ApiKeysCmd::Delete { name } => {
            rpc.delete(client.req(pb::DeleteApiKeyRequest { name: name.clone() }))
                .await
                .map_err(|s| client.fail(&s))?;
            if settings.json() {
                print_json(&json!({ "deleted": name }));
            } else {
                println!("deleted API key {name:?}");
            }
        }
    }
    Ok(())
}

// ------------------------------------------------------------------ config

/// `stile config`: the effective client settings and where each came from.
pub(crate) fn show_config(s: &Settings) -> Result<(), Failure> {
    let key = s.api_key.as_deref().map(mask);
    if s.json() {
        print_json(&json!({
            "server": s.server, "server_source": s.server_source.name(),
            "api_key": key, "api_key_source": s.api_key_source.name(),
            "ca_file": s.ca_file.as_ref().map(|p| p.display().to_string()), "ca_file_source": s.ca_file_source.name(),
            "output": "json", "file": s.file.as_ref().map(|p| p.display().to_string()),
        }));
        return Ok(());
    }
    let mut t = Table::new(&["SETTING", "VALUE", "FROM"]);
    t.row(vec!["server".into(), s.server.clone(), s.server_source.name().into()]);
    t.row(vec!["api_key".into(), key.unwrap_or_else(|| "(none)".into()), s.api_key_source.name().into()]);
    let ca = s.ca_file.as_ref().map_or_else(|| "(none)".into(), |p| p.display().to_string());
    t.row(vec!["ca_file".into(), ca, s.ca_file_source.name().into()]);
    t.row(vec!["output".into(), "table".into(), String::new()]);
    let file = s.file.as_ref().map_or_else(|| "(none)".into(), |p| p.display().to_string());
    t.row(vec!["file".into(), file, String::new()]);
    print!("{}", t.render());
    Ok(())
}

/// `stk_AbCd…` — enough to tell keys apart, never the key.
fn mask(key: &str) -> String {
    let head: String = key.chars().take(8).collect();
    format!("{head}… ({} characters)", key.chars().count())
}
