//! What the control plane can vouch for about one change log version: which
//! edges are expected to apply it, which did (ACKed it on their stream, an ACK
//! believed only up to what was sent there: `crate::acks`), and a verdict.
//! Pure; `Revoke` with `wait`, key rotation and their tests share it.
//!
//! Expected edges: the operator's named set (`WaitExpectation.edges`: ids, or
//! patterns ending in `*` matched against every known edge), or, without one,
//! every edge connected to any replica or departed within
//! `sync.seen_window_secs` (`crate::fleet`). A named id nobody knows is still
//! expected (and never seen); a pattern that matches no known edge is listed
//! as `unmatched`. `min_edges` defaults to 1: confirmed by no edge is never a
//! success unless the operator says `min_edges = 0`.
//!
//! | verdict | when |
//! |---|---|
//! | `CONFIRMED` | every expected edge applied it, at least `min_edges` did, no pattern unmatched |
//! | `NONE` | otherwise, when no expected edge applied it (including: nobody expected) |
//! | `PARTIAL` | otherwise |

use stile_proto::v1 as pb;

use crate::error::ApiError;
use crate::fleet::EdgeView;
use crate::identity;

/// Most entries of a named edge set.
const MAX_NAMED: usize = 256;

/// What the operator expects, validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Expectation {
    /// At least this many expected edges must apply it.
    pub(crate) min_edges: u32,
    /// Ids or patterns; empty: every known edge.
    pub(crate) edges: Vec<String>,
}

impl Expectation {
    /// The request's expectation, or the default (every known edge, at least one).
    pub(crate) fn from_request(e: Option<pb::WaitExpectation>) -> Result<Expectation, ApiError> {
        let Some(e) = e else { return Ok(Expectation { min_edges: 1, edges: Vec::new() }) };
        if e.edges.len() > MAX_NAMED {
            return Err(ApiError::InvalidArgument(format!(
                "expect.edges: at most {MAX_NAMED} entries, got {}",
                e.edges.len()
            )));
        }
        if let Some(bad) = e.edges.iter().find(|p| !identity::valid_pattern(p)) {
            return Err(ApiError::InvalidArgument(format!(
                "expect.edges: {bad:?} must be an edge id ([a-z0-9._-]{{1,64}}) or such a prefix followed by `*`"
            )));
        }
        Ok(Expectation { min_edges: e.min_edges.unwrap_or(1), edges: e.edges })
    }

    /// Whether `id` is in the named set (every id when there is none).
    fn includes(&self, id: &str) -> bool {
        self.edges.is_empty() || self.edges.iter().any(|p| identity::matches(p, id))
    }
}

/// The confirmation of `version` given the known edges (connected and
/// departed), the expectation and the window of remembered edges.
pub(crate) fn confirm(version: u64, known: &[EdgeView], exp: &Expectation, window_secs: u64) -> pb::Confirmation {
    let mut edges: Vec<pb::EdgeAck> = known
        .iter()
        // Outside a named set only connected edges are shown (for context).
        .filter(|e| exp.includes(&e.edge_id) || !e.departed)
        .map(|e| pb::EdgeAck { expected: exp.includes(&e.edge_id), ..edge_ack(e, version) })
        .collect();
    let mut unmatched = Vec::new();
    for p in &exp.edges {
        if known.iter().any(|e| identity::matches(p, &e.edge_id)) {
            continue;
        }
        if p.ends_with('*') {
            unmatched.push(p.clone());
        } else if !edges.iter().any(|e| &e.edge_id == p) {
            edges.push(pb::EdgeAck { edge_id: p.clone(), expected: true, ..pb::EdgeAck::default() });
        }
    }
    edges.sort_by(|a, b| a.edge_id.cmp(&b.edge_id));
    let expected = edges.iter().filter(|e| e.expected).count();
    let confirmed = edges.iter().filter(|e| e.expected && e.applied).count();
    let not_confirmed: Vec<&str> =
        edges.iter().filter(|e| e.expected && !e.applied).map(|e| e.edge_id.as_str()).collect();
    let min = exp.min_edges as usize;
    let verdict = if confirmed == expected && confirmed >= min && unmatched.is_empty() {
        pb::ConfirmationVerdict::Confirmed
    } else if confirmed == 0 {
        pb::ConfirmationVerdict::None
    } else {
        pb::ConfirmationVerdict::Partial
    };
    let mut summary = match verdict {
        pb::ConfirmationVerdict::Confirmed if expected == 0 => "confirmed by 0 edges, as --min-edges 0 allows".into(),
        pb::ConfirmationVerdict::Confirmed => format!("confirmed by all {expected} expected edges"),
        _ if expected == 0 && exp.edges.is_empty() => {
            format!("confirmed by 0 edges: none connected or seen in the last {window_secs} s")
        }
        _ => format!("confirmed by {confirmed} of {expected} expected edges"),
    };
    if verdict != pb::ConfirmationVerdict::Confirmed {
        if confirmed < min && confirmed == expected && expected > 0 {
            summary.push_str(&format!("; fewer than the {min} required"));
        }
        if !not_confirmed.is_empty() {
            summary.push_str(&format!("; not confirmed: {}", not_confirmed.join(", ")));
        }
        if !unmatched.is_empty() {
            summary.push_str(&format!("; no known edge matches {}", unmatched.join(", ")));
        }
    }
    pb::Confirmation {
        verdict: verdict.into(),
        version,
        confirmed: u32::try_from(confirmed).unwrap_or(u32::MAX),
        expected: u32::try_from(expected).unwrap_or(u32::MAX),
        min_edges: exp.min_edges,
        edges,
        unmatched,
        summary,
        seen_window_secs: window_secs,
    }
}

/// One edge's progress on `version` (as expected).
pub(crate) fn edge_ack(e: &EdgeView, version: u64) -> pb::EdgeAck {
    pb::EdgeAck {
        edge_id: e.edge_id.clone(),
        applied_version: e.applied,
        applied: e.applied >= version,
        error: e.last_error.clone(),
        connected: !e.departed,
        last_seen_ms: e.last_seen_ms,
        expected: true,
    }
}

/// The expected edges that have not applied the version.
pub(crate) fn lagging(c: &pb::Confirmation) -> Vec<String> {
    c.edges.iter().filter(|e| e.expected && !e.applied).map(|e| e.edge_id.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(id: &str, applied: u64, departed: bool) -> EdgeView {
        EdgeView { edge_id: id.into(), applied, departed, last_seen_ms: 5, ..EdgeView::default() }
    }

    fn exp(min: Option<u32>, edges: &[&str]) -> Expectation {
        let e = pb::WaitExpectation { min_edges: min, edges: edges.iter().map(|s| (*s).to_owned()).collect() };
        Expectation::from_request(Some(e)).unwrap()
    }

    fn verdict(c: &pb::Confirmation) -> pb::ConfirmationVerdict {
        c.verdict()
    }

    #[test]
    fn nobody_listening_is_not_a_success() {
        let c = confirm(7, &[], &Expectation::from_request(None).unwrap(), 900);
        assert_eq!(verdict(&c), pb::ConfirmationVerdict::None);
        assert_eq!(c.summary, "confirmed by 0 edges: none connected or seen in the last 900 s");
        let allowed = confirm(7, &[], &exp(Some(0), &[]), 900);
        assert_eq!(verdict(&allowed), pb::ConfirmationVerdict::Confirmed);
    }

    #[test]
    fn departed_edges_are_expected_and_named() {
        let known = [edge("a", 7, false), edge("b", 3, true)];
        let c = confirm(7, &known, &Expectation::from_request(None).unwrap(), 900);
        assert_eq!(verdict(&c), pb::ConfirmationVerdict::Partial);
        assert_eq!((c.confirmed, c.expected), (1, 2));
        assert_eq!(lagging(&c), ["b"]);
        assert!(!c.edges[1].connected && c.edges[1].expected);
        assert_eq!(c.summary, "confirmed by 1 of 2 expected edges; not confirmed: b");
        let c = confirm(7, &known, &exp(Some(3), &["a"]), 900);
        assert_eq!(verdict(&c), pb::ConfirmationVerdict::Partial);
        assert_eq!(c.summary, "confirmed by 1 of 1 expected edges; fewer than the 3 required");
    }

    #[test]
    fn a_named_set_expects_its_members_and_reports_unknown_ones() {
        let known = [edge("eu-1", 7, false), edge("eu-2", 7, false), edge("us-1", 2, false), edge("old", 1, true)];
        let c = confirm(7, &known, &exp(None, &["eu-*"]), 900);
        assert_eq!(verdict(&c), pb::ConfirmationVerdict::Confirmed, "{}", c.summary);
        assert_eq!(
            c.edges.iter().map(|e| (e.edge_id.as_str(), e.expected)).collect::<Vec<_>>(),
            [("eu-1", true), ("eu-2", true), ("us-1", false)]
        );
        let c = confirm(7, &known, &exp(None, &["eu-1", "ap-7", "ap-*"]), 900);
        assert_eq!(verdict(&c), pb::ConfirmationVerdict::Partial);
        assert_eq!(c.unmatched, ["ap-*"]);
        assert_eq!(lagging(&c), ["ap-7"]);
        assert_eq!(c.summary, "confirmed by 1 of 2 expected edges; not confirmed: ap-7; no known edge matches ap-*");
        let c = confirm(7, &known, &exp(None, &["us-1"]), 900);
        assert_eq!(verdict(&c), pb::ConfirmationVerdict::None);
        assert!(
            Expectation::from_request(Some(pb::WaitExpectation { min_edges: None, edges: vec!["A".into()] }))
                .is_err_and(|e| e.to_string().contains("\"A\" must be an edge id"))
        );
    }
}
