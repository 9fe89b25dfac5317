//! Edge identities: which edge ids an API key may announce on its sync stream,
//! and the id patterns operators use to name edges (`edge-eu-*`). Pure.
//!
//! An edge id is 1..64 characters of `[a-z0-9._-]`. A pattern is an id, or a
//! prefix of one followed by `*` (`edge-eu-*`: every id starting with
//! `edge-eu-`; `*` alone: every id). An edge-role key lists at most
//! [`MAX_EDGE_IDS`] of them; a hello announcing an id none of them matches is
//! refused (`PERMISSION_DENIED`, audited `SYNC_REFUSED`). An admin key may
//! announce any id; an edge key that lists none (one stored before keys named
//! their edges) may announce none.

use crate::model::{Role, valid_name};

/// Most patterns one API key may list.
pub(crate) const MAX_EDGE_IDS: usize = 64;

/// Whether `pattern` is an edge id or an id prefix followed by `*`.
pub(crate) fn valid_pattern(pattern: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some("") => true,
        Some(prefix) => prefix.len() < 64 && valid_name(prefix),
        None => valid_name(pattern),
    }
}

/// Whether `id` matches `pattern` (see the module documentation).
pub(crate) fn matches(pattern: &str, id: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => id.starts_with(prefix),
        None => pattern == id,
    }
}

/// Whether a key of `role` listing `patterns` may announce `edge_id`.
pub(crate) fn allowed(role: Role, patterns: &[String], edge_id: &str) -> bool {
    role == Role::Admin || patterns.iter().any(|p| matches(p, edge_id))
}

/// Checks the edge ids of a key of `role`: required (1..64 valid patterns)
/// for `edge`, refused for the others. The error is a sentence for the operator.
pub(crate) fn check_edge_ids(role: Role, patterns: &[String]) -> Result<(), String> {
    if role != Role::Edge {
        if patterns.is_empty() {
            return Ok(());
        }
        return Err(format!("edge ids apply to role edge only, not {}", role.name()));
    }
    if patterns.is_empty() {
        return Err(
            "a key with role edge must name the edge ids it may use (an id, a prefix ending in `*`, or `*`)".into()
        );
    }
    if patterns.len() > MAX_EDGE_IDS {
        return Err(format!("at most {MAX_EDGE_IDS} edge ids, got {}", patterns.len()));
    }
    match patterns.iter().find(|p| !valid_pattern(p)) {
        Some(p) => {
            Err(format!("edge id {p:?} must be 1 to 64 characters of [a-z0-9._-], or such a prefix followed by `*`"))
        }
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_ids_and_prefixes_only() {
        assert!(matches("edge-1", "edge-1") && !matches("edge-1", "edge-10"));
        assert!(matches("edge-eu-*", "edge-eu-3") && !matches("edge-eu-*", "edge-us-3"));
        assert!(matches("*", "anything"));
        let ids = vec!["edge-eu-*".to_owned(), "cdn-7".to_owned()];
        assert!(allowed(Role::Edge, &ids, "cdn-7") && !allowed(Role::Edge, &ids, "cdn-8"));
        assert!(!allowed(Role::Edge, &[], "edge-1"), "an edge key naming no id may use none");
        assert!(allowed(Role::Admin, &[], "edge-1"));
    }

    #[test]
    fn edge_keys_must_name_valid_ids_and_others_none() {
        let v = |ids: &[&str]| ids.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(check_edge_ids(Role::Edge, &v(&["edge-1", "eu-*", "*"])), Ok(()));
        assert!(check_edge_ids(Role::Edge, &[]).unwrap_err().contains("must name the edge ids"));
        for bad in ["Edge", "a*b", "**", "", "a b"] {
            assert!(check_edge_ids(Role::Edge, &v(&[bad])).unwrap_err().contains(&format!("{bad:?}")), "{bad}");
        }
        assert!(check_edge_ids(Role::Operator, &v(&["e"])).unwrap_err().contains("role edge only"));
        assert_eq!(check_edge_ids(Role::Minter, &[]), Ok(()));
        assert!(check_edge_ids(Role::Edge, &vec!["e".to_owned(); 65]).unwrap_err().contains("at most 64"));
    }
}
