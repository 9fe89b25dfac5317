//! The stable reason codes for a denied request.
//!
//! One code per denial, shared by every component: the token crate decides
//! `malformed` … `geo` (with `session_max` and `session_expired` for session
//! credentials, which replace a link's expiry); the edge decides `missing`, `revoked` and `stale_state`.
//! The strings are part of the product's interface (metrics labels, logs, the
//! diagnostic header, `stile explain`): never rename one.

use core::fmt;

/// Why a request was denied. `Copy`, allocation-free, one stable string each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// No token in any transport (path prefix, query parameter, cookie).
    Missing,
    /// The token, or the request path, could not be parsed or is ambiguous.
    Malformed,
    /// The token names a key id this verifier does not hold.
    UnknownKey,
    /// The MAC does not match.
    BadSignature,
    /// Past the expiry, leeway included.
    Expired,
    /// Before the not-before time (or the issue time), leeway included.
    NotYetValid,
    /// A session credential past its session's hard maximum (`started_at + max_secs`), leeway included.
    SessionMax,
    /// A session credential past its own lifetime (`issued_at + ttl`; not renewed in time), leeway included.
    SessionExpired,
    /// The request path is outside the token's scope.
    Scope,
    /// The client address does not match the token's IP binding.
    Ip,
    /// The client's country is not allowed by the token's country rule.
    Geo,
    /// A revocation matches the token (decided by the edge).
    Revoked,
    /// The edge's state is older than its configured limit and it fails closed.
    StaleState,
}

impl Reason {
    /// Every reason, in the order validation checks them.
    pub const ALL: [Reason; 13] = [
        Reason::Missing,
        Reason::Malformed,
        Reason::UnknownKey,
        Reason::BadSignature,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::SessionMax,
        Reason::SessionExpired,
        Reason::Scope,
        Reason::Ip,
        Reason::Geo,
        Reason::Revoked,
        Reason::StaleState,
    ];

    /// The stable, snake_case code used in metrics, logs and headers.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Missing => "missing",
            Reason::Malformed => "malformed",
            Reason::UnknownKey => "unknown_key",
            Reason::BadSignature => "bad_signature",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::SessionMax => "session_max",
            Reason::SessionExpired => "session_expired",
            Reason::Scope => "scope",
            Reason::Ip => "ip",
            Reason::Geo => "geo",
            Reason::Revoked => "revoked",
            Reason::StaleState => "stale_state",
        }
    }

    /// Parses a code produced by [`Reason::as_str`].
    pub fn from_code(code: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == code)
    }

    /// The HTTP status an edge answers with: 401 for a missing token, 403 otherwise.
    pub const fn http_status(self) -> u16 {
        match self {
            Reason::Missing => 401,
            _ => 403,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for r in Reason::ALL {
            assert!(seen.insert(r.as_str()), "duplicate code {r}");
            assert_eq!(Reason::from_code(r.as_str()), Some(r));
        }
        assert_eq!(Reason::from_code("nope"), None);
        assert_eq!(Reason::Missing.http_status(), 401);
        assert_eq!(Reason::Revoked.http_status(), 403);
    }
}
