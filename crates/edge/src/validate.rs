//! The request validation pipeline, free of Pingora so it can be tested and
//! benchmarked on its own.
//!
//! Cheapest first, stopping at the first failure, one [`Reason`] per denial:
//! size limits → locate the token ([`crate::transport`]) → canonical path
//! (`malformed`) → `missing` → token parse, key, MAC → time window with leeway →
//! scope on the canonical path → IP → country (looked up only when the token has
//! a country rule) → revocations → staleness of the state.
//!
//! The upstream target is built from the canonical path, so what was validated
//! is exactly what the origin serves.

use std::net::IpAddr;

use stile_token::{Country, MAX_PATH_LEN, MAX_TOKEN_LEN, Policy, Reason, Token, UnknownCountry, canonicalize_path};

use crate::config::{EdgeConfig, StalePolicy};
use crate::state::State;
use crate::transport::{Transport, TransportNames, locate, upstream_target};

/// Longest request target (path and query) looked at, bytes.
pub const MAX_TARGET_LEN: usize = MAX_PATH_LEN + MAX_TOKEN_LEN + 4096;

/// The validator's settings, derived once from the configuration.
#[derive(Clone, Debug)]
pub struct Validator {
    names: TransportNames,
    policy: Policy,
    stale_after: Option<u64>,
}

/// What a request brings to validation.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    /// The raw request target (`/path?query`).
    pub target: &'a [u8],
    /// The client address (see [`crate::geo::client_ip`]).
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
    pub token: Option<Token>,
    /// The request target to send upstream, when it differs from the received one.
    pub upstream_target: Option<Vec<u8>>,
    /// Whether the canonical path names a manifest (`.m3u8` or `.mpd`).
    pub manifest: Option<Manifest>,
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
        let stale_after = (config.state.max_age_secs > 0 && config.state.stale_policy == StalePolicy::Deny)
            .then_some(config.state.max_age_secs);
        Validator { names, policy, stale_after }
    }

    /// The transport names.
    pub fn names(&self) -> &TransportNames {
        &self.names
    }

    /// The verifier policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Validates one request. `cookies` are the raw `Cookie` header values; `country`
    /// is called at most once, only for country-bound tokens.
    pub fn validate<'a, C, G>(&self, state: &State, input: &Input<'a>, cookies: C, country: G) -> Verdict
    where
        C: IntoIterator<Item = &'a [u8]>,
        G: FnOnce() -> Option<Country>,
    {
        let mut v = Verdict {
            result: Err(Reason::Malformed),
            transport: Transport::None,
            token: None,
            upstream_target: None,
            manifest: None,
        };
        if input.target.len() > MAX_TARGET_LEN {
            return v;
        }
        let located = match locate(input.target, cookies, &self.names) {
            Ok(l) => l,
            Err(reason) => {
                v.result = Err(reason);
                return v;
            }
        };
        v.transport = located.transport;
        let canonical = match canonicalize_path(located.path) {
            Ok(c) => c,
            Err(_) => return v,
        };
        v.manifest = manifest_kind(&canonical);
        let Some(raw_token) = located.token else {
            v.result = Err(Reason::Missing);
            return v;
        };
        // `stile_token::verify`, split so the country is looked up only when needed.
        let token = match Token::parse(raw_token) {
            Ok(t) => t,
            Err(reason) => {
                v.result = Err(reason);
                return v;
            }
        };
        let result = self.check(state, &token, &canonical, input, country);
        v.token = Some(token);
        v.result = result;
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

    fn check<G>(&self, state: &State, token: &Token, path: &str, input: &Input<'_>, country: G) -> Result<(), Reason>
    where
        G: FnOnce() -> Option<Country>,
    {
        if let Err(reason) = token.verify_mac(&state.keys) {
            // A retired key has left the ring, but its revocation is still in force:
            // say `revoked`, which is what happened (support's `explain` relies on it).
            if reason == Reason::UnknownKey && state.revocations.key_revoked(token.key_id()) {
                return Err(Reason::Revoked);
            }
            return Err(reason);
        }
        // First pass without a country, failing closed on it: most tokens carry no country
        // rule and never pay for the lookup.
        let req = stile_token::Request { path, client_ip: input.client_ip, country: None, now: input.now };
        let strict = Policy { unknown_country: UnknownCountry::Deny, ..self.policy };
        match token.check(&req, &strict) {
            Err(Reason::Geo) => token.check(&stile_token::Request { country: country(), ..req }, &self.policy)?,
            other => other?,
        }
        if state.revocations.is_revoked(token, path) {
            return Err(Reason::Revoked);
        }
        if let Some(max) = self.stale_after
            && input.now > state.fresh_at_now().saturating_add(max)
        {
            return Err(Reason::StaleState);
        }
        Ok(())
    }
}

fn manifest_kind(path: &str) -> Option<Manifest> {
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
    use crate::revocation::RevocationsBuilder;
    use stile_token::{Claims, CountryRule, IpBinding, KEY_LEN, KeyRing, Scope, SecretKey, TokenId};

    const NOW: u64 = 1_700_000_000;

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

    fn run(v: &Validator, s: &State, target: &str, cookie: Option<&str>, now: u64) -> Verdict {
        let input = Input { target: target.as_bytes(), client_ip: Some("192.0.2.1".parse().unwrap()), now };
        v.validate(s, &input, cookie.map(str::as_bytes), || Country::parse("SE"))
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
