//! Minting: turns a request, its asset, a policy template and the active key
//! into a signed token and ready-to-use URLs in each transport form.
//!
//! A link's lifetime is counted from its issue time even with a not-before,
//! so `expires_at - issued_at` never exceeds the policy's longest TTL: that is
//! what bounds how long a revocation must be kept.

use std::net::IpAddr;

use rand::TryRngCore;
use rand::rngs::OsRng;
use stile_proto::v1 as pb;
use stile_token::{Claims, ClaimsError, IpBinding, KeyId, KeyRing, Scope, TOKEN_ID_LEN, TokenId, canonicalize_path};

use crate::config::{Config, PolicyConfig};
use crate::error::ApiError;
use crate::model::{Asset, AssetState};
use crate::policy::{country_rule, normalise_base_url};

/// The signing key to mint with.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MintKey<'a> {
    pub(crate) id: KeyId,
    pub(crate) ring: &'a KeyRing,
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

/// Mints one link for a published asset at time `now` (Unix seconds).
pub(crate) fn mint(
    config: &Config,
    req: &pb::MintRequest,
    asset: &Asset,
    key: MintKey<'_>,
    now: u64,
) -> Result<pb::Link, ApiError> {
    let invalid = ApiError::InvalidArgument;
    let policy_name = if req.policy.is_empty() { config.default_policy.as_str() } else { req.policy.as_str() };
    let policy: &PolicyConfig = config.policies.get(policy_name).ok_or_else(|| {
        invalid(format!("unknown policy {policy_name:?}; configured policies: {}", config.policy_names()))
    })?;

    let ttl = if req.ttl_secs == 0 { policy.default_ttl_secs } else { req.ttl_secs };
    if !(policy.ttl_min_secs..=policy.ttl_max_secs).contains(&ttl) {
        return Err(invalid(format!(
            "ttl_secs {ttl} is outside policy {policy_name:?}'s range {}..={} seconds",
            policy.ttl_min_secs, policy.ttl_max_secs
        )));
    }
    let expires_at = now + ttl;
    let not_before = match req.not_before {
        0 => None,
        nbf if nbf < expires_at => Some(nbf.max(now)),
        nbf => return Err(invalid(format!("not_before {nbf} is not before the expiry {expires_at}"))),
    };

    let scope = if req.scope.is_empty() {
        Scope::Prefix(asset.path.clone())
    } else {
        let raw = under_asset(asset, &req.scope);
        Scope::parse(&raw).map_err(|e| invalid(format!("scope {:?}: {e}", req.scope)))?
    };
    if !scope.path().starts_with(&asset.path) {
        return Err(invalid(format!("scope {:?} is outside asset {:?}'s path {}", scope.path(), asset.id, asset.path)));
    }
    let entry_raw =
        if req.entry.is_empty() { format!("{}{}", asset.path, asset.entry) } else { under_asset(asset, &req.entry) };
    let entry =
        canonicalize_path(entry_raw.as_bytes()).map_err(|e| invalid(format!("entry {entry_raw:?}: {e}")))?.into_owned();
    if !scope.admits(&entry) {
        return Err(invalid(format!("entry {entry:?} is outside the scope {:?}", scope.path())));
    }

    let subject = non_empty(&req.subject);
    if policy.require_subject && subject.is_none() {
        return Err(invalid(format!("policy {policy_name:?} requires a subject (viewer id)")));
    }
    let ip = match non_empty(&req.client_ip) {
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
            return Err(invalid(format!("policy {policy_name:?} requires client_ip (the viewer's address)")));
        }
        None => None,
    };
    let countries = match &req.countries {
        Some(rule) if !(rule.allow.is_empty() && rule.deny.is_empty()) => {
            country_rule(&rule.allow, &rule.deny).map_err(|e| invalid(format!("countries: {e}")))?
        }
        _ => policy.default_countries().map_err(|e| ApiError::Internal(format!("policy countries: {e}")))?,
    };
    let base = if req.base_url.is_empty() {
        if config.links.default_base_url.is_empty() {
            return Err(invalid("base_url is empty and links.default_base_url is not configured".into()));
        }
        normalise_base_url(&config.links.default_base_url)
    } else {
        normalise_base_url(&req.base_url)
    }
    .map_err(|e| invalid(format!("base_url: {e}")))?;

    let claims = Claims {
        key_id: key.id,
        token_id: random_token_id()?,
        issued_at: now,
        not_before,
        expires_at,
        scope,
        ip,
        countries,
        subject: subject.map(str::to_owned),
        channel: non_empty(&req.channel).map(str::to_owned),
    };
    let token = stile_token::sign(&claims, key.ring).map_err(|e| match e {
        ClaimsError::UnknownKey => ApiError::Internal(format!("active key {} is missing from the key ring", key.id)),
        ClaimsError::Subject => invalid(format!("subject: {e}")),
        ClaimsError::Channel => invalid(format!("channel: {e}")),
        other => invalid(other.to_string()),
    })?;

    let links = &config.links;
    let scope_path = claims.scope.path();
    let cookie_path = if claims.scope.is_prefix() {
        scope_path.to_owned()
    } else {
        scope_path[..=scope_path.rfind('/').unwrap_or(0)].to_owned()
    };
    Ok(pb::Link {
        query_url: format!("{base}{entry}?{}={token}", links.query_param),
        path_url: format!("{base}/{}/{token}{entry}", links.path_prefix),
        cookie: Some(pb::CookieLink {
            url: format!("{base}{entry}"),
            name: links.cookie_name.clone(),
            value: token.clone(),
            path: cookie_path,
            max_age: ttl,
        }),
        token,
        token_id: claims.token_id.to_string(),
        issued_at: now,
        expires_at,
        key_id: key.id,
        scope: scope_path.to_owned(),
        policy: policy_name.to_owned(),
    })
}

fn random_token_id() -> Result<TokenId, ApiError> {
    let mut bytes = [0u8; TOKEN_ID_LEN];
    OsRng.try_fill_bytes(&mut bytes).map_err(|e| ApiError::Internal(format!("OS random source failed: {e}")))?;
    Ok(TokenId(bytes))
}

/// A path relative to the asset's prefix unless it is absolute.
fn under_asset(asset: &Asset, path: &str) -> String {
    if path.starts_with('/') { path.to_owned() } else { format!("{}{path}", asset.path) }
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

#[cfg(test)]
mod tests {
    use stile_token::{CountryRule, KEY_LEN, Policy, Request, SecretKey, verify};

    use super::*;

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

    fn ring() -> KeyRing {
        let mut ring = KeyRing::new();
        ring.insert(1, &SecretKey::from_bytes([9; KEY_LEN]));
        ring
    }

    fn req() -> pb::MintRequest {
        pb::MintRequest { asset_id: "abc".into(), base_url: "https://edge.example/".into(), ..Default::default() }
    }

    fn check(r: pb::MintRequest, needle: &str) {
        let ring = ring();
        let err = mint(&Config::default(), &r, &asset(), MintKey { id: 1, ring: &ring }, 1_000).unwrap_err();
        assert!(matches!(err, ApiError::InvalidArgument(_)), "{err:?}");
        assert!(err.to_string().contains(needle), "{err} should mention {needle:?}");
    }

    #[test]
    fn mints_every_transport() {
        let ring = ring();
        let link = mint(&Config::default(), &req(), &asset(), MintKey { id: 1, ring: &ring }, 1_000).unwrap();
        let t = &link.token;
        assert_eq!(link.query_url, format!("https://edge.example/vod/abc/master.m3u8?st={t}"));
        assert_eq!(link.path_url, format!("https://edge.example/_st/{t}/vod/abc/master.m3u8"));
        let cookie = link.cookie.unwrap();
        assert_eq!((cookie.name.as_str(), cookie.path.as_str(), cookie.max_age), ("stile", "/vod/abc/", 3600));
        assert_eq!((link.expires_at, link.scope.as_str(), link.policy.as_str()), (4_600, "/vod/abc/", "public"));
        assert_eq!(link.token_id.len(), 16);
        let r = Request { path: "/vod/abc/720p/seg1.ts", client_ip: None, country: None, now: 2_000 };
        let v = verify(t, &ring, &r, &Policy::default()).unwrap();
        assert_eq!(v.token_id().to_string(), link.token_id);
    }

    #[test]
    fn bindings_follow_policy_and_request() {
        let ring = ring();
        let r = pb::MintRequest {
            policy: "paid".into(),
            subject: "viewer-1".into(),
            client_ip: "2001:db8:1:2:3:4:5:6".into(),
            countries: Some(pb::CountryRule { allow: vec!["fr".into()], deny: vec![] }),
            channel: "email".into(),
            scope: "720p/".into(),
            entry: "720p/index.m3u8".into(),
            ttl_secs: 600,
            ..req()
        };
        let link = mint(&Config::default(), &r, &asset(), MintKey { id: 1, ring: &ring }, 1_000).unwrap();
        let token = stile_token::Token::parse(&link.token).unwrap();
        assert_eq!(token.ip().unwrap().to_string(), "2001:db8:1:2::/64");
        assert_eq!(token.country_rule(), Some(CountryRule::Allow(vec![stile_token::Country::parse("FR").unwrap()])));
        assert_eq!((token.subject(), token.channel()), (Some("viewer-1"), Some("email")));
        assert_eq!(link.scope, "/vod/abc/720p/");
        assert!(link.path_url.ends_with("/vod/abc/720p/index.m3u8"));
    }

    #[test]
    fn rejections_name_the_problem() {
        check(pb::MintRequest { policy: "gold".into(), ..req() }, "unknown policy \"gold\"");
        check(pb::MintRequest { ttl_secs: 30, ..req() }, "ttl_secs 30 is outside");
        check(pb::MintRequest { ttl_secs: 86_401, ..req() }, "ttl_secs 86401");
        check(pb::MintRequest { policy: "private".into(), ..req() }, "requires a subject");
        check(pb::MintRequest { policy: "paid".into(), subject: "v".into(), ..req() }, "requires client_ip");
        check(pb::MintRequest { client_ip: "1.2.3".into(), ..req() }, "client_ip \"1.2.3\"");
        check(pb::MintRequest { scope: "/vod/other/".into(), ..req() }, "outside asset");
        check(pb::MintRequest { scope: "/vod/abc/../x/".into(), ..req() }, "scope");
        check(pb::MintRequest { scope: "/vod/abc/a.m3u8".into(), ..req() }, "outside the scope");
        check(pb::MintRequest { subject: "has space".into(), ..req() }, "subject");
        check(pb::MintRequest { channel: "UPPER".into(), ..req() }, "channel");
        check(pb::MintRequest { base_url: String::new(), ..req() }, "default_base_url is not configured");
        check(pb::MintRequest { base_url: "https://x/path".into(), ..req() }, "base_url");
        check(pb::MintRequest { not_before: 10_000, ..req() }, "not_before");
        let both = pb::CountryRule { allow: vec!["US".into()], deny: vec!["FR".into()] };
        check(pb::MintRequest { countries: Some(both), ..req() }, "not both");
        let bad = pb::CountryRule { allow: vec!["USA".into()], deny: vec![] };
        check(pb::MintRequest { countries: Some(bad), ..req() }, "\"USA\"");
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
