//! The request validation pipeline, free of Pingora so it can be tested and
//! benchmarked on its own.
//!
//! Cheapest first, stopping at the first failure, one [`Reason`] per denial:
//! size limits → locate the token ([`crate::transport`]) → canonical path
//! (`malformed`) → `missing` → token parse, key, MAC or Ed25519 signature (the
//! latter through the verified-signature cache, [`crate::verified`]) → time window with leeway →
//! scope on the canonical path → IP → country (looked up only when the token has
//! a country rule) → revocations → staleness of the state.
//!
//! A session credential (`<link>.<session part>`, `docs/sessions.md`) runs the
//! same pipeline on its link, with the link's time window replaced by the
//! session tag and the session's times, and the session's client binding
//! checked after the country; revocations match the link. A credential that
//! verified before under the same key material is taken from the
//! verified-session cache ([`crate::verified::SessionCache`]): its parse, key,
//! signature and session tag are not redone; every other check is.
//!
//! The upstream target is built from the canonical path, so what was validated
//! is exactly what the origin serves.
//!
//! [`Validator::validate_traced`] runs the same pipeline and reports each
//! [`Check`] as it goes, carrying on past a failure wherever the later checks
//! can still run: `stile explain` renders that trace, so what it says is what
//! this code decides.

use std::net::IpAddr;
use std::sync::Arc;

use stile_token::session::{MAX_SESSION_LEN, Session, is_session};
use stile_token::{ClaimCheck, Country, MAX_PATH_LEN, Policy, Reason, Token, canonicalize_path};

use crate::config::EdgeConfig;
use crate::state::State;
use crate::transport::{Transport, TransportNames, locate, upstream_target};
use crate::verified::{SessionCache, VerifiedCache};

/// Longest request target (path and query) looked at, bytes.
pub const MAX_TARGET_LEN: usize = MAX_PATH_LEN + MAX_SESSION_LEN + 4096;

/// The validator's settings, derived once from the configuration.
#[derive(Clone, Debug)]
pub struct Validator {
    names: TransportNames,
    policy: Policy,
    stale_after: Option<u64>,
    /// Ed25519 tokens whose signature verified (`token.verified_cache_entries`); shared by clones.
    verified: Arc<VerifiedCache>,
    /// Session credentials that verified (`token.session_cache_entries`); shared by clones.
    sessions: Arc<SessionCache>,
}

/// What a request brings to validation.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    /// The raw request target (`/path?query`).
    pub target: &'a [u8],
    /// The client address (the proxy takes it from the peer and the trusted `X-Forwarded-For` hops).
    pub client_ip: Option<IpAddr>,
    /// The current time, Unix seconds.
    pub now: u64,
}

/// The outcome of validating one request.
#[derive(Clone, Debug)]
pub struct Verdict {
    /// `Ok` when admitted, else the one reason for the denial.
    pub result: Result<(), Reason>,
    /// Where the token came from.
    pub transport: Transport,
    /// The parsed token: verified when `result` is `Ok`; when denied, present once it
    /// parsed (for the log's token id and the channel label; never trusted then).
    /// For a session credential, its link.
    pub token: Option<Token>,
    /// The session credential, when the request carried one (verified when
    /// `result` is `Ok`; its link is `token`). Shared with the verified-session cache.
    pub session: Option<Arc<Session>>,
    /// The request target to send upstream, when it differs from the received one.
    pub upstream_target: Option<Vec<u8>>,
    /// Whether the canonical path names a manifest (`.m3u8` or `.mpd`).
    pub manifest: Option<Manifest>,
}

/// One step of validation, in the order the validator runs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Check {
    /// The request target is at most [`MAX_TARGET_LEN`] bytes (`malformed`).
    Target,
    /// Finding the token: path prefix › query parameter › cookie (`malformed` when ambiguous).
    Transport,
    /// The request path canonicalises (`malformed`).
    Path,
    /// Some transport carried a token (`missing`).
    Token,
    /// The token parses (`malformed`).
    Format,
    /// Its key is in the ring (`unknown_key`; `revoked` for a retired key whose revocation is in force).
    Key,
    /// Its MAC or Ed25519 signature verifies (`bad_signature`). Not run when the key is
    /// unknown. For a session credential on an HMAC link this is the session tag, which
    /// covers the link's bytes and MAC (`unknown_key` without a session secret,
    /// `bad_signature`), and [`Check::Session`] is not run.
    Signature,
    /// Session credentials on Ed25519 links: the session tag verifies with the session
    /// secret of the link's key (`unknown_key` without one, `bad_signature`).
    Session,
    /// The validity window, with leeway (`expired`, `not_yet_valid`); for a session
    /// credential the session's times instead (`expired`, `not_yet_valid` for its start
    /// against the link, `session_max`, `session_expired`).
    Time,
    /// The canonical path within the scope (`scope`).
    Scope,
    /// The client address within the IP binding (`ip`).
    Ip,
    /// The client's country admitted by the country rule (`geo`); the country is
    /// looked up only for tokens with a rule.
    Country,
    /// Session credentials only: the client within the session's binding (`ip`).
    Client,
    /// No revocation matches (`revoked`).
    Revoked,
    /// The state is not older than `state.max_age_secs` (`stale_state`); only with
    /// `stale_policy = "deny"`.
    Stale,
}

impl From<ClaimCheck> for Check {
    fn from(c: ClaimCheck) -> Check {
        match c {
            ClaimCheck::Time => Check::Time,
            ClaimCheck::Scope => Check::Scope,
            ClaimCheck::Ip => Check::Ip,
            ClaimCheck::Country => Check::Country,
        }
    }
}

/// Kinds of manifest, by the canonical path's extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Manifest {
    /// HLS playlist (`.m3u8`).
    Hls,
    /// DASH MPD (`.mpd`).
    Dash,
}

impl Validator {
    /// Settings from the configuration.
    pub fn new(config: &EdgeConfig) -> Validator {
        let names = TransportNames {
            path_prefix: format!("/{}/", config.token.path_segment),
            query_param: config.token.query_param.clone(),
            cookie: config.cookie.enabled.then(|| config.cookie.name.clone()),
        };
        let policy =
            Policy { leeway_secs: config.token.leeway_secs, unknown_country: config.token.unknown_country.into() };
        Validator {
            names,
            policy,
            stale_after: config.state.deny_when_older_than(),
            verified: Arc::new(VerifiedCache::new(config.token.verified_cache_entries)),
            sessions: Arc::new(SessionCache::new(config.token.session_cache_entries)),
        }
    }

    /// The verified-session cache (its metric, its counters).
    pub fn session_cache(&self) -> &SessionCache {
        &self.sessions
    }

    /// The verified-signature cache (its metric, its counters).
    pub fn verified_cache(&self) -> &VerifiedCache {
        &self.verified
    }

    /// The transport names.
    pub fn names(&self) -> &TransportNames {
        &self.names
    }

    /// The verifier policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Whether `stale_policy = "deny"` refuses requests against this state now.
    pub(crate) fn is_stale(&self, state: &State, now: u64) -> bool {
        self.stale_after.is_some_and(|max| now > state.fresh_at_now().saturating_add(max))
    }

    /// Validates one request. `cookies` are the raw `Cookie` header values; `country`
    /// is called at most once, only for country-bound tokens.
    #[inline]
    pub fn validate<'a, C, G>(&self, state: &State, input: &Input<'a>, cookies: C, country: G) -> Verdict
    where
        C: IntoIterator<Item = &'a [u8]>,
        G: FnOnce() -> Option<Country>,
    {
        self.run(state, input, cookies, country, &mut FirstFailure)
    }

    /// Validates like [`Validator::validate`], with the same verdict, and tells
    /// `trace` every check's outcome in order. It goes on past a failure as far
    /// as the later checks can run (past the key and every claim check; not
    /// past a missing or unparsable token, and the MAC needs the key), so a
    /// diagnostic sees each check's own result; the verdict is still the first
    /// failure.
    pub fn validate_traced<'a, C, G>(
        &self,
        state: &State,
        input: &Input<'a>,
        cookies: C,
        country: G,
        trace: &mut dyn FnMut(Check, Result<(), Reason>),
    ) -> Verdict
    where
        C: IntoIterator<Item = &'a [u8]>,
        G: FnOnce() -> Option<Country>,
    {
        self.run(state, input, cookies, country, &mut EveryCheck(trace))
    }

    #[inline(always)]
    fn run<'a, C, G, O>(&self, state: &State, input: &Input<'a>, cookies: C, country: G, obs: &mut O) -> Verdict
    where
        C: IntoIterator<Item = &'a [u8]>,
        G: FnOnce() -> Option<Country>,
        O: Observer,
    {
        let mut v = Verdict {
            result: Err(Reason::Malformed),
            transport: Transport::None,
            token: None,
            session: None,
            upstream_target: None,
            manifest: None,
        };
        // The steps before the token is parsed end validation when they fail.
        macro_rules! require {
            ($check:expr, $outcome:expr) => {
                match $outcome {
                    Ok(value) => {
                        obs.step($check, Ok(()));
                        value
                    }
                    Err(reason) => {
                        obs.step($check, Err(reason));
                        v.result = Err(reason);
                        return v;
                    }
                }
            };
        }
        require!(Check::Target, if input.target.len() > MAX_TARGET_LEN { Err(Reason::Malformed) } else { Ok(()) });
        let located = require!(Check::Transport, locate(input.target, cookies, &self.names));
        v.transport = located.transport;
        let canonical = require!(Check::Path, canonicalize_path(located.path).map_err(|_| Reason::Malformed));
        v.manifest = manifest_kind(&canonical);
        let raw_token = require!(Check::Token, located.token.ok_or(Reason::Missing));
        // `stile_token::verify`, split so the country is looked up only when needed.
        if is_session(raw_token) {
            // A traced run checks everything itself, so `explain` reports each check's own outcome.
            let cached = if O::CACHED { self.sessions.get(raw_token, &state.keys) } else { None };
            let (session, known) = match cached {
                Some(session) => {
                    obs.step(Check::Format, Ok(()));
                    (session, true)
                }
                None => (Arc::new(require!(Check::Format, Session::parse(raw_token))), false),
            };
            let mut verified = known;
            let sess = SessionCheck { session: &session, verified: &mut verified };
            v.result = self.check(state, session.link(), Some(sess), &canonical, input, country, obs);
            if verified && !known && O::CACHED {
                self.sessions.insert(raw_token, &session, &state.keys);
            }
            v.token = Some(session.link().clone());
            v.session = Some(session);
        } else {
            let token = require!(Check::Format, Token::parse(raw_token));
            v.result = self.check(state, &token, None, &canonical, input, country, obs);
            v.token = Some(token);
        }
        let result = v.result;
        if result.is_ok() {
            let changed = located.transport == Transport::Path
                || located.query_has_token
                || matches!(canonical, std::borrow::Cow::Owned(_));
            if changed {
                v.upstream_target = Some(upstream_target(&canonical, located.query, &self.names.query_param));
            }
        }
        v
    }

    /// The checks of a parsed token (or of a session credential's link, with `session`),
    /// in order; the first failure is the result.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)] // reason: the hot path's inputs, borrowed; a struct would only move them.
    fn check<G, O>(
        &self,
        state: &State,
        token: &Token,
        sess: Option<SessionCheck<'_>>,
        path: &str,
        input: &Input<'_>,
        country: G,
        obs: &mut O,
    ) -> Result<(), Reason>
    where
        G: FnOnce() -> Option<Country>,
        O: Observer,
    {
        let mut first = Ok(());
        // Records one outcome; leaves with the first failure unless the observer goes on.
        macro_rules! step {
            ($check:expr, $outcome:expr) => {
                let outcome: Result<(), Reason> = $outcome;
                if let Err(reason) = outcome {
                    if first.is_ok() {
                        first = Err(reason);
                    }
                    if !obs.step($check, outcome) {
                        return first;
                    }
                } else {
                    obs.step($check, outcome);
                }
            };
        }
        let (session, mut verified) = match sess {
            Some(SessionCheck { session, verified }) => (Some(session), Some(verified)),
            None => (None, None),
        };
        // From the verified-session cache: this exact credential's link and session tag
        // verified under key material equal to what the ring holds now.
        let known = verified.as_deref().is_some_and(|v| *v);
        // Tells the caller that the link and the session tag verified (before `step!`,
        // which may leave): what the cache may remember.
        macro_rules! mark {
            ($ok:expr) => {
                if let Some(v) = verified.as_deref_mut() {
                    *v = $ok;
                }
            };
        }
        // An HMAC link under a session: its MAC is left to the session tag, which covers
        // every byte of it (`Session::tag_covers_link`, token-format § 9.4) — one MAC per
        // request, as for a link.
        let tag_covers_link = session.is_some_and(Session::tag_covers_link);
        let link_check = match session {
            _ if known => Ok(()),
            Some(s) if tag_covers_link => s.verify_link(&state.keys),
            _ => self.verified.verify(token, &state.keys),
        };
        match link_check {
            Ok(()) => {
                step!(Check::Key, Ok(()));
                match session {
                    Some(s) if tag_covers_link && !known => {
                        let mac = s.verify_mac(&state.keys);
                        mark!(mac.is_ok());
                        step!(Check::Signature, mac);
                    }
                    _ => {
                        step!(Check::Signature, Ok(()));
                    }
                }
            }
            // A retired key has left the ring, but its revocation is still in force:
            // say `revoked`, which is what happened (support's `explain` relies on it).
            Err(Reason::UnknownKey) if state.revocations.key_revoked(token.key_id()) => {
                step!(Check::Key, Err(Reason::Revoked));
            }
            Err(Reason::UnknownKey) => {
                step!(Check::Key, Err(Reason::UnknownKey));
            }
            Err(reason) => {
                step!(Check::Key, Ok(()));
                step!(Check::Signature, Err(reason));
            }
        }
        // Most tokens carry no country rule and never pay for the lookup.
        let mut req = stile_token::Request { path, client_ip: input.client_ip, country: None, now: input.now };
        let mut country = Some(country);
        for claim in ClaimCheck::ALL {
            if claim == ClaimCheck::Time
                && let Some(s) = session
            {
                // The session's tag and times replace the link's own window.
                // (The link's signature verified, or validation ended above.)
                if !tag_covers_link && !known {
                    let mac = s.verify_mac(&state.keys);
                    mark!(mac.is_ok() && link_check.is_ok());
                    step!(Check::Session, mac);
                }
                step!(Check::Time, s.check_time(input.now, &self.policy));
                continue;
            }
            if claim == ClaimCheck::Country
                && token.has_country_rule()
                && let Some(lookup) = country.take()
            {
                req.country = lookup();
            }
            step!(Check::from(claim), token.check_one(claim, &req, &self.policy));
        }
        if let Some(s) = session {
            step!(Check::Client, s.check_client(input.client_ip));
        }
        step!(Check::Revoked, if state.revocations.is_revoked(token, path) { Err(Reason::Revoked) } else { Ok(()) });
        if let Some(max) = self.stale_after {
            let stale = input.now > state.fresh_at_now().saturating_add(max);
            step!(Check::Stale, if stale { Err(Reason::StaleState) } else { Ok(()) });
        }
        first
    }
}

/// A session credential under check: its parse, and whether its link and session
/// tag are known to verify (in: from the verified-session cache; out: they did).
struct SessionCheck<'s> {
    session: &'s Session,
    verified: &'s mut bool,
}

/// Sees each check's outcome; says whether validation goes on after a failure.
trait Observer {
    /// Whether the run may use (and fill) the verified-session cache.
    const CACHED: bool;
    fn step(&mut self, check: Check, outcome: Result<(), Reason>) -> bool;
}

/// The request path: stop at the first failure, record nothing (compiles away).
struct FirstFailure;

impl Observer for FirstFailure {
    const CACHED: bool = true;
    #[inline(always)]
    fn step(&mut self, _: Check, _: Result<(), Reason>) -> bool {
        false
    }
}

/// `validate_traced`: tell the caller everything, go on wherever possible.
struct EveryCheck<'t>(&'t mut dyn FnMut(Check, Result<(), Reason>));

impl Observer for EveryCheck<'_> {
    const CACHED: bool = false;
    fn step(&mut self, check: Check, outcome: Result<(), Reason>) -> bool {
        (self.0)(check, outcome);
        true
    }
}

pub(crate) fn manifest_kind(path: &str) -> Option<Manifest> {
    let ext = path.rsplit_once('.')?.1;
    if ext.eq_ignore_ascii_case("m3u8") {
        Some(Manifest::Hls)
    } else if ext.eq_ignore_ascii_case("mpd") {
        Some(Manifest::Dash)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StalePolicy;
    use crate::revocation::RevocationsBuilder;
    use stile_token::{
        Claims, CountryRule, IpBinding, KEY_LEN, KeyRing, Scope, SecretKey, SessionId, SessionPolicy, TokenId,
    };

    const NOW: u64 = 1_700_000_000;
    const POLICY: SessionPolicy = SessionPolicy { idle_secs: 60, max_secs: 3600, bind_v4: 0, bind_v6: 0 };

    fn ring() -> KeyRing {
        let mut r = KeyRing::new();
        r.insert(1, &SecretKey::from_bytes([7; KEY_LEN]));
        r
    }

    fn claims() -> Claims {
        Claims {
            key_id: 1,
            token_id: TokenId::from_u64(0xabc),
            issued_at: NOW - 10,
            not_before: None,
            expires_at: NOW + 600,
            scope: Scope::parse("/vod/abc/").unwrap(),
            ip: None,
            countries: None,
            subject: Some("viewer".into()),
            channel: Some("email".into()),
        }
    }

    fn mint(f: impl FnOnce(&mut Claims)) -> String {
        let mut c = claims();
        f(&mut c);
        stile_token::sign(&c, &ring()).unwrap()
    }

    fn validator(f: impl FnOnce(&mut EdgeConfig)) -> Validator {
        let mut c = EdgeConfig::default();
        c.cookie.enabled = true;
        f(&mut c);
        Validator::new(&c)
    }

    fn state() -> State {
        State { version: 1, keys: ring(), revocations: Default::default(), fresh_at: NOW, ..Default::default() }
    }

    /// Validates, and checks that the traced run agrees: the same verdict, the checks
    /// in order, and the first failure traced is the verdict's reason.
    fn run(v: &Validator, s: &State, target: &str, cookie: Option<&str>, now: u64) -> Verdict {
        let input = Input { target: target.as_bytes(), client_ip: Some("192.0.2.1".parse().unwrap()), now };
        let verdict = v.validate(s, &input, cookie.map(str::as_bytes), || Country::parse("SE"));
        let mut trace = Vec::new();
        let traced = v.validate_traced(s, &input, cookie.map(str::as_bytes), || Country::parse("SE"), &mut |c, o| {
            trace.push((c, o))
        });
        assert_eq!(traced.result, verdict.result, "{target}");
        assert_eq!(traced.transport, verdict.transport);
        assert_eq!(traced.upstream_target, verdict.upstream_target);
        assert_eq!(trace.iter().find_map(|(_, o)| o.err()), verdict.result.err(), "{target}: {trace:?}");
        assert!(trace.windows(2).all(|w| (w[0].0 as u8) < (w[1].0 as u8)), "out of order: {trace:?}");
        verdict
    }

    #[test]
    fn the_trace_goes_on_past_failures() {
        let v = validator(|_| {});
        let t = mint(|c| c.ip = Some(IpBinding::new("198.51.100.0".parse().unwrap(), 24).unwrap()));
        let target = format!("/vod/abd/seg.ts?st={t}");
        let input = Input { target: target.as_bytes(), client_ip: None, now: NOW + 3600 };
        let mut trace = Vec::new();
        let verdict = v.validate_traced(&State::default(), &input, None, || None, &mut |c, o| trace.push((c, o)));
        assert_eq!(verdict.result, Err(Reason::UnknownKey));
        let after_format: Vec<_> = trace.into_iter().skip_while(|(c, _)| *c != Check::Key).collect();
        assert_eq!(
            after_format,
            [
                (Check::Key, Err(Reason::UnknownKey)),
                (Check::Time, Err(Reason::Expired)),
                (Check::Scope, Err(Reason::Scope)),
                (Check::Ip, Err(Reason::Ip)),
                (Check::Country, Ok(())),
                (Check::Revoked, Ok(())),
            ],
            "every check after the key, the MAC skipped without a key"
        );
    }

    #[test]
    fn every_reason_code() {
        let v = validator(|_| {});
        let ok = mint(|_| {});
        let mut revoked = state();
        let mut b = RevocationsBuilder::default();
        b.token_id(TokenId::from_u64(0xabc), 0);
        revoked.revocations = b.build(0);
        let stale_v = validator(|c| {
            c.state.max_age_secs = 60;
            c.state.stale_policy = StalePolicy::Deny;
        });
        let mut other_ring = KeyRing::new();
        other_ring.insert(1, &SecretKey::from_bytes([8; KEY_LEN]));
        let forged = stile_token::sign(&claims(), &other_ring).unwrap();
        let ip_bound = mint(|c| c.ip = Some(IpBinding::new("198.51.100.0".parse().unwrap(), 24).unwrap()));
        let geo_bound = mint(|c| c.countries = Some(CountryRule::Allow(vec![Country::parse("GB").unwrap()])));
        let geo_ok = mint(|c| c.countries = Some(CountryRule::Allow(vec![Country::parse("SE").unwrap()])));
        let mut ring2 = ring();
        ring2.insert(2, &SecretKey::from_bytes([1; KEY_LEN]));
        let unknown_key = stile_token::sign(&Claims { key_id: 2, ..claims() }, &ring2).unwrap();
        let p = "/vod/abc/seg.ts";
        let s = state();
        // A session started at NOW + 590 on a link with sessions, idle 60 s, max 3600 s.
        let link = Token::parse(&stile_token::sign_with_session(&claims(), Some(&POLICY), &ring()).unwrap()).unwrap();
        let session = stile_token::session::start(&link, SessionId(9), NOW + 590, 60, None, &ring()).unwrap();
        let renewed = Session::parse(&session).unwrap().renew(&ring(), NOW + 4150, 60).unwrap();
        let mut tampered = session.clone().into_bytes();
        let i = tampered.len() - 5;
        tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        type Row<'a> = (&'a Validator, &'a State, String, u64, Result<(), Reason>);
        let rows: Vec<Row<'_>> = vec![
            (&v, &s, format!("{p}?st={ok}"), NOW, Ok(())),
            (&v, &s, p.to_string(), NOW, Err(Reason::Missing)),
            (&v, &s, format!("{p}?st=garbage"), NOW, Err(Reason::Malformed)),
            (&v, &s, format!("/vod/abc/%2e%2e/x.ts?st={ok}"), NOW, Err(Reason::Malformed)),
            (&v, &s, format!("{p}?st={unknown_key}"), NOW, Err(Reason::UnknownKey)),
            (&v, &s, format!("{p}?st={forged}"), NOW, Err(Reason::BadSignature)),
            (&v, &s, format!("{p}?st={ok}"), NOW + 600 + 5, Err(Reason::Expired)),
            (&v, &s, format!("{p}?st={ok}"), NOW + 600 + 4, Ok(())),
            (&v, &s, format!("{p}?st={ok}"), NOW - 10 - 6, Err(Reason::NotYetValid)),
            (&v, &s, format!("{p}?st={ok}"), NOW - 10 - 5, Ok(())),
            (&v, &s, format!("/vod/abd/seg.ts?st={ok}"), NOW, Err(Reason::Scope)),
            (&v, &s, format!("{p}?st={ip_bound}"), NOW, Err(Reason::Ip)),
            (&v, &s, format!("{p}?st={geo_bound}"), NOW, Err(Reason::Geo)),
            (&v, &s, format!("{p}?st={geo_ok}"), NOW, Ok(())),
            (&v, &revoked, format!("{p}?st={ok}"), NOW, Err(Reason::Revoked)),
            (&stale_v, &s, format!("{p}?st={ok}"), NOW + 61, Err(Reason::StaleState)),
            (&stale_v, &s, format!("{p}?st={ok}"), NOW + 60, Ok(())),
            // Session credentials (ring key 1 is HMAC: the ring derives its session secret).
            (&v, &s, format!("{p}?st={session}"), NOW + 600 + 30, Ok(())),
            (&v, &s, format!("{p}?st={session}"), NOW + 600 + 65, Err(Reason::SessionExpired)),
            (&v, &s, format!("{p}?st={renewed}"), NOW + 4180, Ok(())),
            (&v, &s, format!("{p}?st={renewed}"), NOW + 590 + 3600 + 5, Err(Reason::SessionMax)),
            (&v, &revoked, format!("{p}?st={session}"), NOW + 600 + 30, Err(Reason::Revoked)),
            (&v, &s, format!("/vod/abd/seg.ts?st={session}"), NOW + 600, Err(Reason::Scope)),
            (&v, &s, format!("{p}?st={tampered}"), NOW + 600, Err(Reason::BadSignature)),
        ];
        let mut seen = std::collections::HashSet::new();
        for (v, s, target, now, want) in rows {
            let got = run(v, s, &target, None, now);
            assert_eq!(got.result, want, "{target} at {now}");
            if let Err(r) = want {
                seen.insert(r);
            }
        }
        assert_eq!(seen.len(), Reason::ALL.len(), "every reason code is covered");
    }

    /// The verified-session cache skips only the parse and the crypto: a cached
    /// credential still meets every per-request check, and any change of the key
    /// material behind it makes it a miss that is checked in full.
    #[test]
    fn a_cached_session_is_checked_on_every_request() {
        use stile_token::{Ed25519Secret, derive_session_secret};
        let v = validator(|_| {});
        let cache = v.session_cache();
        // Sessions bound to the client's /24 (the run's client is 192.0.2.1).
        let policy = SessionPolicy { bind_v4: 24, ..POLICY };
        let link = Token::parse(&stile_token::sign_with_session(&claims(), Some(&policy), &ring()).unwrap()).unwrap();
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        let session = stile_token::session::start(&link, SessionId(9), NOW, 60, Some(client), &ring()).unwrap();
        let target = format!("/vod/abc/seg.ts?st={session}");
        let check = |s: &State, target: &str, ip: &str, now: u64| {
            let input = Input { target: target.as_bytes(), client_ip: Some(ip.parse().unwrap()), now };
            v.validate(s, &input, None, || None).result
        };
        let ok = state();
        // The traced run (`stile explain`) neither reads nor fills the cache.
        let mut trace = 0;
        let input = Input { target: target.as_bytes(), client_ip: Some(client), now: NOW };
        for _ in 0..2 {
            assert_eq!(v.validate_traced(&ok, &input, None, || None, &mut |_, _| trace += 1).result, Ok(()));
        }
        assert!(trace > 0);
        assert_eq!((cache.hits(), cache.misses()), (0, 0));
        // Verified twice, then cached (the doorkeeper admits the second).
        for _ in 0..2 {
            assert_eq!(check(&ok, &target, "192.0.2.1", NOW), Ok(()));
        }
        assert_eq!((cache.hits(), cache.misses()), (0, 2));
        assert_eq!(run(&v, &ok, &target, None, NOW).result, Ok(()));
        assert_eq!((cache.hits(), cache.misses()), (1, 2));
        // Hits: the per-request checks still run on the cached session.
        let mut revoked = state();
        let mut b = RevocationsBuilder::default();
        b.subject("viewer", NOW);
        revoked.revocations = b.build(0);
        assert_eq!(check(&revoked, &target, "192.0.2.1", NOW), Err(Reason::Revoked));
        assert_eq!(check(&ok, &target, "192.0.3.1", NOW), Err(Reason::Ip));
        assert_eq!(check(&ok, &target, "192.0.2.7", NOW + 65), Err(Reason::SessionExpired));
        let elsewhere = format!("/vod/abd/seg.ts?st={session}");
        assert_eq!(check(&ok, &elsewhere, "192.0.2.1", NOW), Err(Reason::Scope));
        assert_eq!((cache.hits(), cache.misses()), (5, 2));
        // Misses, each checked in full: the key retired, its id reissued with other material.
        let mut retired = state();
        retired.keys.remove(1);
        assert_eq!(check(&retired, &target, "192.0.2.1", NOW), Err(Reason::UnknownKey));
        let mut reissued = state();
        reissued.keys.insert(1, &SecretKey::from_bytes([8; KEY_LEN]));
        assert_eq!(check(&reissued, &target, "192.0.2.1", NOW), Err(Reason::BadSignature));
        assert_eq!((cache.hits(), cache.misses()), (5, 4));
        // A tampered credential (one tag character) misses and is never inserted.
        let mut tampered = session.clone().into_bytes();
        let i = tampered.len() - 1;
        tampered[i] = if tampered[i] == b'A' { b'Q' } else { b'A' };
        let tampered = format!("/vod/abc/seg.ts?st={}", String::from_utf8(tampered).unwrap());
        for _ in 0..2 {
            assert_eq!(check(&ok, &tampered, "192.0.2.1", NOW), Err(Reason::BadSignature));
        }
        assert_eq!((cache.hits(), cache.misses()), (5, 6));
        // The original still hits under the original key.
        assert_eq!(check(&ok, &target, "192.0.2.1", NOW), Ok(()));
        assert_eq!(cache.hits(), 6);

        // An Ed25519 link: the signature and the session tag are both skipped on a hit,
        // and a key id that names another public key misses.
        let seed = [3; KEY_LEN];
        let mut signer = KeyRing::new();
        signer.insert_ed25519_secret(5, &Ed25519Secret::from_bytes(seed));
        let edge_ring = |seed: [u8; KEY_LEN]| {
            let mut r = KeyRing::new();
            r.insert_ed25519(5, &Ed25519Secret::from_bytes(seed).public()).unwrap();
            r.set_session_secret(5, &derive_session_secret(&[3; KEY_LEN]));
            State { version: 1, keys: r, fresh_at: NOW, ..Default::default() }
        };
        let link = stile_token::sign_with_session(&Claims { key_id: 5, ..claims() }, Some(&POLICY), &signer).unwrap();
        let session =
            stile_token::session::start(&Token::parse(&link).unwrap(), SessionId(2), NOW, 60, None, &signer).unwrap();
        let target = format!("/vod/abc/seg.ts?st={session}");
        let (hits, misses) = (cache.hits(), cache.misses());
        for _ in 0..3 {
            assert_eq!(check(&edge_ring(seed), &target, "192.0.2.1", NOW), Ok(()));
        }
        assert_eq!((cache.hits() - hits, cache.misses() - misses), (1, 2));
        assert_eq!(check(&edge_ring([4; KEY_LEN]), &target, "192.0.2.1", NOW), Err(Reason::BadSignature));
        assert_eq!(cache.misses() - misses, 3);
        // Disabled: nothing is counted, everything is checked.
        let off = validator(|c| c.token.session_cache_entries = 0);
        let input = Input { target: target.as_bytes(), client_ip: None, now: NOW };
        for _ in 0..2 {
            assert_eq!(off.validate(&edge_ring(seed), &input, None, || None).result, Ok(()));
        }
        assert_eq!((off.session_cache().hits(), off.session_cache().misses()), (0, 0));
    }

    #[test]
    fn unknown_country_follows_the_policy() {
        let t = mint(|c| c.countries = Some(CountryRule::Allow(vec![Country::parse("GB").unwrap()])));
        let target = format!("/vod/abc/a.ts?st={t}");
        let input = Input { target: target.as_bytes(), client_ip: None, now: NOW };
        let deny = validator(|_| {});
        assert_eq!(deny.validate(&state(), &input, None, || None).result, Err(Reason::Geo));
        let allow = validator(|c| c.token.unknown_country = crate::config::UnknownCountryConfig::Allow);
        assert_eq!(allow.validate(&state(), &input, None, || None).result, Ok(()));
        let mut looked_up = 0;
        let plain = mint(|_| {});
        let target = format!("/vod/abc/a.ts?st={plain}");
        let input = Input { target: target.as_bytes(), client_ip: None, now: NOW };
        let v = deny.validate(&state(), &input, None, || {
            looked_up += 1;
            None
        });
        assert_eq!((v.result, looked_up), (Ok(()), 0), "no lookup for tokens without a country rule");
    }

    #[test]
    fn key_lookup_fails_before_mac_for_unknown_keys() {
        // An unknown key id must not be reported as a bad signature.
        let mut c = claims();
        c.key_id = 2;
        let mut r = ring();
        r.insert(2, &SecretKey::from_bytes([1; KEY_LEN]));
        let t = stile_token::sign(&c, &r).unwrap();
        let got = run(&validator(|_| {}), &state(), &format!("/vod/abc/a.ts?st={t}"), None, NOW);
        assert_eq!(got.result, Err(Reason::UnknownKey));
    }

    #[test]
    fn upstream_target_is_canonical_and_token_free() {
        let v = validator(|_| {});
        let t = mint(|_| {});
        let up = |target: &str, cookie| {
            run(&v, &state(), target, cookie, NOW).upstream_target.map(|u| String::from_utf8(u).unwrap())
        };
        assert_eq!(up(&format!("/_st/{t}/vod/abc/a.ts?x=1"), None).as_deref(), Some("/vod/abc/a.ts?x=1"));
        assert_eq!(up(&format!("/vod/abc/a.ts?st={t}&x=1"), None).as_deref(), Some("/vod/abc/a.ts?x=1"));
        assert_eq!(up(&format!("/vod/abc/%61.ts?st={t}"), None).as_deref(), Some("/vod/abc/a.ts"));
        assert_eq!(up("/vod/abc/a.ts?x=1", Some(&format!("stile={t}"))), None, "unchanged target is reused");
    }

    #[test]
    fn path_attacks_are_malformed() {
        let v = validator(|_| {});
        let t = mint(|c| c.scope = Scope::parse("/vod/").unwrap());
        for p in [
            "/vod/abc/%2e%2e/secret.ts",
            "/vod/abc/..%2fsecret.ts",
            "/vod/abc/%2E%2E%2Fsecret.ts",
            "/vod/abc/%252e%252e/secret.ts",
            "/vod/abc/seg.ts;jsessionid=1",
            "/vod//abc/seg.ts",
            "/vod/abc/..\\secret.ts",
            "/vod/abc/%5c..%5csecret.ts",
            "/vod/abc/./seg.ts",
            "/vod/abc/../abc/seg.ts",
            "/vod/abc/%c0%ae%c0%ae/seg.ts",
            "/vod/abc/seg.ts%00.m3u8",
        ] {
            let got = run(&v, &state(), &format!("{p}?st={t}"), None, NOW);
            assert_eq!(got.result, Err(Reason::Malformed), "{p}");
            let got = run(&v, &state(), &format!("/_st/{t}{p}"), None, NOW);
            assert_eq!(got.result, Err(Reason::Malformed), "path token {p}");
        }
    }

    #[test]
    fn manifests_are_recognised() {
        assert_eq!(manifest_kind("/a/master.m3u8"), Some(Manifest::Hls));
        assert_eq!(manifest_kind("/a/x.MPD"), Some(Manifest::Dash));
        assert_eq!(manifest_kind("/a/seg.ts"), None);
        assert_eq!(manifest_kind("/a.m3u8/seg"), None);
    }
}
