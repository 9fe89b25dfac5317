//! Player beacons (`docs/edge.md`, "Player beacons"): what the embed kit reports of
//! a playback the edge cannot see — startup time, rebuffering, a fatal error — posted
//! to `<asset directory>/_stile_beacon` with the credential the player's media
//! requests carry, and counted per share channel.
//!
//! This module is the part free of Pingora: the body parser ([`parse`]) and the two
//! limits ([`Limiter`]) — a token bucket for the whole edge, taken before the
//! credential is verified, and a fixed-window budget per session (per link for a
//! beacon without a session) in a direct-mapped table of atomics. Both are fixed in
//! size at start, so a flood costs neither memory nor, past the bucket, validation
//! or parsing.

use std::borrow::Cow;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use serde::Deserialize;

/// The last path segment of a beacon URL (`/vod/abc/_stile_beacon`).
pub const SEGMENT: &str = "_stile_beacon";

/// Largest beacon body, bytes: longer ones are refused `413` (from `Content-Length`
/// without reading the body, or as soon as the body read passes it).
pub const MAX_BODY: usize = 1024;

/// Largest `startup_ms` counted (10 minutes); larger values count as this.
pub const MAX_STARTUP_MS: u32 = 600_000;
/// Largest `rebuffers` counted per beacon.
pub const MAX_REBUFFERS: u32 = 1_000;
/// Largest `rebuffer_ms` counted per beacon (1 hour).
pub const MAX_REBUFFER_MS: u32 = 3_600_000;

/// The `error` label values: the edge's reason codes (a link refused under the
/// player), the embed kit's own failure kinds, and `other` for anything else.
pub const ERRORS: [&str; 18] = [
    "missing",
    "malformed",
    "unknown_key",
    "bad_signature",
    "expired",
    "not_yet_valid",
    "session_max",
    "session_expired",
    "scope",
    "ip",
    "geo",
    "revoked",
    "stale_state",
    "refused",
    "unplayable",
    "network",
    "source",
    "other",
];

/// Index of `other` in [`ERRORS`].
const OTHER: usize = ERRORS.len() - 1;

/// Whether a request path (without its query) is a beacon URL: its last segment is [`SEGMENT`].
pub fn is_beacon_path(path: &[u8]) -> bool {
    let path = &path[..path.iter().position(|&b| b == b'?' || b == b'#').unwrap_or(path.len())];
    path.rsplit(|&b| b == b'/').next() == Some(SEGMENT.as_bytes()) && path.len() > SEGMENT.len()
}

/// One accepted beacon: what happened since the player's previous beacon.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Beacon {
    /// Load to first frame played, ms (sent once per playback), clamped to [`MAX_STARTUP_MS`].
    pub startup_ms: Option<u32>,
    /// Stalls after playback started, clamped to [`MAX_REBUFFERS`].
    pub rebuffers: u32,
    /// Time spent in those stalls, ms, clamped to [`MAX_REBUFFER_MS`].
    pub rebuffer_ms: u32,
    /// The fatal error, an index into [`ERRORS`].
    pub error: Option<usize>,
}

impl Beacon {
    /// The `error` label value.
    pub fn error_label(&self) -> Option<&'static str> {
        self.error.map(|i| ERRORS[i])
    }
}

/// Why a body is not a beacon (all answered `400`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BeaconError {
    /// Not a JSON object (or a field of the wrong type, or a field given twice).
    #[error("not a JSON object of the beacon's fields")]
    NotAnObject,
    /// A number that is negative, or not a number.
    #[error("field {0} is not a non-negative number")]
    BadNumber(&'static str),
    /// Longer than [`MAX_BODY`].
    #[error("longer than {MAX_BODY} bytes")]
    TooLarge,
}

#[derive(Deserialize)]
struct Raw<'a> {
    startup_ms: Option<f64>,
    rebuffers: Option<f64>,
    rebuffer_ms: Option<f64>,
    #[serde(borrow)]
    error: Option<Cow<'a, str>>,
}

/// Parses a beacon body: one JSON object with the optional fields `startup_ms`,
/// `rebuffers`, `rebuffer_ms` (non-negative numbers, fractions rounded, values past
/// their maximum clamped) and `error` (a string; one outside [`ERRORS`] counts as
/// `other`). Unknown fields are ignored (newer players may send more); `null` is an
/// absent field. Anything else is refused.
pub fn parse(body: &[u8]) -> Result<Beacon, BeaconError> {
    if body.len() > MAX_BODY {
        return Err(BeaconError::TooLarge);
    }
    // serde would also read a struct from a JSON array.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(BeaconError::NotAnObject);
    }
    let raw: Raw<'_> = serde_json::from_slice(body).map_err(|_| BeaconError::NotAnObject)?;
    let number = |name: &'static str, v: Option<f64>, max: u32| -> Result<Option<u32>, BeaconError> {
        match v {
            None => Ok(None),
            Some(x) if x.is_finite() && x >= 0.0 => Ok(Some(x.round().min(f64::from(max)) as u32)),
            Some(_) => Err(BeaconError::BadNumber(name)),
        }
    };
    Ok(Beacon {
        startup_ms: number("startup_ms", raw.startup_ms, MAX_STARTUP_MS)?,
        rebuffers: number("rebuffers", raw.rebuffers, MAX_REBUFFERS)?.unwrap_or(0),
        rebuffer_ms: number("rebuffer_ms", raw.rebuffer_ms, MAX_REBUFFER_MS)?.unwrap_or(0),
        error: raw.error.map(|e| ERRORS.iter().position(|k| *k == e).unwrap_or(OTHER)),
    })
}

/// What became of one beacon request (`stile_edge_player_beacons_total{result}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BeaconResult {
    /// Parsed and counted (`204`).
    Accepted,
    /// The body is not a beacon (`400`).
    Malformed,
    /// The body is longer than [`MAX_BODY`] (`413`).
    TooLarge,
    /// Over the edge's or the session's budget (`429`).
    RateLimited,
    /// Not a `POST` (`405`).
    Method,
    /// The credential was refused (`401`/`403`, the reason code as for media).
    Denied,
    /// `beacon.enabled = false` (`404`).
    Disabled,
}

impl BeaconResult {
    /// Every result, in label order.
    pub const ALL: [BeaconResult; 7] = [
        BeaconResult::Accepted,
        BeaconResult::Malformed,
        BeaconResult::TooLarge,
        BeaconResult::RateLimited,
        BeaconResult::Method,
        BeaconResult::Denied,
        BeaconResult::Disabled,
    ];

    /// The label value (also the access log's `beacon` field).
    pub const fn as_str(self) -> &'static str {
        match self {
            BeaconResult::Accepted => "accepted",
            BeaconResult::Malformed => "malformed",
            BeaconResult::TooLarge => "too_large",
            BeaconResult::RateLimited => "rate_limited",
            BeaconResult::Method => "method_not_allowed",
            BeaconResult::Denied => "denied",
            BeaconResult::Disabled => "disabled",
        }
    }

    /// The status the edge answers with.
    pub const fn status(self) -> u16 {
        match self {
            BeaconResult::Accepted => 204,
            BeaconResult::Malformed => 400,
            BeaconResult::TooLarge => 413,
            BeaconResult::RateLimited => 429,
            BeaconResult::Method => 405,
            BeaconResult::Denied => 403,
            BeaconResult::Disabled => 404,
        }
    }
}

/// Whose budget a beacon spends: its session, or the link that carried it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BudgetKey {
    /// A playback session's id.
    Session(u64),
    /// A link's token id (a beacon sent before the session existed).
    Link(u64),
}

/// The two beacon limits (see the module docs).
#[derive(Debug)]
pub struct Limiter {
    /// Per minute and slot; 0: no per-session budget.
    per_minute: u32,
    /// `(minute << 32) | count` per slot.
    slots: Box<[AtomicU64]>,
    hasher: RandomState,
    /// Tokens added per second, and the most held, both in thousandths of a beacon.
    rate_milli: u64,
    burst_milli: u64,
    bucket: Mutex<Bucket>,
    epoch: Instant,
}

#[derive(Debug)]
struct Bucket {
    tokens_milli: u64,
    at_ms: u64,
}

impl Limiter {
    /// A limiter of `per_minute` beacons per session (or link) per minute in a table of
    /// `slots` slots, and an edge-wide bucket refilled at `rate_per_sec` holding at most
    /// `burst` (full at start). All memory is reserved now.
    pub fn new(per_minute: u32, slots: usize, rate_per_sec: u32, burst: u32) -> Limiter {
        let burst_milli = u64::from(burst.max(1)) * 1000;
        Limiter {
            per_minute,
            slots: (0..slots.max(1)).map(|_| AtomicU64::new(0)).collect(),
            hasher: RandomState::new(),
            rate_milli: u64::from(rate_per_sec) * 1000,
            burst_milli,
            bucket: Mutex::new(Bucket { tokens_milli: burst_milli, at_ms: 0 }),
            epoch: Instant::now(),
        }
    }

    /// Takes one beacon from the edge-wide bucket now; `false` when it is empty.
    pub fn take_global(&self) -> bool {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.take_global_at(ms)
    }

    /// [`Limiter::take_global`] at `ms` milliseconds after the limiter was made.
    pub fn take_global_at(&self, ms: u64) -> bool {
        let mut b = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
        let elapsed = ms.saturating_sub(b.at_ms);
        b.at_ms = b.at_ms.max(ms);
        // rate_milli per 1000 ms = rate_per_sec thousandths per ms.
        let refill = elapsed.saturating_mul(self.rate_milli) / 1000;
        b.tokens_milli = b.tokens_milli.saturating_add(refill).min(self.burst_milli);
        if b.tokens_milli < 1000 {
            return false;
        }
        b.tokens_milli -= 1000;
        true
    }

    /// Spends one beacon of `key`'s budget for the minute of `now` (Unix seconds);
    /// `false` when the budget is spent. Keys whose slots collide share one budget,
    /// so a slot never admits more than the budget per minute.
    pub fn take_key(&self, key: BudgetKey, now: u64) -> bool {
        if self.per_minute == 0 {
            return true;
        }
        let slot = &self.slots[(self.hasher.hash_one(key) % self.slots.len() as u64) as usize];
        let minute = (now / 60) & u64::from(u32::MAX);
        let mut cur = slot.load(Ordering::Relaxed);
        loop {
            let next = if cur >> 32 != minute {
                (minute << 32) | 1
            } else if (cur & u64::from(u32::MAX)) >= u64::from(self.per_minute) {
                return false;
            } else {
                cur + 1
            };
            match slot.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(seen) => cur = seen,
            }
        }
    }

    /// Slots of the per-session table.
    pub fn slots(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_kits_beacons_parse() {
        let b = parse(br#"{"startup_ms":1234,"rebuffers":2,"rebuffer_ms":800.4,"error":"network"}"#).unwrap();
        assert_eq!(b, Beacon { startup_ms: Some(1234), rebuffers: 2, rebuffer_ms: 800, error: Some(15) });
        assert_eq!(b.error_label(), Some("network"));
        assert_eq!(parse(b" {}\n").unwrap(), Beacon::default());
        // Unknown fields ignored, null is absent, unknown error kinds are `other`.
        let b = parse(br#"{"v":2,"extra":{"deep":[1,2]},"startup_ms":null,"error":"SOMETHING"}"#).unwrap();
        assert_eq!((b.startup_ms, b.error_label()), (None, Some("other")));
        // Absurd values are clamped, not trusted.
        let b = parse(br#"{"startup_ms":1e300,"rebuffers":99999999,"rebuffer_ms":1e12}"#).unwrap();
        assert_eq!((b.startup_ms, b.rebuffers, b.rebuffer_ms), (Some(MAX_STARTUP_MS), MAX_REBUFFERS, MAX_REBUFFER_MS));
    }

    #[test]
    fn anything_else_is_refused() {
        for body in [
            &b""[..],
            b"null",
            b"[1,2,3,\"network\"]",
            b"\"x\"",
            b"{",
            b"{\"startup_ms\":\"12\"}",
            b"{\"rebuffers\":true}",
            b"{\"error\":3}",
            b"{\"startup_ms\":1,\"startup_ms\":2}",
            b"{} trailing",
            b"\xff\xfe{}",
        ] {
            assert_eq!(parse(body), Err(BeaconError::NotAnObject), "{}", String::from_utf8_lossy(body));
        }
        assert_eq!(parse(br#"{"rebuffer_ms":-1}"#), Err(BeaconError::BadNumber("rebuffer_ms")));
        let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(MAX_BODY));
        assert_eq!(parse(big.as_bytes()), Err(BeaconError::TooLarge));
    }

    #[test]
    fn error_kinds_cover_the_reason_codes() {
        for r in stile_token::Reason::ALL {
            assert!(ERRORS.contains(&r.as_str()), "{r}");
        }
        assert_eq!(ERRORS[OTHER], "other");
    }

    #[test]
    fn beacon_paths_end_with_the_segment() {
        for (path, want) in [
            (&b"/vod/abc/_stile_beacon"[..], true),
            (b"/vod/abc/_stile_beacon?st=x", true),
            (b"/_st/tok/vod/abc/_stile_beacon", true),
            (b"/_stile_beacon", true),
            (b"_stile_beacon", false),
            (b"/vod/abc/_stile_beacon/", false),
            (b"/vod/abc/x_stile_beacon", false),
            (b"/vod/abc/seg.ts?x=/_stile_beacon", false),
        ] {
            assert_eq!(is_beacon_path(path), want, "{}", String::from_utf8_lossy(path));
        }
    }

    #[test]
    fn each_session_has_a_budget_per_minute() {
        let l = Limiter::new(3, 1024, 100, 100);
        let a = BudgetKey::Session(1);
        assert!((0..3).all(|_| l.take_key(a, 120)));
        assert!(!l.take_key(a, 179), "the fourth in the same minute");
        // Other keys have their own (random slots: allow one collision with `a`).
        assert!((2..12).filter(|&k| l.take_key(BudgetKey::Link(k), 179)).count() >= 9);
        assert!(l.take_key(a, 180), "a new minute");
        // One slot: every key shares one budget, never more than it per minute.
        let one = Limiter::new(2, 1, 100, 100);
        assert!(one.take_key(BudgetKey::Session(1), 0) && one.take_key(BudgetKey::Session(2), 0));
        assert!(!one.take_key(BudgetKey::Link(3), 0));
        assert!(Limiter::new(0, 1, 1, 1).take_key(a, 0), "0: no per-session budget");
    }

    #[test]
    fn the_edge_bucket_refills_at_its_rate_up_to_its_burst() {
        let l = Limiter::new(0, 1, 10, 5);
        assert_eq!((0..20).filter(|_| l.take_global_at(0)).count(), 5, "the burst");
        assert!(!l.take_global_at(99));
        assert!(l.take_global_at(100), "one token per 100 ms at 10/s");
        assert!(!l.take_global_at(100));
        // A long pause refills to the burst only.
        assert_eq!((0..20).filter(|_| l.take_global_at(60_000)).count(), 5);
        // Time going back adds nothing.
        assert!(!l.take_global_at(1_000));
    }

    proptest! {
        // The fuzz target's invariants, on beacon-shaped objects with any values.
        #[test]
        fn accepted_beacons_stay_within_their_bounds(
            startup in any::<f64>(), rebuffers in any::<i64>(), ms in any::<u64>(), error in "[a-z_]{0,20}",
            junk in proptest::collection::vec(any::<u8>(), 0..1200),
        ) {
            let body = format!(r#"{{"startup_ms":{startup:?},"rebuffers":{rebuffers},"rebuffer_ms":{ms},"error":"{error}"}}"#);
            if let Ok(b) = parse(body.as_bytes()) {
                prop_assert!(startup >= 0.0 && rebuffers >= 0);
                prop_assert!(b.startup_ms.is_some_and(|v| v <= MAX_STARTUP_MS));
                prop_assert!(b.rebuffers <= MAX_REBUFFERS && b.rebuffer_ms <= MAX_REBUFFER_MS);
                prop_assert_eq!(b.error_label().unwrap() == error, ERRORS.contains(&error.as_str()));
            }
            match parse(&junk) {
                Ok(b) => prop_assert!(junk.len() <= MAX_BODY && b.error.is_none_or(|i| i < ERRORS.len())),
                Err(e) => prop_assert_eq!(junk.len() > MAX_BODY, e == BeaconError::TooLarge),
            }
        }
    }
}
