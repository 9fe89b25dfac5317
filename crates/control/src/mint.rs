//! Minting: turns a request, its asset, a policy template and the active key
//! into a signed token and ready-to-use URLs in each transport form.
//!
//! Pure: domain types in ([`MintParams`], built by `convert` from the wire
//! request), a domain [`MintedLink`] out; the time and the token id are
//! arguments, drawn by the caller from the clock and the OS random source
//! (`random.rs`), so the same inputs always make the same link.
//!
//! A link's lifetime is counted from its issue time even with a not-before,
//! so `expires_at - issued_at` never exceeds the policy's longest TTL: that is
//! what bounds how long a revocation must be kept.

use std::net::IpAddr;

use stile_token::{
    Algorithm, Claims, ClaimsError, CountryRule, IpBinding, KeyId, KeyRing, Scope, TokenId, canonicalize_path,
};

use crate::config::{Config, LinksConfig, PolicyConfig};
use crate::error::ApiError;
use crate::model::{Asset, AssetState};
use crate::policy::{country_rule, normalise_base_url};

/// The signing keys to mint with: the ACTIVE key of each algorithm, and the
/// ring that holds them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MintKey<'a> {
    /// The ACTIVE HMAC-SHA256 key.
    pub(crate) hmac: Option<KeyId>,
    /// The ACTIVE Ed25519 key.
    pub(crate) ed25519: Option<KeyId>,
    pub(crate) ring: &'a KeyRing,
}

impl MintKey<'_> {
    /// The ACTIVE key of `algorithm`, if any.
    pub(crate) fn active(&self, algorithm: Algorithm) -> Option<KeyId> {
        match algorithm {
            Algorithm::HmacSha256 => self.hmac,
            Algorithm::Ed25519 => self.ed25519,
        }
    }
}

/// What a caller asks of one link. Every field is optional; `None` takes the
/// policy's or the configuration's default.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct MintParams<'a> {
    /// Policy template name (default: `default_policy`).
    pub(crate) policy: Option<&'a str>,
    /// Lifetime, seconds (default: the policy's).
    pub(crate) ttl_secs: Option<u64>,
    /// Not valid before, Unix seconds.
    pub(crate) not_before: Option<u64>,
    /// Scope, relative to the asset's path unless absolute (default: the whole asset).
    pub(crate) scope: Option<&'a str>,
    /// Entry URL path, relative to the asset's path unless absolute (default: the asset's entry).
    pub(crate) entry: Option<&'a str>,
    /// Viewer id.
    pub(crate) subject: Option<&'a str>,
    /// The viewer's address, as text.
    pub(crate) client_ip: Option<&'a str>,
    /// Country allow- and deny-lists (default: the policy's).
    pub(crate) countries: Option<CountryLists<'a>>,
    /// Edge base URL (default: `links.default_base_url`).
    pub(crate) base_url: Option<&'a str>,
    /// Share channel.
    pub(crate) channel: Option<&'a str>,
}

/// A request's country lists, at least one of them non-empty.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CountryLists<'a> {
    pub(crate) allow: &'a [String],
    pub(crate) deny: &'a [String],
}

/// A minted link: the token, its facts, and ready-to-use URLs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MintedLink {
    /// The token string.
    pub(crate) token: String,
    pub(crate) token_id: TokenId,
    pub(crate) issued_at: u64,
    pub(crate) expires_at: u64,
    pub(crate) key_id: KeyId,
    /// The scope's canonical path.
    pub(crate) scope: String,
    /// The policy it was minted under.
    pub(crate) policy: String,
    /// The entry URL with the token in the query.
    pub(crate) query_url: String,
    /// The entry URL with the token as a path prefix.
    pub(crate) path_url: String,
    /// The entry URL and the cookie that carries the token.
    pub(crate) cookie: CookieLink,
}

/// The cookie transport of a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CookieLink {
    pub(crate) url: String,
    pub(crate) name: String,
    pub(crate) path: String,
    pub(crate) max_age: u64,
}

/// The publish gate: the asset must exist and be published.
pub(crate) fn gate(id: &str, asset: Option<Asset>) -> Result<Asset, ApiError> {
    let asset = asset.ok_or_else(|| ApiError::NotFound(format!("asset {id:?} does not exist")))?;
    if asset.state != AssetState::Published {
        return Err(ApiError::FailedPrecondition(format!(
            "asset {id:?} is {}, not PUBLISHED; publish it (AssetService.SetState) before minting",
            asset.state.name()
        )));
    }
    Ok(asset)
}

/// Mints one link for a published asset at time `now` (Unix seconds) with
/// token id `token_id`. Checks run in a fixed order (policy and its signing
/// key, lifetime, scope and entry, bindings, base URL), so a request with
/// several faults is told the first. The policy's algorithm picks the key.
pub(crate) fn mint(
    config: &Config,
    params: &MintParams<'_>,
    asset: &Asset,
    key: MintKey<'_>,
    now: u64,
    token_id: TokenId,
) -> Result<MintedLink, ApiError> {
    let (policy_name, policy) = resolve_policy(config, params)?;
    let algorithm = policy.algorithm.algorithm();
    let key_id = key.active(algorithm).ok_or_else(|| {
        ApiError::FailedPrecondition(format!(
            "no active {algorithm} signing key for policy {policy_name:?}; rotate one in \
             (KeyService.Rotate with algorithm {algorithm}: `stile keys rotate --algorithm {algorithm}`)"
        ))
    })?;
    let lifetime = lifetime(policy_name, policy, params, now)?;
    let (scope, entry) = placement(asset, params)?;
    let bindings = bindings(config, policy_name, policy, params)?;
    let base = base_url(config, params)?;
    let claims = Claims {
        key_id,
        token_id,
        issued_at: now,
        not_before: lifetime.not_before,
        expires_at: lifetime.expires_at,
        scope,
        ip: bindings.ip,
        countries: bindings.countries,
        subject: bindings.subject.map(str::to_owned),
        channel: params.channel.map(str::to_owned),
    };
    let session = policy.session.policy();
    let token = stile_token::sign_with_session(&claims, session.as_ref(), key.ring).map_err(|e| match e {
        ClaimsError::UnknownKey | ClaimsError::PublicOnly => {
            ApiError::Internal(format!("active key {key_id} is missing from the key ring"))
        }
        ClaimsError::Subject => invalid(format!("subject: {e}")),
        ClaimsError::Channel => invalid(format!("channel: {e}")),
        other => invalid(other.to_string()),
    })?;
    Ok(urls(&config.links, &base, &entry, claims, token, lifetime.ttl, policy_name))
}

/// The policy the request names, or the default one.
fn resolve_policy<'c>(config: &'c Config, params: &MintParams<'_>) -> Result<(&'c str, &'c PolicyConfig), ApiError> {
    let name = params.policy.unwrap_or(&config.default_policy);
    config
        .policies
        .get_key_value(name)
        .map(|(name, policy)| (name.as_str(), policy))
        .ok_or_else(|| invalid(format!("unknown policy {name:?}; configured policies: {}", config.policy_names())))
}

/// When a link is valid.
struct Lifetime {
    ttl: u64,
    expires_at: u64,
    not_before: Option<u64>,
}

/// The TTL within the policy's range, and a not-before earlier than the expiry.
fn lifetime(name: &str, policy: &PolicyConfig, params: &MintParams<'_>, now: u64) -> Result<Lifetime, ApiError> {
    let ttl = params.ttl_secs.unwrap_or(policy.default_ttl_secs);
    if !(policy.ttl_min_secs..=policy.ttl_max_secs).contains(&ttl) {
        return Err(invalid(format!(
            "ttl_secs {ttl} is outside policy {name:?}'s range {}..={} seconds",
            policy.ttl_min_secs, policy.ttl_max_secs
        )));
    }
    let expires_at = now + ttl;
    let not_before = match params.not_before {
        None => None,
        Some(nbf) if nbf < expires_at => Some(nbf.max(now)),
        Some(nbf) => return Err(invalid(format!("not_before {nbf} is not before the expiry {expires_at}"))),
    };
    Ok(Lifetime { ttl, expires_at, not_before })
}

/// The scope (inside the asset's path) and the entry path (inside the scope).
fn placement(asset: &Asset, params: &MintParams<'_>) -> Result<(Scope, String), ApiError> {
    let scope = match params.scope {
        None => Scope::Prefix(asset.path.clone()),
        Some(scope) => {
            let raw = under_asset(asset, scope);
            Scope::parse(&raw).map_err(|e| invalid(format!("scope {scope:?}: {e}")))?
        }
    };
    if !scope.path().starts_with(&asset.path) {
        return Err(invalid(format!("scope {:?} is outside asset {:?}'s path {}", scope.path(), asset.id, asset.path)));
    }
    let entry_raw = match params.entry {
        None => format!("{}{}", asset.path, asset.entry),
        Some(entry) => under_asset(asset, entry),
    };
    let entry =
        canonicalize_path(entry_raw.as_bytes()).map_err(|e| invalid(format!("entry {entry_raw:?}: {e}")))?.into_owned();
    if !scope.admits(&entry) {
        return Err(invalid(format!("entry {entry:?} is outside the scope {:?}", scope.path())));
    }
    Ok((scope, entry))
}

/// Who and where a link is bound to.
struct Bindings<'a> {
    subject: Option<&'a str>,
    ip: Option<IpBinding>,
    countries: Option<CountryRule>,
}

/// The subject, client IP and country bindings, as the policy requires and the request asks.
fn bindings<'a>(
    config: &Config,
    name: &str,
    policy: &PolicyConfig,
    params: &MintParams<'a>,
) -> Result<Bindings<'a>, ApiError> {
    if policy.require_subject && params.subject.is_none() {
        return Err(invalid(format!("policy {name:?} requires a subject (viewer id)")));
    }
    let ip = match params.client_ip {
        Some(text) => {
            let addr: IpAddr =
                text.parse().map_err(|_| invalid(format!("client_ip {text:?} is not an IPv4 or IPv6 address")))?;
            let links = &config.links;
            Some(
                IpBinding::for_client(addr, links.ipv4_prefix_len, links.ipv6_prefix_len)
                    .map_err(|e| invalid(format!("client_ip: {e}")))?,
            )
        }
        None if policy.require_ip => {
            return Err(invalid(format!("policy {name:?} requires client_ip (the viewer's address)")));
        }
        None => None,
    };
    let countries = match params.countries {
        Some(lists) => country_rule(lists.allow, lists.deny).map_err(|e| invalid(format!("countries: {e}")))?,
        None => policy.default_countries().map_err(|e| ApiError::Internal(format!("policy countries: {e}")))?,
    };
    Ok(Bindings { subject: params.subject, ip, countries })
}

/// The edge base URL the request gives, or the configured default.
fn base_url(config: &Config, params: &MintParams<'_>) -> Result<String, ApiError> {
    let url = match params.base_url {
        Some(url) => url,
        None if config.links.default_base_url.is_empty() => {
            return Err(invalid("base_url is empty and links.default_base_url is not configured".into()));
        }
        None => &config.links.default_base_url,
    };
    normalise_base_url(url).map_err(|e| invalid(format!("base_url: {e}")))
}

/// The link in every transport form.
fn urls(
    links: &LinksConfig,
    base: &str,
    entry: &str,
    claims: Claims,
    token: String,
    ttl: u64,
    policy: &str,
) -> MintedLink {
    let scope_path = claims.scope.path();
    let cookie_path = if claims.scope.is_prefix() {
        scope_path.to_owned()
    } else {
        scope_path[..=scope_path.rfind('/').unwrap_or(0)].to_owned()
    };
    MintedLink {
        query_url: format!("{base}{entry}?{}={token}", links.query_param),
        path_url: format!("{base}/{}/{token}{entry}", links.path_prefix),
        cookie: CookieLink {
            url: format!("{base}{entry}"),
            name: links.cookie_name.clone(),
            path: cookie_path,
            max_age: ttl,
        },
        token,
        token_id: claims.token_id,
        issued_at: claims.issued_at,
        expires_at: claims.expires_at,
        key_id: claims.key_id,
        scope: scope_path.to_owned(),
        policy: policy.to_owned(),
    }
}

fn invalid(message: String) -> ApiError {
    ApiError::InvalidArgument(message)
}

/// A path relative to the asset's prefix unless it is absolute.
fn under_asset(asset: &Asset, path: &str) -> String {
    if path.starts_with('/') { path.to_owned() } else { format!("{}{path}", asset.path) }
}

#[cfg(test)]
mod tests {
    use stile_token::{Ed25519Secret, KEY_LEN, Policy, Request, SecretKey, verify};

    use crate::config::PolicyAlgorithm;

    use super::*;

    const TOKEN_ID: TokenId = TokenId([7; stile_token::TOKEN_ID_LEN]);

    fn asset() -> Asset {
        Asset {
            id: "abc".into(),
            path: "/vod/abc/".into(),
            entry: "master.m3u8".into(),
            state: AssetState::Published,
            revision: 1,
            created_at: 0,
            updated_at: 0,
            updated_by: "t".into(),
        }
    }

    /// Key 1 is an HMAC key, key 2 an Ed25519 key.
    fn ring() -> KeyRing {
        let mut ring = KeyRing::new();
        ring.insert(1, &SecretKey::from_bytes([9; KEY_LEN]));
        ring.insert_ed25519_secret(2, &Ed25519Secret::from_bytes([8; 32]));
        ring
    }

    fn params() -> MintParams<'static> {
        MintParams { base_url: Some("https://edge.example/"), ..MintParams::default() }
    }

    fn mint_at(p: &MintParams<'_>, now: u64) -> Result<MintedLink, ApiError> {
        let ring = ring();
        mint(&Config::default(), p, &asset(), MintKey { hmac: Some(1), ed25519: Some(2), ring: &ring }, now, TOKEN_ID)
    }

    fn check(p: MintParams<'_>, needle: &str) {
        let err = mint_at(&p, 1_000).unwrap_err();
        assert!(matches!(err, ApiError::InvalidArgument(_)), "{err:?}");
        assert!(err.to_string().contains(needle), "{err} should mention {needle:?}");
    }

    #[test]
    fn mints_every_transport() {
        let link = mint_at(&params(), 1_000).unwrap();
        let t = &link.token;
        assert_eq!(link.query_url, format!("https://edge.example/vod/abc/master.m3u8?st={t}"));
        assert_eq!(link.path_url, format!("https://edge.example/_st/{t}/vod/abc/master.m3u8"));
        let cookie = &link.cookie;
        assert_eq!(cookie.url, "https://edge.example/vod/abc/master.m3u8");
        assert_eq!((cookie.name.as_str(), cookie.path.as_str(), cookie.max_age), ("stile", "/vod/abc/", 3600));
        assert_eq!((link.expires_at, link.scope.as_str(), link.policy.as_str()), (4_600, "/vod/abc/", "public"));
        assert_eq!((link.token_id, link.issued_at, link.key_id), (TOKEN_ID, 1_000, 1));
        let r = Request { path: "/vod/abc/720p/seg1.ts", client_ip: None, country: None, now: 2_000 };
        let v = verify(t, &ring(), &r, &Policy::default()).unwrap();
        assert_eq!(v.token_id(), TOKEN_ID);
    }

    #[test]
    fn the_same_inputs_make_the_same_link() {
        assert_eq!(mint_at(&params(), 1_000).unwrap(), mint_at(&params(), 1_000).unwrap());
        assert_ne!(mint_at(&params(), 1_000).unwrap().token, mint_at(&params(), 1_001).unwrap().token);
    }

    #[test]
    fn bindings_follow_policy_and_request() {
        let allow = ["fr".to_owned()];
        let p = MintParams {
            policy: Some("paid"),
            subject: Some("viewer-1"),
            client_ip: Some("2001:db8:1:2:3:4:5:6"),
            countries: Some(CountryLists { allow: &allow, deny: &[] }),
            channel: Some("email"),
            scope: Some("720p/"),
            entry: Some("720p/index.m3u8"),
            ttl_secs: Some(600),
            ..params()
        };
        let link = mint_at(&p, 1_000).unwrap();
        let token = stile_token::Token::parse(&link.token).unwrap();
        assert_eq!(token.ip().unwrap().to_string(), "2001:db8:1:2::/64");
        assert_eq!(token.country_rule(), Some(CountryRule::Allow(vec![stile_token::Country::parse("FR").unwrap()])));
        assert_eq!((token.subject(), token.channel()), (Some("viewer-1"), Some("email")));
        assert_eq!(link.scope, "/vod/abc/720p/");
        assert!(link.path_url.ends_with("/vod/abc/720p/index.m3u8"));
        assert_eq!((link.expires_at, link.cookie.path.as_str()), (1_600, "/vod/abc/720p/"));
    }

    #[test]
    fn rejections_name_the_problem() {
        check(MintParams { policy: Some("gold"), ..params() }, "unknown policy \"gold\"");
        check(MintParams { ttl_secs: Some(30), ..params() }, "ttl_secs 30 is outside");
        check(MintParams { ttl_secs: Some(86_401), ..params() }, "ttl_secs 86401");
        check(MintParams { policy: Some("private"), ..params() }, "requires a subject");
        check(MintParams { policy: Some("paid"), subject: Some("v"), ..params() }, "requires client_ip");
        check(MintParams { client_ip: Some("1.2.3"), ..params() }, "client_ip \"1.2.3\"");
        check(MintParams { scope: Some("/vod/other/"), ..params() }, "outside asset");
        check(MintParams { scope: Some("/vod/abc/../x/"), ..params() }, "scope");
        check(MintParams { scope: Some("/vod/abc/a.m3u8"), ..params() }, "outside the scope");
        check(MintParams { subject: Some("has space"), ..params() }, "subject");
        check(MintParams { channel: Some("UPPER"), ..params() }, "channel");
        check(MintParams { base_url: None, ..params() }, "default_base_url is not configured");
        check(MintParams { base_url: Some("https://x/path"), ..params() }, "base_url");
        check(MintParams { not_before: Some(10_000), ..params() }, "not_before");
        let (us, fr, usa) = (["US".to_owned()], ["FR".to_owned()], ["USA".to_owned()]);
        check(MintParams { countries: Some(CountryLists { allow: &us, deny: &fr }), ..params() }, "not both");
        check(MintParams { countries: Some(CountryLists { allow: &usa, deny: &[] }), ..params() }, "\"USA\"");
        // Several faults: the first in check order is reported.
        check(MintParams { policy: Some("gold"), client_ip: Some("x"), ..params() }, "unknown policy");
    }

    /// A policy's algorithm picks the ACTIVE key of that algorithm; without one
    /// minting fails FAILED_PRECONDITION, naming the algorithm.
    #[test]
    fn the_policy_picks_the_algorithm() {
        let mut config = Config::default();
        config.policies.get_mut("public").unwrap().algorithm = PolicyAlgorithm::Ed25519;
        let ring = ring();
        let both = MintKey { hmac: Some(1), ed25519: Some(2), ring: &ring };
        let link = mint(&config, &params(), &asset(), both, 1_000, TOKEN_ID).unwrap();
        assert_eq!(link.key_id, 2);
        let token = stile_token::Token::parse(&link.token).unwrap();
        assert_eq!(token.algorithm(), stile_token::Algorithm::Ed25519);
        // An edge's ring: the public key only.
        let mut edge = KeyRing::new();
        edge.insert_ed25519(2, &Ed25519Secret::from_bytes([8; 32]).public()).unwrap();
        let r = Request { path: "/vod/abc/720p/seg1.ts", client_ip: None, country: None, now: 2_000 };
        assert_eq!(verify(&link.token, &edge, &r, &Policy::default()).unwrap().key_id(), 2);
        // The other policies stay HMAC.
        let hmac = mint(
            &config,
            &MintParams { policy: Some("private"), subject: Some("v"), ..params() },
            &asset(),
            both,
            1_000,
            TOKEN_ID,
        )
        .unwrap();
        assert_eq!(
            (hmac.key_id, stile_token::Token::parse(&hmac.token).unwrap().algorithm()),
            (1, stile_token::Algorithm::HmacSha256)
        );
        let hmac_only = MintKey { hmac: Some(1), ed25519: None, ring: &ring };
        let err = mint(&config, &params(), &asset(), hmac_only, 1_000, TOKEN_ID).unwrap_err();
        assert!(
            matches!(err, ApiError::FailedPrecondition(ref m) if m.contains("no active ed25519 signing key for policy \"public\"")),
            "{err:?}"
        );
    }

    #[test]
    fn publish_gate() {
        assert!(matches!(gate("x", None), Err(ApiError::NotFound(_))));
        let draft = Asset { state: AssetState::Draft, ..asset() };
        let err = gate("abc", Some(draft)).unwrap_err();
        assert!(matches!(err, ApiError::FailedPrecondition(ref m) if m.contains("DRAFT")), "{err:?}");
        assert!(gate("abc", Some(asset())).is_ok());
    }
}
