//! The trail and the brake of failed authentication: which denied calls are
//! logged (a global budget per minute, so a flood cannot fill the disk),
//! which are audited (the first few per source and window), and which sources
//! are backed off (`auth.max_failures` failures within
//! `auth.failure_window_secs` → every call from that address refused for
//! `auth.backoff_secs`). Pure bookkeeping over a monotonic clock the caller
//! passes in (milliseconds), so it is tested without sleeping.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::config::AuthConfig;

/// Sources remembered at most; beyond it the quietest are forgotten first.
const MAX_SOURCES: usize = 10_000;

/// Denied writes audited per source and window; later ones are only logged and counted.
pub(crate) const AUDITED_PER_WINDOW: u32 = 3;

/// What to do about one denied call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Denial {
    /// Log it now; `suppressed` lines were dropped since the last one logged.
    pub(crate) log: Option<u64>,
    /// Record an audit event (if the call writes).
    pub(crate) audit: bool,
    /// This failure started a back-off of the source.
    pub(crate) backoff_started: bool,
}

#[derive(Debug, Default)]
struct Source {
    /// Start of the current counting window.
    window_start_ms: u64,
    /// Failures in it.
    failures: u32,
    /// Refused until then (0: not backed off).
    blocked_until_ms: u64,
}

/// Failure bookkeeping for every source. Not thread-safe by itself: the
/// authenticator keeps it behind a mutex.
#[derive(Debug)]
pub(crate) struct AuthGuard {
    max_failures: u32,
    window_ms: u64,
    backoff_ms: u64,
    log_per_minute: u32,
    sources: HashMap<IpAddr, Source>,
    /// Start of the current log minute, lines logged in it, lines suppressed since the last logged.
    log_minute_ms: u64,
    logged: u32,
    suppressed: u64,
}

impl AuthGuard {
    pub(crate) fn new(cfg: &AuthConfig) -> AuthGuard {
        AuthGuard {
            max_failures: cfg.max_failures,
            window_ms: cfg.failure_window_secs.saturating_mul(1000),
            backoff_ms: cfg.backoff_secs.saturating_mul(1000),
            log_per_minute: cfg.denied_log_per_minute,
            sources: HashMap::new(),
            log_minute_ms: 0,
            logged: 0,
            suppressed: 0,
        }
    }

    /// Whether `ip` is backed off at `now_ms`: the seconds it still has to wait.
    pub(crate) fn blocked(&self, ip: Option<IpAddr>, now_ms: u64) -> Option<u64> {
        let s = self.sources.get(&ip?)?;
        (s.blocked_until_ms > now_ms).then(|| (s.blocked_until_ms - now_ms).div_ceil(1000))
    }

    /// Records a denied call from `ip` (unknown address: logged within the budget, never backed off).
    pub(crate) fn deny(&mut self, ip: Option<IpAddr>, now_ms: u64) -> Denial {
        let log = self.log_budget(now_ms);
        let Some(ip) = ip else {
            return Denial { log, audit: true, backoff_started: false };
        };
        if !self.sources.contains_key(&ip) && self.sources.len() >= MAX_SOURCES {
            self.forget(now_ms);
        }
        let window_ms = self.window_ms.max(1);
        let s = self.sources.entry(ip).or_default();
        if now_ms.saturating_sub(s.window_start_ms) >= window_ms || s.failures == 0 {
            s.window_start_ms = now_ms;
            s.failures = 0;
        }
        s.failures = s.failures.saturating_add(1);
        let audit = s.failures <= AUDITED_PER_WINDOW;
        let mut backoff_started = false;
        if self.max_failures > 0 && s.failures >= self.max_failures && s.blocked_until_ms <= now_ms {
            s.blocked_until_ms = now_ms.saturating_add(self.backoff_ms);
            s.failures = 0;
            backoff_started = true;
        }
        Denial {
            log: if backoff_started { Some(log.unwrap_or(self.suppressed)) } else { log },
            audit: audit || backoff_started,
            backoff_started,
        }
    }

    /// A call refused because its source is backed off: logged within the budget.
    pub(crate) fn refused_while_blocked(&mut self, now_ms: u64) -> Option<u64> {
        self.log_budget(now_ms)
    }

    /// Whether one more line may be logged now; `Some(suppressed since the last one)`.
    fn log_budget(&mut self, now_ms: u64) -> Option<u64> {
        if now_ms.saturating_sub(self.log_minute_ms) >= 60_000 {
            self.log_minute_ms = now_ms;
            self.logged = 0;
        }
        if self.logged < self.log_per_minute {
            self.logged += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }

    /// Drops sources neither backed off nor failing within their window; if
    /// none can go, the one whose window started first.
    fn forget(&mut self, now_ms: u64) {
        let window_ms = self.window_ms;
        self.sources.retain(|_, s| s.blocked_until_ms > now_ms || now_ms.saturating_sub(s.window_start_ms) < window_ms);
        if self.sources.len() >= MAX_SOURCES
            && let Some(oldest) = self.sources.iter().min_by_key(|(_, s)| s.window_start_ms).map(|(ip, _)| *ip)
        {
            self.sources.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(max_failures: u32, log_per_minute: u32) -> AuthGuard {
        AuthGuard::new(&AuthConfig {
            max_failures,
            failure_window_secs: 60,
            backoff_secs: 300,
            denied_log_per_minute: log_per_minute,
            ..AuthConfig::default()
        })
    }

    #[test]
    fn a_source_is_backed_off_after_max_failures_within_the_window() {
        let ip: Option<IpAddr> = Some("192.0.2.7".parse().unwrap());
        let other: Option<IpAddr> = Some("192.0.2.8".parse().unwrap());
        let mut g = guard(3, 100);
        assert!(!g.deny(ip, 1_000).backoff_started);
        // A failure after the window starts a new count.
        assert!(!g.deny(ip, 62_000).backoff_started);
        assert!(!g.deny(ip, 63_000).backoff_started);
        assert_eq!(g.blocked(ip, 63_000), None);
        assert!(g.deny(ip, 64_000).backoff_started);
        assert_eq!(g.blocked(ip, 64_000), Some(300));
        assert_eq!(g.blocked(ip, 363_500), Some(1));
        assert_eq!(g.blocked(ip, 364_000), None, "the back-off ends");
        assert_eq!(g.blocked(other, 64_000), None, "per source");
        assert_eq!(g.blocked(None, 64_000), None);
    }

    #[test]
    fn audits_the_first_failures_of_a_window_and_logs_within_a_budget() {
        let ip: Option<IpAddr> = Some("2001:db8::1".parse().unwrap());
        let mut g = guard(0, 2);
        let d: Vec<Denial> = (0..5).map(|i| g.deny(ip, 1_000 + i)).collect();
        assert_eq!(d.iter().map(|d| d.audit).collect::<Vec<_>>(), [true, true, true, false, false]);
        assert_eq!(d.iter().map(|d| d.log).collect::<Vec<_>>(), [Some(0), Some(0), None, None, None]);
        assert!(d.iter().all(|d| !d.backoff_started), "max_failures 0: never backed off");
        // The next minute logs again and says how many lines were dropped.
        assert_eq!(g.deny(ip, 61_001).log, Some(3));
        assert_eq!(g.deny(ip, 61_002).log, Some(0));
    }
}
