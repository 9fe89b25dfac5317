//! `stile mint`: one link (printed in every transport form), or thousands
//! (`--count N` / `--batch FILE`) written one per line to `--out FILE` through
//! `LinkService.MintBatch`, with a progress line on stderr when it is a terminal.

use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use serde::Deserialize;
use serde_json::json;
use stile_proto::v1 as pb;
use stile_proto::v1::link_service_client::LinkServiceClient;

use super::output::{relative, utc};
use super::{Client, Failure, now, print_json};
use crate::settings::Settings;

/// Links per MintBatch call: well under the server's limit (10000) and the
/// default 4 MB message size, and small enough for a lively progress line.
const CHUNK: usize = 1000;

/// Arguments of `stile mint`.
#[derive(Debug, clap::Args)]
pub(crate) struct MintArgs {
    /// Id of a PUBLISHED asset (optional with --batch when every line names one).
    asset: Option<String>,
    /// Lifetime, e.g. 3600, 90m, 2h (0: the policy's default).
    #[arg(long, default_value = "0")]
    ttl: String,
    /// Policy template (default: the control plane's default policy).
    #[arg(long)]
    policy: Option<String>,
    /// Viewer id to bind the link to; with --count, `{n}` is replaced by 1..N.
    #[arg(long)]
    subject: Option<String>,
    /// Client IP address to bind the link to.
    #[arg(long)]
    client_ip: Option<String>,
    /// Countries allowed (comma-separated ISO 3166-1 alpha-2 codes).
    #[arg(long, value_delimiter = ',', conflicts_with = "deny_countries")]
    allow_countries: Vec<String>,
    /// Countries denied (comma-separated ISO 3166-1 alpha-2 codes).
    #[arg(long, value_delimiter = ',')]
    deny_countries: Vec<String>,
    /// Share channel, e.g. `email` or `embed:partner-x`.
    #[arg(long)]
    channel: Option<String>,
    /// Edge base URL (default: the control plane's `links.default_base_url`).
    #[arg(long)]
    base_url: Option<String>,
    /// Scope path (default: the asset's whole prefix).
    #[arg(long)]
    scope: Option<String>,
    /// Path the URLs point at (default: the asset's entry manifest).
    #[arg(long)]
    entry: Option<String>,
    /// Not valid before this time (Unix seconds, RFC 3339, +10m).
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    not_before: Option<String>,
    /// Batch: mint N links from these flags.
    #[arg(long, value_name = "N", conflicts_with = "batch")]
    count: Option<usize>,
    /// Batch: mint one link per line of FILE (JSON objects with MintRequest
    /// fields: asset_id, subject, channel, ttl_secs, ...; `-` for stdin).
    #[arg(long, value_name = "FILE")]
    batch: Option<PathBuf>,
    /// Batch output file (default stdout): one URL per line, or one JSON object
    /// per line with --json.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Which URL batch output lists: query, path or cookie (the plain URL).
    #[arg(long, default_value = "query", value_parser = ["query", "path", "cookie"])]
    form: String,
}

/// A line of a `--batch` file.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct BatchLine {
    asset_id: Option<String>,
    scope: String,
    entry: String,
    ttl_secs: u64,
    policy: String,
    subject: String,
    client_ip: String,
    allow_countries: Vec<String>,
    deny_countries: Vec<String>,
    channel: String,
    base_url: String,
    not_before: u64,
}

pub(crate) async fn mint(settings: &Settings, a: MintArgs) -> Result<(), Failure> {
    let now = now();
    let template = template(&a, now)?;
    if a.count.is_none() && a.batch.is_none() {
        if a.out.is_some() {
            return Err(Failure::usage("--out needs --count N or --batch FILE"));
        }
        let client = Client::connect(settings, "minter").await?;
        let resp = LinkServiceClient::new(client.channel.clone())
            .mint(client.req(template))
            .await
            .map_err(|s| client.fail(&s))?;
        let link = resp.into_inner().link.ok_or_else(|| Failure::runtime("the control plane returned no link"))?;
        if settings.json() {
            print_json(&link_json(&link));
        } else {
            print_link(&link, now);
        }
        return Ok(());
    }
    let requests = match (&a.batch, a.count) {
        (Some(path), _) => read_batch(path, &template)?,
        (None, Some(n)) => (1..=n)
            .map(|i| {
                let mut r = template.clone();
                r.subject = r.subject.replace("{n}", &i.to_string());
                r
            })
            .collect(),
        (None, None) => Vec::new(),
    };
    if requests.is_empty() {
        return Err(Failure::usage("nothing to mint: --count is 0 or the batch file has no lines"));
    }
    if let Some(i) = requests.iter().position(|r| r.asset_id.is_empty()) {
        return Err(Failure::usage(format!("link {}: no asset (give ASSET or an asset_id on each line)", i + 1)));
    }
    let client = Client::connect(settings, "minter").await?;
    mint_many(&client, requests, &a, settings.json()).await
}

fn template(a: &MintArgs, now: u64) -> Result<pb::MintRequest, Failure> {
    let ttl = super::output::parse_duration(&a.ttl).map_err(|e| Failure::usage(format!("--ttl: {e}")))?;
    let ttl_secs = u64::try_from(ttl).map_err(|_| Failure::usage("--ttl must not be negative"))?;
    let not_before = match &a.not_before {
        Some(t) => super::output::parse_time(t, now).map_err(|e| Failure::usage(format!("--not-before: {e}")))?,
        None => 0,
    };
    Ok(pb::MintRequest {
        asset_id: a.asset.clone().unwrap_or_default(),
        scope: a.scope.clone().unwrap_or_default(),
        entry: a.entry.clone().unwrap_or_default(),
        ttl_secs,
        policy: a.policy.clone().unwrap_or_default(),
        subject: a.subject.clone().unwrap_or_default(),
        client_ip: a.client_ip.clone().unwrap_or_default(),
        countries: countries(&a.allow_countries, &a.deny_countries),
        channel: a.channel.clone().unwrap_or_default(),
        base_url: a.base_url.clone().unwrap_or_default(),
        not_before,
    })
}

fn countries(allow: &[String], deny: &[String]) -> Option<pb::CountryRule> {
    (!allow.is_empty() || !deny.is_empty()).then(|| pb::CountryRule { allow: allow.to_vec(), deny: deny.to_vec() })
}

fn read_batch(path: &std::path::Path, template: &pb::MintRequest) -> Result<Vec<pb::MintRequest>, Failure> {
    let mut out = Vec::new();
    for (n, line) in super::batch_lines(path)? {
        let l: BatchLine =
            serde_json::from_str(&line).map_err(|e| Failure::usage(format!("{} line {n}: {e}", path.display())))?;
        out.push(pb::MintRequest {
            asset_id: l.asset_id.unwrap_or_else(|| template.asset_id.clone()),
            scope: l.scope,
            entry: l.entry,
            ttl_secs: l.ttl_secs,
            policy: l.policy,
            subject: l.subject,
            client_ip: l.client_ip,
            countries: countries(&l.allow_countries, &l.deny_countries),
            channel: l.channel,
            base_url: l.base_url,
            not_before: l.not_before,
        });
    }
    Ok(out)
}

async fn mint_many(client: &Client, requests: Vec<pb::MintRequest>, a: &MintArgs, json: bool) -> Result<(), Failure> {
    let total = requests.len();
    let sink: Box<dyn Write> = match &a.out {
        Some(p) => Box::new(
            std::fs::File::create(p)
                .map_err(|e| Failure::runtime(format!("cannot create --out {}: {e}", p.display())))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut sink = BufWriter::new(sink);
    let target = a.out.as_ref().map_or_else(|| "stdout".to_owned(), |p| p.display().to_string());
    let tty = std::io::stderr().is_terminal();
    let mut rpc = LinkServiceClient::new(client.channel.clone()).max_decoding_message_size(64 << 20);
    let started = Instant::now();
    let mut done = 0usize;
    let write_err = |e: std::io::Error| Failure::runtime(format!("writing {target}: {e}"));
    for chunk in requests.chunks(CHUNK) {
        let resp =
            rpc.mint_batch(client.req(pb::MintBatchRequest { requests: chunk.to_vec() })).await.map_err(|s| {
                let mut f = client.fail(&s);
                f.message = format!("links {}..{}: {}", done + 1, done + chunk.len(), f.message);
                if done > 0 {
                    f.hint = Some(format!(
                        "the first {done} links were written to {target}; requests[i] counts from link {}",
                        done + 1
                    ));
                }
                f
            })?;
        for link in resp.into_inner().links {
            let line = if json {
                serde_json::to_string(&link_json(&link)).unwrap_or_default()
            } else {
                match a.form.as_str() {
                    "path" => link.path_url,
                    "cookie" => link.cookie.map(|c| c.url).unwrap_or_default(),
                    _ => link.query_url,
                }
            };
            writeln!(sink, "{line}").map_err(write_err)?;
        }
        done += chunk.len();
        if tty {
            let secs = started.elapsed().as_secs_f64();
            eprint!("\rminting: {done}/{total} links ({}%) {secs:.1} s ", done * 100 / total);
        }
    }
    sink.flush().map_err(write_err)?;
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    if tty {
        eprintln!();
    }
    #[allow(clippy::cast_precision_loss)] // reason: a rate for people.
    let rate = done as f64 / secs;
    eprintln!("minted {done} links to {target} in {secs:.1} s ({rate:.0} links/s)");
    Ok(())
}

fn print_link(link: &pb::Link, now: u64) {
    println!("token id    {}", link.token_id);
    println!("key         {}", link.key_id);
    println!("policy      {}", link.policy);
    println!("scope       {}", link.scope);
    println!("issued      {} ({})", utc(link.issued_at), relative(link.issued_at, now));
    println!("expires     {} ({})", utc(link.expires_at), relative(link.expires_at, now));
    println!();
    println!("query       {}", link.query_url);
    println!("path        {}", link.path_url);
    if let Some(c) = &link.cookie {
        println!("cookie      {}", c.url);
        println!("            with cookie {}={}; Path={}; Max-Age={}", c.name, c.value, c.path, c.max_age);
    }
}

/// The JSON form of a link (also one line of batch output with --json).
pub(crate) fn link_json(l: &pb::Link) -> serde_json::Value {
    json!({
        "token": l.token,
        "token_id": l.token_id,
        "key_id": l.key_id,
        "policy": l.policy,
        "scope": l.scope,
        "issued_at": l.issued_at,
        "expires_at": l.expires_at,
        "query_url": l.query_url,
        "path_url": l.path_url,
        "cookie": l.cookie.as_ref().map(|c| json!({
            "url": c.url, "name": c.name, "value": c.value, "path": c.path, "max_age": c.max_age,
        })),
    })
}
