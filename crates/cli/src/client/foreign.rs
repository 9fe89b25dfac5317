//! `stile explain --format FORMAT`: another vendor's signed link judged by
//! Stile's verifier for that format (`stile_foreign`, docs/migration.md), offline.
//!
//! The keys are the operator's old ones, given on the command line as the
//! vendor writes them; the format's settings are the vendor's defaults or a
//! TOML table (`--format-config`). Like `explain` for Stile links it decides
//! nothing itself: `Config::locate` and `Config::verify` are the code the edge
//! integration runs, and this module only renders what they return. Secrets
//! and signatures are never printed (`Found::fields` truncates them).

use std::net::IpAddr;
use std::path::Path;

use serde_json::json;
use stile_foreign::{Config, Format, Key, Keys, Request, Scope, UnknownCountry, Verified};
use stile_token::{Country, Reason};

use super::Failure;
use super::output::{relative, utc};

/// What `--format` needs besides the link.
pub(crate) struct ForeignInput<'a> {
    pub(crate) link: &'a str,
    pub(crate) cookie: Option<&'a str>,
    pub(crate) format: &'a str,
    pub(crate) keys: &'a [String],
    /// `--key KEY [--key-name NAME]`: one more key, named as given or as the link names its key.
    pub(crate) key: Option<(&'a str, Option<&'a str>)>,
    pub(crate) config_file: Option<&'a Path>,
    pub(crate) client_ip: Option<IpAddr>,
    pub(crate) country: Option<Country>,
    pub(crate) leeway: u32,
    pub(crate) edge_now: u64,
    pub(crate) real_now: u64,
}

/// The outcome: rendered text, JSON, and whether an edge would admit the link.
pub(crate) struct ForeignReport {
    pub(crate) text: String,
    pub(crate) json: serde_json::Value,
    pub(crate) admitted: bool,
}

/// Parses the inputs (bad ones are usage errors) and judges the link.
pub(crate) fn explain(input: &ForeignInput<'_>) -> Result<ForeignReport, Failure> {
    let format = Format::from_name(input.format).ok_or_else(|| {
        let names: Vec<&str> = Format::ALL.iter().map(|f| f.as_str()).collect();
        Failure::usage(format!("--format {:?}: expected stile or one of {}", input.format, names.join(", ")))
    })?;
    let config = match input.config_file {
        Some(path) => settings(format, path)?,
        None => Config::default_for(format),
    };
    config.validate().map_err(|e| Failure::usage(format!("--format-config: {e}")))?;
    let (scheme, host, target) = split_url(input.link)?;
    let cookies: Vec<&[u8]> = input.cookie.iter().map(|c| c.as_bytes()).collect();
    let located = config.locate(target.as_bytes(), &cookies);
    let mut given = input.keys.to_vec();
    if let Some((key, name)) = input.key {
        // Unnamed: the name the link gives its key (Google's `KeyName`), or any.
        let named = located
            .as_ref()
            .ok()
            .and_then(Option::as_ref)
            .and_then(|f| f.fields().into_iter().find(|(n, _)| *n == "KeyName"));
        let name = name.map(str::to_owned).or(named.map(|(_, v)| v)).unwrap_or_else(|| "key".into());
        given.push(format!("{name}={key}"));
    }
    let keys = keys(format, &given)?;
    let request = Request {
        scheme,
        host,
        client_ip: input.client_ip,
        country: input.country,
        now: input.edge_now,
        leeway_secs: input.leeway,
        unknown_country: UnknownCountry::Deny,
        headers: &[],
    };
    let mut text = String::new();
    let mut fields_json = serde_json::Map::new();
    let (verdict, verified_json, outcome) = match &located {
        Err(reason) => (deny_line(*reason, "the link cannot be read in this format"), None, Err(*reason)),
        Ok(None) => (
            deny_line(Reason::Missing, &format!("no {} token in the URL or cookie", format.as_str())),
            None,
            Err(Reason::Missing),
        ),
        Ok(Some(found)) => {
            use std::fmt::Write as _;
            let _ = writeln!(text, "transport   {}", found.transport.as_str());
            let _ = writeln!(text, "request     {}", found.path);
            let _ = writeln!(text, "upstream    {} (what the origin would get: no token)", found.upstream);
            let _ = writeln!(text, "\n{} token", format.as_str());
            for (name, value) in found.fields() {
                let _ = writeln!(text, "  {name:<18}{value}");
                fields_json.insert(name.into(), json!(value));
            }
            match config.verify(found, &keys, &request) {
                Ok(v) => {
                    let _ = write!(text, "{}", verified_text(&v, input.real_now));
                    (pass_line(&v, input.client_ip.is_some()), Some(verified_json(&v)), Ok(()))
                }
                Err(reason) => (deny_line(reason, &why(reason, found.path.as_str())), None, Err(reason)),
            }
        }
    };
    let clock =
        if input.edge_now == input.real_now { String::new() } else { format!(", edge clock {}", utc(input.edge_now)) };
    let header =
        format!("format      {} (offline, {} key(s){clock}, leeway {} s)\n", format.as_str(), keys.len(), input.leeway);
    let text = format!("{header}{text}\n{verdict}\n");
    let json = json!({
        "format": format.as_str(),
        "transport": located.as_ref().ok().and_then(|f| f.as_ref()).map(|f| f.transport.as_str()),
        "path": located.as_ref().ok().and_then(|f| f.as_ref()).map(|f| f.path.clone()),
        "upstream": located.as_ref().ok().and_then(|f| f.as_ref()).map(|f| f.upstream.clone()),
        "token": fields_json,
        "verified": verified_json,
        "edge_time": input.edge_now,
        "leeway_secs": input.leeway,
        "verdict": match outcome {
            Ok(()) => json!({ "decision": "pass", "reason": null, "line": verdict }),
            Err(reason) => json!({
                "decision": "deny", "reason": reason.as_str(), "http_status": reason.http_status(), "line": verdict,
            }),
        },
    });
    Ok(ForeignReport { text, json, admitted: outcome.is_ok() })
}

/// The format's settings from a TOML file: the table of that format's fields
/// (docs/migration.md, "the format's settings"); missing fields keep the vendor's defaults.
fn settings(format: Format, path: &Path) -> Result<Config, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::usage(format!("--format-config {}: {e}", path.display())))?;
    let bad = |e: toml::de::Error| Failure::usage(format!("--format-config {}: {e}", path.display()));
    Ok(match format {
        Format::Akamai => Config::Akamai(toml::from_str(&text).map_err(bad)?),
        Format::CloudCdn => Config::CloudCdn(toml::from_str(&text).map_err(bad)?),
        Format::MediaCdn => Config::MediaCdn(toml::from_str(&text).map_err(bad)?),
        Format::Bunny => Config::Bunny(toml::from_str(&text).map_err(bad)?),
        Format::NginxSecureLink => Config::NginxSecureLink(toml::from_str(&text).map_err(bad)?),
    })
}

/// `NAME=KEY` pairs, each written as the vendor writes it: hex for Akamai,
/// base64 for Google (`ed25519:` + base64 for a Media CDN public key), the
/// text itself for Bunny and nginx ([`Key::parse_as`], as the edge reads them).
fn keys(format: Format, given: &[String]) -> Result<Keys, Failure> {
    let mut keys = Vec::with_capacity(given.len());
    for pair in given {
        let (name, text) = pair
            .split_once('=')
            .ok_or_else(|| Failure::usage("--foreign-key: expected NAME=KEY (the key as the vendor writes it)"))?;
        let key = Key::parse_as(format, name, text).map_err(|e| Failure::usage(format!("--foreign-key: {e}")))?;
        keys.push(key);
    }
    Keys::new(keys).map_err(|e| Failure::usage(format!("--foreign-key: {e}")))
}

/// `scheme://host/target` → its parts; a bare `/target` is taken as `https://localhost`.
fn split_url(link: &str) -> Result<(&str, &str, &str), Failure> {
    if link.starts_with('/') {
        return Ok(("https", "localhost", link));
    }
    let (scheme, rest) =
        link.split_once("://").ok_or_else(|| Failure::usage("expected a URL (https://host/path?…) or a /path?…"))?;
    if scheme != "http" && scheme != "https" {
        return Err(Failure::usage(format!("unsupported scheme {scheme:?}: expected http or https")));
    }
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (host, target) = rest.split_at(split);
    if host.is_empty() {
        return Err(Failure::usage("the URL has no host"));
    }
    if target.is_empty() || target.starts_with('?') {
        return Err(Failure::usage("the URL has no path (expected https://host/path…)"));
    }
    Ok((scheme, host, target))
}

fn verified_text(v: &Verified<'_>, now: u64) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let when = |t: Option<u64>| t.map_or_else(|| "-".into(), |t| format!("{} ({})", utc(t), relative(t, now)));
    let _ = writeln!(o, "\nverified");
    let _ = writeln!(o, "  key         {}", v.key_name);
    let _ = writeln!(o, "  not before  {}", when(v.not_before));
    let _ = writeln!(o, "  expires     {}", if v.expires.is_some() { when(v.expires) } else { "never".into() });
    let _ = writeln!(o, "  scope       {}", scope_text(&v.scope));
    let _ = writeln!(o, "  id          {}", v.token_id.unwrap_or("-"));
    let _ = writeln!(o, "  ip bound    {}", if v.ip_bound { "yes" } else { "no" });
    o
}

fn verified_json(v: &Verified<'_>) -> serde_json::Value {
    json!({
        "key": v.key_name, "not_before": v.not_before, "expires": v.expires,
        "scope": scope_text(&v.scope), "id": v.token_id, "ip_bound": v.ip_bound,
    })
}

fn scope_text(scope: &Scope<'_>) -> String {
    match scope {
        Scope::Exact(p) => format!("{p} (exact path)"),
        Scope::PathPrefix(p) => format!("{p}… (path prefix)"),
        Scope::UrlPrefix(u) => format!("{u}… (URL prefix)"),
        Scope::Globs { list, .. } => format!("{list} (globs)"),
    }
}

fn pass_line(v: &Verified<'_>, ip_known: bool) -> String {
    let caveat =
        if v.ip_bound && !ip_known { " (bound to a client address: give --client-ip to check it)" } else { "" };
    format!("verdict     PASS: the {} link verifies with key {}{caveat}", v.format.as_str(), v.key_name)
}

fn deny_line(reason: Reason, why: &str) -> String {
    format!("verdict     DENY {} ({}): {why}", reason.as_str(), reason.http_status())
}

fn why(reason: Reason, path: &str) -> String {
    match reason {
        Reason::UnknownKey => "no --foreign-key of the name (or kind) the link needs".into(),
        Reason::BadSignature => "the signature does not match (another key, or the link was altered)".into(),
        Reason::Expired => "the link has expired (mind --leeway and --at)".into(),
        Reason::NotYetValid => "the link is not valid yet".into(),
        Reason::Scope => format!("the link does not cover {path}"),
        Reason::Ip => "the link is bound to another client address".into(),
        Reason::Geo => "the client's country is not allowed (or unknown: give --country)".into(),
        _ => "the link is malformed for this format".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(link: &'a str, format: &'a str, keys: &'a [String], now: u64) -> ForeignInput<'a> {
        ForeignInput {
            link,
            cookie: None,
            format,
            keys,
            key: None,
            config_file: None,
            client_ip: None,
            country: None,
            leeway: 0,
            edge_now: now,
            real_now: now,
        }
    }

    // Bunny's published test vector (token-tester.b-cdn.net, key "SecurityKey").
    const BUNNY: &str = "https://token-tester.b-cdn.net/300kb.jpg?token=HS256-o10JRWlsAItyAsdKS6jJKjabHN4FrFsplDHPV1idcX4&expires=1598024587";

    #[test]
    fn a_vendor_link_passes_and_every_failure_has_its_reason() {
        let keys = ["main=SecurityKey".to_owned()];
        let r = explain(&input(BUNNY, "bunny", &keys, 1_598_024_000)).unwrap();
        assert!(r.admitted, "{}", r.text);
        assert!(r.text.contains("verdict     PASS: the bunny link verifies with key main"), "{}", r.text);
        assert!(r.text.contains("upstream    /300kb.jpg "), "{}", r.text);
        assert!(!r.text.contains("o10JRWlsAItyAsdKS6jJKjabHN4FrFsplDHPV1idcX4"), "the whole token is never printed");

        let expired = explain(&input(BUNNY, "bunny", &keys, 1_598_024_587)).unwrap();
        assert_eq!(expired.json["verdict"]["reason"], "expired", "{}", expired.text);
        let wrong = ["main=OtherKey".to_owned()];
        let bad = explain(&input(BUNNY, "bunny", &wrong, 1_598_024_000)).unwrap();
        assert_eq!(bad.json["verdict"]["reason"], "bad_signature", "{}", bad.text);
        let missing = explain(&input("https://h.example/300kb.jpg", "bunny", &keys, 1)).unwrap();
        assert_eq!(missing.json["verdict"]["reason"], "missing");
        assert!(!missing.admitted);
    }

    /// `--key KEY [--key-name NAME]`: with no name, the key takes the name the link
    /// gives its key (Google's `KeyName`), or serves a format that names none.
    #[test]
    fn one_key_takes_the_name_the_link_gives() {
        // Google's Cloud CDN sample (python-docs-samples, cdn/snippets_test.py).
        let url =
            "http://35.186.234.33/index.html?Expires=1549751401&KeyName=my-key&Signature=CRFqQnVfFyiUyR63OQf-HRUpIwc=";
        let with = |key, name| ForeignInput { key: Some((key, name)), ..input(url, "cloud-cdn", &[], 1_549_751_000) };
        let r = explain(&with("nZtRohdNF9m3cKM24IcK4w==", None)).unwrap();
        assert!(r.admitted, "{}", r.text);
        let named = explain(&with("nZtRohdNF9m3cKM24IcK4w==", Some("my-key"))).unwrap();
        assert!(named.admitted, "{}", named.text);
        let other = explain(&with("nZtRohdNF9m3cKM24IcK4w==", Some("other-key"))).unwrap();
        assert_eq!(other.json["verdict"]["reason"], "unknown_key", "{}", other.text);
        let wrong = explain(&with("AAAAAAAAAAAAAAAAAAAAAA==", None)).unwrap();
        assert_eq!(wrong.json["verdict"]["reason"], "bad_signature", "{}", wrong.text);
        let bunny = ForeignInput { key: Some(("SecurityKey", None)), ..input(BUNNY, "bunny", &[], 1_598_024_000) };
        assert!(explain(&bunny).unwrap().admitted);
    }

    #[test]
    fn bad_inputs_are_usage_errors() {
        let keys = ["main=SecurityKey".to_owned()];
        let kind = |r: Result<ForeignReport, Failure>| r.err().map(|f| f.kind);
        assert_eq!(kind(explain(&input(BUNNY, "fastly", &keys, 1))), Some(super::super::Kind::Usage));
        assert_eq!(
            kind(explain(&input(BUNNY, "akamai", &["k=nothex".to_owned()], 1))),
            Some(super::super::Kind::Usage)
        );
        assert_eq!(kind(explain(&input(BUNNY, "bunny", &["novalue".to_owned()], 1))), Some(super::super::Kind::Usage));
        assert_eq!(
            kind(explain(&input(BUNNY, "bunny", &["k=ed25519:AAAA".to_owned()], 1))),
            Some(super::super::Kind::Usage)
        );
        assert_eq!(kind(explain(&input("ftp://x/y", "bunny", &keys, 1))), Some(super::super::Kind::Usage));
    }

    #[test]
    fn settings_come_from_toml_with_the_vendors_defaults_for_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("akamai.toml");
        std::fs::write(&path, "token_name = \"hdnts\"\nalgorithm = \"sha1\"\n").unwrap();
        let Config::Akamai(c) = settings(Format::Akamai, &path).unwrap() else { panic!("akamai") };
        assert_eq!((c.token_name.as_str(), c.algorithm), ("hdnts", stile_foreign::Hash::Sha1));
        assert_eq!(c.field_delimiter, '~', "unset fields keep Akamai's defaults");
        std::fs::write(&path, "tokn_name = \"x\"\n").unwrap();
        let err = settings(Format::Akamai, &path).err().unwrap();
        assert!(err.message.contains("unknown field"), "{}", err.message);
        let nginx = dir.path().join("nginx.toml");
        std::fs::write(&nginx, "[secure_link_secret]\nlocation = \"/p/\"\nrewrite_to = \"/secure/\"\n").unwrap();
        assert!(matches!(
            settings(Format::NginxSecureLink, &nginx).unwrap(),
            Config::NginxSecureLink(stile_foreign::nginx::Config::SecureLinkSecret { .. })
        ));
    }
}
