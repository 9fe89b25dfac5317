//! `stile edges ls`: the fleet as an operator reads it at a thousand edges —
//! a summary (connected and departed, lag, round trip, clock skew, agents,
//! NACKs, repeated snapshots), then the worst edges, not every edge. Filters
//! narrow both; `--all` prints every selected edge; `--json` prints every
//! selected edge and the summary.

use std::collections::BTreeMap;

use clap::Subcommand;
use serde_json::json;
use stile_proto::v1 as pb;
use stile_proto::v1::edge_service_client::EdgeServiceClient;

use super::output::{Table, relative};
use super::{Client, Failure, now, print_json};
use crate::settings::Settings;

/// `stile edges ...`
#[derive(Debug, Subcommand)]
pub(crate) enum EdgesCmd {
    /// Summarize the edges connected to this control plane (lag, round trip, clock skew,
    /// agents) and list the worst of them; filters narrow both.
    Ls(LsArgs),
}

/// Arguments of `stile edges ls`.
#[derive(Debug, Default, clap::Args)]
pub(crate) struct LsArgs {
    /// How many of the worst edges (most versions behind first) to list under the summary.
    #[arg(long, value_name = "N", default_value_t = 10)]
    worst: usize,
    /// List every selected edge (id order) instead of the worst N.
    #[arg(long)]
    all: bool,
    /// Only connected edges that have not ACKed the newest version (lag above 0).
    #[arg(long)]
    lagging: bool,
    /// Only edges whose stream ended within sync.seen_window_secs and that are not connected now.
    #[arg(long, conflicts_with = "lagging")]
    disconnected: bool,
    /// Only edges whose id starts with this (name edges by region, `fra-…`, to filter by region).
    #[arg(long, value_name = "PREFIX")]
    id_prefix: Option<String>,
}

/// Which edges a listing covers.
#[derive(Clone, Debug, Default)]
struct Filter {
    lagging: bool,
    disconnected: bool,
    id_prefix: Option<String>,
}

impl Filter {
    fn keeps(&self, e: &pb::EdgeInfo) -> bool {
        let state = if self.disconnected { e.departed } else { !e.departed && (!self.lagging || e.lag > 0) };
        state && self.id_prefix.as_deref().is_none_or(|p| e.edge_id.starts_with(p))
    }

    fn is_narrowed(&self) -> bool {
        self.lagging || self.disconnected || self.id_prefix.is_some()
    }
}

/// Lag buckets (versions behind): label, largest lag in it. The control
/// plane's `stile_control_edges_by_lag` gauge uses the same ones.
const LAG: [(&str, u64); 4] = [("0", 0), ("1-10", 10), ("11-1000", 1000), ("1001+", u64::MAX)];
/// Round-trip buckets, milliseconds (the last heartbeat's).
const RTT: [(&str, u64); 4] = [("<50ms", 49), ("50-149ms", 149), ("150-299ms", 299), ("300ms+", u64::MAX)];
/// |clock skew| buckets, milliseconds; edges allow 5 s of token leeway by default.
const SKEW: [(&str, u64); 4] = [("<100ms", 99), ("100ms-1s", 999), ("1-5s", 4999), ("5s+", u64::MAX)];
/// Distinct agents named in the summary; the rest are counted together.
const AGENTS_SHOWN: usize = 5;

/// Counts over a set of edges.
#[derive(Debug, Default, PartialEq, Eq)]
struct Summary {
    connected: usize,
    departed: usize,
    /// Connected edges per bucket of `LAG`, `RTT`, `SKEW`.
    lag: [usize; 4],
    rtt: [usize; 4],
    skew: [usize; 4],
    /// Connected edges per announced agent (`""`: none announced).
    agents: BTreeMap<String, usize>,
    /// Connected edges that NACKed on their current stream.
    nacking: usize,
    /// Connected edges sent more than one snapshot on their current stream
    /// (NACKs or falling behind by more than sync.max_lag_versions).
    resnapshotted: usize,
}

fn bucket(buckets: &[(&str, u64); 4], v: u64) -> usize {
    buckets.iter().position(|(_, max)| v <= *max).unwrap_or(buckets.len() - 1)
}

fn summarize<'a>(edges: impl IntoIterator<Item = &'a pb::EdgeInfo>) -> Summary {
    let mut s = Summary::default();
    for e in edges {
        if e.departed {
            s.departed += 1;
            continue;
        }
        s.connected += 1;
        s.lag[bucket(&LAG, e.lag)] += 1;
        s.rtt[bucket(&RTT, u64::from(e.rtt_ms))] += 1;
        s.skew[bucket(&SKEW, e.clock_skew_ms.unsigned_abs())] += 1;
        *s.agents.entry(e.agent.clone()).or_default() += 1;
        s.nacking += usize::from(e.nacks > 0);
        s.resnapshotted += usize::from(e.snapshots > 1);
    }
    s
}

impl Summary {
    /// Agents by count (most first), the first `AGENTS_SHOWN`, then how many
    /// edges run the others.
    fn agents(&self) -> (Vec<(&str, usize)>, usize) {
        let mut all: Vec<(&str, usize)> = self.agents.iter().map(|(a, n)| (a.as_str(), *n)).collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let rest = all.iter().skip(AGENTS_SHOWN).map(|(_, n)| n).sum();
        all.truncate(AGENTS_SHOWN);
        (all, rest)
    }

    fn json(&self) -> serde_json::Value {
        let buckets = |names: &[(&str, u64); 4], counts: &[usize; 4]| {
            names
                .iter()
                .zip(counts)
                .map(|((name, _), n)| ((*name).to_owned(), json!(n)))
                .collect::<serde_json::Map<_, _>>()
        };
        json!({
            "connected": self.connected,
            "departed": self.departed,
            "by_lag": buckets(&LAG, &self.lag),
            "by_rtt": buckets(&RTT, &self.rtt),
            "by_clock_skew": buckets(&SKEW, &self.skew),
            "by_agent": self.agents,
            "nacking": self.nacking,
            "resnapshotted": self.resnapshotted,
        })
    }

    fn render(&self) -> String {
        let line = |names: &[(&str, u64); 4], counts: &[usize; 4]| {
            names.iter().zip(counts).map(|((name, _), n)| format!("{name} {n}")).collect::<Vec<_>>().join(" · ")
        };
        let (agents, rest) = self.agents();
        let mut agents: Vec<String> =
            agents.iter().map(|(a, n)| format!("{} {n}", if a.is_empty() { "(none)" } else { a })).collect();
        if rest > 0 {
            agents.push(format!("others {rest}"));
        }
        let mut out =
            format!("edges:       {} connected · {} departed within the seen window\n", self.connected, self.departed);
        if self.connected > 0 {
            out += &format!("lag:         {}\n", line(&LAG, &self.lag));
            out += &format!("round trip:  {}\n", line(&RTT, &self.rtt));
            out += &format!("clock skew:  {}\n", line(&SKEW, &self.skew));
            out += &format!("agents:      {}\n", agents.join(" · "));
            out += &format!(
                "trouble:     {} NACKing · {} sent more than one snapshot\n",
                self.nacking, self.resnapshotted
            );
        }
        out
    }
}

/// Worst first: most versions behind, then NACKs, repeated snapshots,
/// longest round trip; ties by id.
fn worst_first(a: &pb::EdgeInfo, b: &pb::EdgeInfo) -> std::cmp::Ordering {
    (b.lag, b.nacks, b.snapshots, b.rtt_ms, b.last_seen_ms)
        .cmp(&(a.lag, a.nacks, a.snapshots, a.rtt_ms, a.last_seen_ms))
        .then_with(|| a.edge_id.cmp(&b.edge_id))
}

pub(crate) async fn edges(settings: &Settings, c: EdgesCmd) -> Result<(), Failure> {
    let EdgesCmd::Ls(a) = c;
    let filter = Filter { lagging: a.lagging, disconnected: a.disconnected, id_prefix: a.id_prefix.clone() };
    let client = Client::connect(settings, "operator").await?;
    let r = EdgeServiceClient::new(client.channel.clone())
        .list(client.req(pb::ListEdgesRequest { include_departed: true }))
        .await
        .map_err(|s| client.fail(&s))?
        .into_inner();
    let selected: Vec<&pb::EdgeInfo> = r.edges.iter().filter(|e| filter.keeps(e)).collect();
    // The summary counts departed edges too, unless a filter picked connected ones only.
    let summary = summarize(if filter.is_narrowed() { selected.clone() } else { r.edges.iter().collect() });
    if settings.json() {
        print_json(&json!({
            "current_version": r.current_version,
            "summary": summary.json(),
            "edges": selected.iter().map(|e| edge_json(e)).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    print!("{}", render(&r, &selected, &summary, &a, now()));
    Ok(())
}

fn edge_json(e: &pb::EdgeInfo) -> serde_json::Value {
    json!({
        "edge_id": e.edge_id, "applied_version": e.applied_version, "sent_version": e.sent_version, "lag": e.lag,
        "clock_skew_ms": e.clock_skew_ms, "rtt_ms": e.rtt_ms, "connected_at": e.connected_at,
        "last_seen_ms": e.last_seen_ms, "remote_addr": e.remote_addr, "client_cert": e.client_cert,
        "agent": e.agent, "nacks": e.nacks, "last_error": e.last_error, "snapshots": e.snapshots,
        "deltas": e.deltas, "departed": e.departed,
    })
}

/// The text listing: version, summary, then the worst N (or every selected edge).
fn render(r: &pb::ListEdgesResponse, selected: &[&pb::EdgeInfo], summary: &Summary, a: &LsArgs, now: u64) -> String {
    let mut out = format!("change log version {}\n", r.current_version);
    if r.edges.is_empty() {
        out += "no edges connected (edges in state-file mode do not connect)\n";
        return out;
    }
    out += &summary.render();
    if selected.is_empty() {
        out += "no edge matches\n";
        return out;
    }
    let mut rows = selected.to_vec();
    if a.all {
        rows.sort_by(|x, y| x.edge_id.cmp(&y.edge_id));
        out += &format!("\nall {} edges:\n", rows.len());
    } else {
        rows.sort_by(|x, y| worst_first(x, y));
        if rows.len() > a.worst {
            out += &format!(
                "\nworst {} of {} (--worst N for more, --all for every one, --json for scripts):\n",
                a.worst,
                rows.len()
            );
            rows.truncate(a.worst);
        } else {
            out += &format!("\n{} edge{}, worst first:\n", rows.len(), if rows.len() == 1 { "" } else { "s" });
        }
    }
    if rows.is_empty() {
        return out;
    }
    let mut t = Table::new(&["EDGE", "LAG", "APPLIED", "RTT", "SKEW", "NACKS", "CONNECTED", "FROM", "AGENT", "CERT"]);
    let dash = |s: &str| if s.is_empty() { "-".to_owned() } else { s.to_owned() };
    for e in rows {
        let connected = if e.departed {
            format!("no, seen {}", relative(e.last_seen_ms / 1000, now))
        } else {
            relative(e.connected_at, now)
        };
        t.row(vec![
            e.edge_id.clone(),
            e.lag.to_string(),
            e.applied_version.to_string(),
            format!("{} ms", e.rtt_ms),
            format!("{:+} ms", e.clock_skew_ms),
            e.nacks.to_string(),
            connected,
            dash(&e.remote_addr),
            dash(&e.agent),
            dash(&e.client_cert),
        ]);
    }
    out += &t.render();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(id: &str, lag: u64, rtt_ms: u32, skew: i64) -> pb::EdgeInfo {
        pb::EdgeInfo {
            edge_id: id.into(),
            lag,
            applied_version: 100 - lag,
            rtt_ms,
            clock_skew_ms: skew,
            agent: "stile-edge/0.1.0".into(),
            connected_at: 1_000,
            ..Default::default()
        }
    }

    fn fleet() -> pb::ListEdgesResponse {
        let mut edges: Vec<pb::EdgeInfo> = (0..1000)
            .map(|i| edge(&format!("{}-{i:04}", ["fra", "iad"][i % 2]), 0, u32::try_from(i % 4 * 100).unwrap(), 3))
            .collect();
        edges[7].lag = 40;
        edges[8].lag = 2;
        edges[9].lag = 5000;
        edges[10].clock_skew_ms = -6000;
        edges[11].nacks = 1;
        edges[11].snapshots = 2;
        edges[12].agent = "stile-edge/0.0.9".into();
        edges.push(pb::EdgeInfo { departed: true, last_seen_ms: 990_000, ..edge("fra-gone", 3, 0, 0) });
        pb::ListEdgesResponse { edges, current_version: 100 }
    }

    #[test]
    fn the_summary_buckets_connected_edges_and_counts_departed_ones() {
        let r = fleet();
        let s = summarize(&r.edges);
        assert_eq!((s.connected, s.departed), (1000, 1));
        assert_eq!(s.lag, [997, 1, 1, 1]);
        assert_eq!(s.rtt, [250, 250, 250, 250]);
        assert_eq!(s.skew, [999, 0, 0, 1]);
        assert_eq!((s.nacking, s.resnapshotted), (1, 1));
        assert_eq!(s.agents(), (vec![("stile-edge/0.1.0", 999), ("stile-edge/0.0.9", 1)], 0));
        assert_eq!(s.json()["by_lag"]["1001+"], 1);
    }

    #[test]
    fn the_listing_shows_the_worst_n_in_lag_order_not_every_edge() {
        let r = fleet();
        let args = LsArgs { worst: 3, ..LsArgs::default() };
        let selected: Vec<_> = r.edges.iter().filter(|e| Filter::default().keeps(e)).collect();
        let text = render(&r, &selected, &summarize(&r.edges), &args, 1_060);
        assert!(text.contains("edges:       1000 connected · 1 departed within the seen window\n"), "{text}");
        assert!(text.contains("lag:         0 997 · 1-10 1 · 11-1000 1 · 1001+ 1\n"), "{text}");
        assert!(text.contains("clock skew:  <100ms 999 · 100ms-1s 0 · 1-5s 0 · 5s+ 1\n"), "{text}");
        assert!(text.contains("worst 3 of 1000 "), "{text}");
        let rows: Vec<&str> = text.lines().skip_while(|l| !l.starts_with("EDGE")).skip(1).collect();
        let ids: Vec<&str> = rows.iter().map(|l| l.split_whitespace().next().unwrap()).collect();
        assert_eq!(ids, ["iad-0009", "iad-0007", "fra-0008"]);
        assert!(text.lines().count() < 20, "{text}");
    }

    #[test]
    fn filters_select_lagging_departed_or_prefixed_edges() {
        let r = fleet();
        let ids = |f: Filter| r.edges.iter().filter(|e| f.keeps(e)).map(|e| e.edge_id.as_str()).collect::<Vec<_>>();
        assert_eq!(ids(Filter { lagging: true, ..Filter::default() }), ["iad-0007", "fra-0008", "iad-0009"]);
        assert_eq!(ids(Filter { disconnected: true, ..Filter::default() }), ["fra-gone"]);
        let f = Filter { lagging: true, id_prefix: Some("fra-".into()), ..Filter::default() };
        assert_eq!(ids(f), ["fra-0008"]);
        assert_eq!(ids(Filter { id_prefix: Some("iad-".into()), ..Filter::default() }).len(), 500);
        let departed = r.edges.last().unwrap();
        let args = LsArgs { disconnected: true, worst: 10, ..LsArgs::default() };
        let text = render(&r, &[departed], &summarize([departed]), &args, 1_060);
        assert!(text.contains("edges:       0 connected · 1 departed"), "{text}");
        assert!(text.contains(&format!("no, seen {}", relative(990, 1_060))), "{text}");
    }
}
