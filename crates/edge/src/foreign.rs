//! Other vendors' signed links at the edge (`docs/migration.md`): the
//! `[[foreign]]` entries of the configuration and the judgement of a request
//! that carries no Stile token (the keys are the state's `foreign_keys`,
//! [`crate::state::ForeignKeys`]).
//!
//! The proxy asks this module only when the Stile validator found no Stile token
//! (`missing`, or a `malformed` path with no token anywhere): a request carrying a
//! Stile token is judged by it alone. The entries are tried in order; the first
//! whose hosts, path prefixes and sunset (`refuse_after`) admit the request and whose
//! format finds a token in it decides. Locating, signatures, windows, scopes,
//! addresses and countries are `stile_foreign`'s (pure, fuzzed); this module adds
//! what the edge owns: which entry applies, the keys of the current state,
//! revocations (by the link's id as a subject, by path prefix), staleness, and the
//! token-free upstream target.

use std::net::IpAddr;

use serde::Deserialize;
use stile_foreign::{Carry, Config as FormatConfig, Format, Scope, bunny, google, nginx};
use stile_token::{Country, Reason, UnknownCountry};

use crate::state::State;
use crate::transport::Transport;

/// One `[[foreign]]` entry: an old vendor's link format accepted on some hosts and
/// path prefixes until a sunset. Mirrored in `docs/migration.md` and `docs/edge.md`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForeignConfig {
    /// The format: `akamai`, `cloud-cdn`, `media-cdn`, `bunny` or `nginx-secure-link`.
    pub format: String,
    /// Hosts (the request's `Host`, port ignored, case-insensitive) the entry applies
    /// to. Empty: every host.
    pub hosts: Vec<String>,
    /// Canonical path prefixes, each ending in `/`, that the entry applies to (the
    /// path once the token is removed). Empty: every path.
    pub path_prefixes: Vec<String>,
    /// The sunset: from this instant on (RFC 3339 with an offset, as a TOML datetime
    /// or string, or Unix seconds) the entry is ignored, so its links get `missing`.
    pub refuse_after: Option<toml::Value>,
    /// Akamai settings (`[foreign.akamai]`, `stile_foreign::akamai::Config`).
    pub akamai: Option<stile_foreign::akamai::Config>,
    /// Cloud CDN settings (`[foreign.cloud-cdn]`).
    #[serde(rename = "cloud-cdn")]
    pub cloud_cdn: Option<google::CloudCdnConfig>,
    /// Media CDN settings (`[foreign.media-cdn]`).
    #[serde(rename = "media-cdn")]
    pub media_cdn: Option<google::MediaCdnConfig>,
    /// Bunny settings (`[foreign.bunny]`).
    pub bunny: Option<bunny::Config>,
    /// nginx settings (`[foreign.nginx-secure-link.secure_link]` or `….secure_link_secret]`).
    #[serde(rename = "nginx-secure-link")]
    pub nginx_secure_link: Option<nginx::Config>,
}

/// Most `[[foreign]]` entries.
pub(crate) const MAX_ENTRIES: usize = 16;

/// One entry, checked and compiled.
#[derive(Clone, Debug)]
struct Entry {
    config: FormatConfig,
    hosts: Vec<String>,
    prefixes: Vec<String>,
    refuse_after: Option<u64>,
}

/// Every `[[foreign]]` entry, compiled once from the configuration.
#[derive(Clone, Debug, Default)]
pub struct ForeignGate {
    entries: Vec<Entry>,
}

impl ForeignGate {
    /// Checks and compiles the entries; the error names the field.
    pub fn new(configs: &[ForeignConfig]) -> Result<ForeignGate, (String, String)> {
        if configs.len() > MAX_ENTRIES {
            return Err(("foreign".into(), format!("at most {MAX_ENTRIES} entries")));
        }
        let mut entries = Vec::with_capacity(configs.len());
        for (i, c) in configs.iter().enumerate() {
            let field = |f: &str| format!("foreign[{i}].{f}");
            let format = Format::from_name(&c.format).ok_or_else(|| {
                (
                    field("format"),
                    format!("{:?} is not akamai, cloud-cdn, media-cdn, bunny or nginx-secure-link", c.format),
                )
            })?;
            let tables = [
                c.akamai.is_some(),
                c.cloud_cdn.is_some(),
                c.media_cdn.is_some(),
                c.bunny.is_some(),
                c.nginx_secure_link.is_some(),
            ];
            let own = Format::ALL.iter().position(|f| *f == format).unwrap_or(0);
            if tables.iter().enumerate().any(|(j, &set)| set && j != own) {
                return Err((field(c.format.as_str()), "settings of another format than `format`".into()));
            }
            let config = match format {
                Format::Akamai => c.akamai.clone().map(FormatConfig::Akamai),
                Format::CloudCdn => c.cloud_cdn.clone().map(FormatConfig::CloudCdn),
                Format::MediaCdn => c.media_cdn.clone().map(FormatConfig::MediaCdn),
                Format::Bunny => c.bunny.clone().map(FormatConfig::Bunny),
                Format::NginxSecureLink => c.nginx_secure_link.clone().map(FormatConfig::NginxSecureLink),
            }
            .unwrap_or_else(|| FormatConfig::default_for(format));
            config.validate().map_err(|e| (field(format.as_str()), e.to_string()))?;
            let mut hosts = Vec::with_capacity(c.hosts.len());
            for h in &c.hosts {
                let ok = !h.is_empty()
                    && h.len() <= 253
                    && h.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':'));
                if !ok {
                    return Err((field("hosts"), format!("{h:?} is not a host name")));
                }
                hosts.push(h.to_ascii_lowercase());
            }
            for p in &c.path_prefixes {
                if !p.ends_with('/') || !stile_token::is_canonical(p) {
                    return Err((field("path_prefixes"), format!("{p:?} is not a canonical path ending in `/`")));
                }
            }
            let refuse_after = match &c.refuse_after {
                None => None,
                Some(v) => Some(
                    unix_seconds(v)
                        .ok_or_else(|| (field("refuse_after"), "expected an RFC 3339 time with an offset".into()))?,
                ),
            };
            entries.push(Entry { config, hosts, prefixes: c.path_prefixes.clone(), refuse_after });
        }
        Ok(ForeignGate { entries })
    }

    /// Whether any entry is configured.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether some entry is Media CDN (whose dual tokens may sign request headers).
    pub(crate) fn needs_headers(&self) -> bool {
        self.entries.iter().any(|e| e.config.format() == Format::MediaCdn)
    }

    /// The cookie names the entries' formats read, so they never reach the origin.
    pub(crate) fn cookie_names(&self) -> Vec<&str> {
        let mut names = Vec::new();
        for e in &self.entries {
            let name = match &e.config {
                FormatConfig::Akamai(c) if c.cookie => c.token_name.as_str(),
                FormatConfig::CloudCdn(c) if c.cookie => c.cookie_name.as_str(),
                FormatConfig::MediaCdn(c) if c.cookie => c.cookie_name.as_str(),
                _ => continue,
            };
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }

    /// Judges a request that carries no Stile token. `None`: no entry applies, or no
    /// entry's format found a token (the Stile verdict stands). `country` is called
    /// at most once, for formats with country rules (Bunny).
    pub fn judge<G>(&self, state: &State, input: &ForeignInput<'_>, country: G) -> Option<ForeignVerdict>
    where
        G: FnOnce() -> Option<Country>,
    {
        let mut country = Some(country);
        for (index, e) in self.entries.iter().enumerate() {
            if e.refuse_after.is_some_and(|t| input.now >= t) || !e.host_matches(input.host) {
                continue;
            }
            let format = e.config.format();
            let found = match e.config.locate(input.target, input.cookies) {
                Ok(None) => continue,
                Ok(Some(found)) => found,
                Err(reason) => {
                    if e.raw_applies(input.target) {
                        return Some(ForeignVerdict::denied(index, format, Transport::None, reason));
                    }
                    continue;
                }
            };
            if !e.path_applies(&found.path) {
                continue;
            }
            let transport = match found.transport {
                stile_foreign::Transport::Path => Transport::Path,
                stile_foreign::Transport::Query => Transport::Query,
                stile_foreign::Transport::Cookie => Transport::Cookie,
            };
            let keys = state.foreign_keys.get(format);
            let looked_up = if format == Format::Bunny { country.take().and_then(|f| f()) } else { None };
            let req = stile_foreign::Request {
                scheme: input.scheme,
                host: input.host,
                client_ip: input.client_ip,
                country: looked_up,
                now: input.now,
                leeway_secs: input.leeway_secs,
                unknown_country: input.unknown_country,
                headers: input.headers,
            };
            let verified = match e.config.verify(&found, keys, &req) {
                Ok(v) => v,
                Err(reason) => return Some(ForeignVerdict::denied(index, format, transport, reason)),
            };
            let issued = verified.not_before.unwrap_or(0);
            let result = if state.revocations.foreign_revoked(verified.token_id, issued, &found.path) {
                Err(Reason::Revoked)
            } else if input.stale {
                Err(Reason::StaleState)
            } else {
                Ok(())
            };
            let carry_query = match (verified.carry, verified.scope) {
                (_, Scope::Exact(_)) => None,
                (Some(Carry::Query(pairs)), _) => {
                    pairs.split_once('=').map(|(name, value)| (name.to_owned(), value.to_owned()))
                }
                _ => None,
            };
            let cookie = carry_query.as_ref().and_then(|(param, value)| {
                let name = e.cookie_for(param)?;
                let path = cookie_path(&verified.scope)?;
                let ok = value.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b';' | b',' | b'"' | b'\\'));
                ok.then(|| ForeignCookie {
                    name: name.to_owned(),
                    value: value.clone(),
                    path,
                    expires: verified.expires,
                })
            });
            return Some(ForeignVerdict {
                entry: index,
                format,
                transport,
                result,
                upstream_target: Some(found.upstream.clone().into_bytes()),
                path: found.path.clone(),
                token_id: verified.token_id.map(str::to_owned),
                key_name: Some(verified.key_name.to_owned()),
                carry_query,
                cookie,
            });
        }
        None
    }
}

impl Entry {
    fn host_matches(&self, host: &str) -> bool {
        let host = without_port(host);
        self.hosts.is_empty() || self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
    }

    /// The cookie that holds the same token as query parameter `param`, when the
    /// format reads cookies: Akamai's `token_name`, Media CDN's cookie for dual tokens.
    fn cookie_for(&self, param: &str) -> Option<&str> {
        match &self.config {
            FormatConfig::Akamai(c) if c.cookie && c.token_name == param => Some(&c.token_name),
            FormatConfig::MediaCdn(c) if c.cookie && c.token_name == param => Some(&c.cookie_name),
            _ => None,
        }
    }

    fn path_applies(&self, canonical: &str) -> bool {
        self.prefixes.is_empty() || self.prefixes.iter().any(|p| canonical.starts_with(p.as_str()))
    }

    /// For a token that cannot be located (an ambiguous path, a token given twice):
    /// whether the raw target is under one of the prefixes, or starts with a
    /// `name=value` segment (the path forms), so the denial is this entry's.
    fn raw_applies(&self, target: &[u8]) -> bool {
        let first = target.get(1..).unwrap_or_default();
        let first = &first[..first.iter().position(|&b| b == b'/').unwrap_or(first.len())];
        self.prefixes.is_empty()
            || self.prefixes.iter().any(|p| target.starts_with(p.as_bytes()))
            || first.contains(&b'=')
    }
}

/// A `Host` value without its port (`[v6]:443` → `[v6]`).
fn without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// A `Host` value without the scheme's default port (`:80` for http, `:443` for https).
pub(crate) fn without_default_port<'a>(host: &'a str, scheme: &str) -> &'a str {
    let default = if scheme == "https" { ":443" } else { ":80" };
    host.strip_suffix(default).unwrap_or(host)
}

/// What a request brings to foreign validation.
#[derive(Clone, Copy, Debug)]
pub struct ForeignInput<'a> {
    /// The raw request target.
    pub target: &'a [u8],
    /// The raw `Cookie` header values.
    pub cookies: &'a [&'a [u8]],
    /// `http` or `https`, as the client used it.
    pub scheme: &'a str,
    /// The `Host`, lower case, without the scheme's default port (entries match it
    /// without any port).
    pub host: &'a str,
    /// The client address.
    pub client_ip: Option<IpAddr>,
    /// Request headers (Media CDN `Headers`); empty unless `ForeignGate::needs_headers`.
    pub headers: &'a [(&'a str, &'a [u8])],
    /// Now, Unix seconds.
    pub now: u64,
    /// `token.leeway_secs`.
    pub leeway_secs: u32,
    /// `token.unknown_country`.
    pub unknown_country: UnknownCountry,
    /// Whether the state is stale under `stale_policy = "deny"`.
    pub stale: bool,
}

/// The judgement of a foreign link.
#[derive(Clone, Debug)]
pub struct ForeignVerdict {
    /// Which `[[foreign]]` entry (index) decided.
    pub entry: usize,
    /// The format.
    pub format: Format,
    /// Where the link was.
    pub transport: Transport,
    /// `Ok` when admitted, else the one reason.
    pub result: Result<(), Reason>,
    /// The token-free target for the origin (and the cache key).
    pub upstream_target: Option<Vec<u8>>,
    /// The canonical path, token removed (empty when denied).
    pub path: String,
    /// The vendor's link id (Akamai `id`, Media CDN `SessionID`), once verified.
    pub token_id: Option<String>,
    /// The name of the key that verified the link.
    pub key_name: Option<String>,
    /// The query pair (`name`, `value`) that carries the link to child URIs of a
    /// manifest, when the format and scope allow it. A credential: never logged.
    pub carry_query: Option<(String, String)>,
    /// The same link as the format's cookie, for cookie mode: Akamai ACL tokens and
    /// Media CDN dual tokens (the formats whose cookie holds the query's token as is).
    pub cookie: Option<ForeignCookie>,
}

/// A foreign link as the vendor's own cookie (a credential: never logged).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForeignCookie {
    /// The format's cookie name.
    pub name: String,
    /// The token, as in the query.
    pub value: String,
    /// The directory the link's scope covers (its literal prefix, to the last `/`).
    pub path: String,
    /// The link's expiry, if it has one.
    pub expires: Option<u64>,
}

/// The `Path` of a cookie carrying a link: the directory of the scope's literal
/// prefix (every glob's, in common), or `None` when it has none usable.
fn cookie_path(scope: &Scope<'_>) -> Option<String> {
    let literal = match *scope {
        Scope::Exact(_) => return None,
        Scope::PathPrefix(p) => p.to_owned(),
        Scope::UrlPrefix(u) => {
            let rest = u.split_once("://")?.1;
            rest[rest.find('/')?..].to_owned()
        }
        Scope::Globs { list, separators } => {
            let mut common: Option<&str> = None;
            for g in list.split(|c: char| c.is_ascii() && separators.contains(&(c as u8))).filter(|g| !g.is_empty()) {
                let lit = &g[..g.find(['*', '?']).unwrap_or(g.len())];
                common = Some(match common {
                    None => lit,
                    Some(c) => &c[..c.bytes().zip(lit.bytes()).take_while(|(a, b)| a == b).count()],
                });
            }
            common?.to_owned()
        }
    };
    let dir = &literal[..=literal.rfind('/')?];
    let safe = dir.starts_with('/') && dir.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b';' | b','));
    safe.then(|| dir.to_owned())
}

impl ForeignVerdict {
    fn denied(entry: usize, format: Format, transport: Transport, reason: Reason) -> ForeignVerdict {
        ForeignVerdict {
            entry,
            format,
            transport,
            result: Err(reason),
            upstream_target: None,
            path: String::new(),
            token_id: None,
            key_name: None,
            carry_query: None,
            cookie: None,
        }
    }
}

/// Unix seconds of a TOML datetime (with a date, a time and an offset), of the same
/// as a string, or of an integer.
fn unix_seconds(v: &toml::Value) -> Option<u64> {
    let dt = match v {
        toml::Value::Integer(i) => return u64::try_from(*i).ok(),
        toml::Value::Datetime(d) => *d,
        toml::Value::String(s) => s.parse::<toml::value::Datetime>().ok()?,
        _ => return None,
    };
    let (date, time, offset) = (dt.date?, dt.time?, dt.offset?);
    let offset_secs = match offset {
        toml::value::Offset::Z => 0,
        toml::value::Offset::Custom { minutes } => i64::from(minutes) * 60,
    };
    let days = days_from_civil(i64::from(date.year), i64::from(date.month), i64::from(date.day));
    let secs = days * 86_400 + i64::from(time.hour) * 3600 + i64::from(time.minute) * 60 + i64::from(time.second)
        - offset_secs;
    u64::try_from(secs).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's published algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{ForeignKeyEntry, ForeignKeys};

    fn gate(toml_text: &str) -> Result<ForeignGate, (String, String)> {
        #[derive(Deserialize)]
        struct Top {
            foreign: Vec<ForeignConfig>,
        }
        let top: Top = toml::from_str(toml_text).map_err(|e| ("toml".into(), e.to_string()))?;
        ForeignGate::new(&top.foreign)
    }

    /// 2027-06-30T00:00:00Z (Python's `calendar.timegm`).
    const SUNSET: u64 = 1_814_313_600;

    #[test]
    fn sunsets_parse_as_rfc3339() {
        let v = |s: &str| unix_seconds(&toml::Value::String(s.into()));
        assert_eq!(v("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(v("2027-06-30T00:00:00Z"), Some(SUNSET));
        assert_eq!(v("2027-06-30T02:00:00+02:00"), Some(SUNSET));
        assert_eq!(v("2027-06-30"), None, "a date without a time and offset is refused");
        assert_eq!(v("2027-06-30T00:00:00"), None, "a local time is refused");
        assert_eq!(unix_seconds(&toml::Value::Integer(5)), Some(5));
    }

    #[test]
    fn cookie_paths_are_the_scopes_directory() {
        let globs = |list| cookie_path(&Scope::Globs { list, separators: b"!" });
        assert_eq!(globs("/vod/abc/*").as_deref(), Some("/vod/abc/"));
        assert_eq!(globs("/vod/abc/*!/vod/abd/*").as_deref(), Some("/vod/"));
        assert_eq!(globs("/vod/ab*").as_deref(), Some("/vod/"));
        assert_eq!(globs("*").as_deref(), None);
        assert_eq!(cookie_path(&Scope::UrlPrefix("https://h:8443/live/x")).as_deref(), Some("/live/"));
        assert_eq!(cookie_path(&Scope::PathPrefix("/vod/abc/")).as_deref(), Some("/vod/abc/"));
        assert_eq!(cookie_path(&Scope::Exact("/vod/a.ts")), None);
        assert_eq!(cookie_path(&Scope::PathPrefix("/a;b/")), None);
    }

    #[test]
    fn entries_are_checked() {
        let ok = gate(
            "[[foreign]]\nformat = \"akamai\"\nhosts = [\"Media.Example.com\"]\npath_prefixes = [\"/vod/\"]\n\
             refuse_after = 2027-06-30T00:00:00Z\n[foreign.akamai]\ntoken_name = \"hdnts\"\n\
             [[foreign]]\nformat = \"nginx-secure-link\"\n[foreign.nginx-secure-link.secure_link_secret]\n\
             location = \"/p/\"\nrewrite_to = \"/secure/\"\n",
        )
        .unwrap();
        assert_eq!(ok.entries.len(), 2);
        assert_eq!(ok.entries[0].hosts, vec!["media.example.com".to_owned()]);
        assert_eq!(ok.entries[0].refuse_after, Some(SUNSET));
        assert_eq!(ok.cookie_names(), vec!["hdnts"]);
        for (bad, field) in [
            ("[[foreign]]\nformat = \"fastly\"\n", "foreign[0].format"),
            ("[[foreign]]\nformat = \"bunny\"\n[foreign.akamai]\n", "foreign[0].bunny"),
            ("[[foreign]]\nformat = \"bunny\"\npath_prefixes = [\"/vod\"]\n", "foreign[0].path_prefixes"),
            ("[[foreign]]\nformat = \"bunny\"\npath_prefixes = [\"/a/../\"]\n", "foreign[0].path_prefixes"),
            ("[[foreign]]\nformat = \"bunny\"\nrefuse_after = \"soon\"\n", "foreign[0].refuse_after"),
            ("[[foreign]]\nformat = \"bunny\"\nhosts = [\"a b\"]\n", "foreign[0].hosts"),
            ("[[foreign]]\nformat = \"akamai\"\n[foreign.akamai]\nfield_delimiter = \"a\"\n", "foreign[0].akamai"),
        ] {
            assert_eq!(gate(bad).unwrap_err().0, field, "{bad}");
        }
    }

    #[test]
    fn state_keys_decode_by_format_and_never_print() {
        let e = |format: &str, name: &str, key: &str| ForeignKeyEntry {
            format: format.into(),
            name: name.into(),
            key: key.into(),
        };
        let keys = ForeignKeys::decode(&[
            e("akamai", "primary", "52a152a152a1"),
            e("cloud-cdn", "my-key", "nZtRohdNF9m3cKM24IcK4w=="),
            e("media-cdn", "pub", "ed25519:n7nwvhza11C0SuU9ay1uWjDSfzH+CpIBgXxqIz+Yd9Q="),
            e("bunny", "zone", "security-key"),
        ])
        .unwrap();
        assert_eq!(keys.len(), 4);
        assert_eq!(keys.get(Format::Akamai).iter().next().unwrap().name(), "primary");
        assert!(keys.get(Format::MediaCdn).iter().next().unwrap().is_ed25519());
        assert!(keys.get(Format::NginxSecureLink).is_empty());
        assert_eq!(format!("{:?}", e("bunny", "zone", "security-key")), "ForeignKeyEntry(bunny, \"zone\", <redacted>)");
        let err = |entries: &[ForeignKeyEntry]| ForeignKeys::decode(entries).unwrap_err();
        assert_eq!(err(&[e("fastly", "a", "b")]), "foreign_keys[0]: unknown format");
        assert!(err(&[e("akamai", "a", "xyz")]).starts_with("foreign_keys[0]: key \"a\" is not valid hex"));
        assert!(err(&[e("bunny", "a", "ed25519:AAAA")]).contains("Media CDN's only"));
        assert!(err(&[e("bunny", "a", "x"), e("bunny", "a", "y")]).contains("duplicate"));
    }

    /// Google's published dual token with every field (python-docs-samples,
    /// media_cdn/dualtoken_test.py; the key is the sample's public half).
    const DUAL: &str = "PathGlobs=/*~Starts=1663027200~Expires=1663070400~SessionID=test-id~Data=test-data~Headers=Foo,BAZ~IPRanges=MjAzLjAuMTEzLjAvMjQsMjAwMTpkYjg6NGE3ZjphNzMyLzY0~Signature=A7u67hveGxGvP8KBWZlUuH0IsqhS4a2lcsXwy3uc4X3zaVuw7LY-2FQT1ZF8UxkSFAsDS3_0LYnXwXB2XdepDg";
    const DUAL_GLOBS: &str = "PathGlobs=/*~Expires=1663070400~Signature=9pBdD_6O6LB-4V67HZ_SOc2G_jIkSZ_tMsKnVqElmPlwKB_xDiW7DKAnv8L8CmweeZquaLFlnLogbMcIV8bNCQ";
    const DUAL_STARTS: u64 = 1_663_027_200;
    const DUAL_PUBLIC: &str = "ed25519:n7nwvhza11C0SuU9ay1uWjDSfzH+CpIBgXxqIz+Yd9Q=";

    fn media_state(revocations: &[crate::state::RevocationEntry]) -> State {
        let key = ForeignKeyEntry { format: "media-cdn".into(), name: "ed".into(), key: DUAL_PUBLIC.into() };
        State {
            foreign_keys: ForeignKeys::decode(&[key]).unwrap(),
            revocations: crate::state::revocation_set(revocations, 0),
            ..State::default()
        }
    }

    fn judge_dual(
        gate: &ForeignGate,
        state: &State,
        target: &str,
        host: &str,
        now: u64,
        stale: bool,
    ) -> Option<ForeignVerdict> {
        let headers: [(&str, &[u8]); 2] = [("foo", b"bar"), ("baz", b"quux")];
        let input = ForeignInput {
            target: target.as_bytes(),
            cookies: &[],
            scheme: "http",
            host,
            client_ip: Some("203.0.113.200".parse().unwrap()),
            headers: &headers,
            now,
            leeway_secs: 0,
            unknown_country: UnknownCountry::Deny,
            stale,
        };
        gate.judge(state, &input, || None)
    }

    #[test]
    fn a_media_cdn_dual_token_is_judged_with_revocation_by_session_id() {
        let gate = gate(
            "[[foreign]]\nformat = \"media-cdn\"\nhosts = [\"10.20.30.40\"]\npath_prefixes = [\"/live/\"]\n\
             refuse_after = 1663070000\n",
        )
        .unwrap();
        let target = format!("/live/example.m3u8?x=1&edge-cache-token={DUAL}");
        let at = DUAL_STARTS + 60;
        let v = judge_dual(&gate, &media_state(&[]), &target, "10.20.30.40:80", at, false).unwrap();
        assert_eq!(v.result, Ok(()));
        assert_eq!(
            (v.format, v.transport, v.token_id.as_deref()),
            (Format::MediaCdn, Transport::Query, Some("test-id"))
        );
        assert_eq!(v.upstream_target.as_deref(), Some(&b"/live/example.m3u8?x=1"[..]));
        assert_eq!(v.path, "/live/example.m3u8");
        assert_eq!(v.carry_query, Some(("edge-cache-token".to_owned(), DUAL.to_owned())), "globs carry onward");
        assert_eq!(v.cookie, None, "`Headers=Foo,BAZ`: a comma has no place in a cookie value");
        let globs = format!("/live/example.m3u8?edge-cache-token={DUAL_GLOBS}");
        let v = judge_dual(&gate, &media_state(&[]), &globs, "10.20.30.40", at, false).unwrap();
        let cookie = v.cookie.unwrap();
        assert_eq!((cookie.name.as_str(), cookie.path.as_str()), ("Edge-Cache-Cookie", "/"));
        assert_eq!((cookie.value.as_str(), cookie.expires), (DUAL_GLOBS, Some(1_663_070_400)));
        // Other hosts, other prefixes, and after the sunset: not this entry's.
        assert!(judge_dual(&gate, &media_state(&[]), &target, "cdn.example", at, false).is_none());
        let other = format!("/vod/example.m3u8?edge-cache-token={DUAL}");
        assert!(judge_dual(&gate, &media_state(&[]), &other, "10.20.30.40", at, false).is_none());
        assert!(judge_dual(&gate, &media_state(&[]), &target, "10.20.30.40", 1_663_070_000, false).is_none());
        // A hostile path under the prefix is this entry's `malformed`.
        let hostile = format!("/live/a/%2e%2e/example.m3u8?edge-cache-token={DUAL}");
        let v = judge_dual(&gate, &media_state(&[]), &hostile, "10.20.30.40", at, false).unwrap();
        assert_eq!(v.result, Err(Reason::Malformed));
        // `SessionID` as a subject: links starting before `issued_before` are revoked.
        let subject = |before| crate::state::RevocationEntry {
            kind: crate::state::RevocationKind::Subject,
            value: "test-id".into(),
            issued_before: Some(before),
            expires_at: 0,
        };
        let judged = |state: &State| judge_dual(&gate, state, &target, "10.20.30.40", at, false).unwrap().result;
        assert_eq!(judged(&media_state(&[subject(DUAL_STARTS + 1)])), Err(Reason::Revoked));
        assert_eq!(judged(&media_state(&[subject(DUAL_STARTS)])), Ok(()), "a link starting at the cut-off is newer");
        let prefix = crate::state::RevocationEntry {
            kind: crate::state::RevocationKind::Prefix,
            value: "/live/".into(),
            issued_before: Some(DUAL_STARTS + 1),
            expires_at: 0,
        };
        assert_eq!(judged(&media_state(&[prefix])), Err(Reason::Revoked));
        // Stale state under `stale_policy = "deny"`; no key at all.
        let stale = judge_dual(&gate, &media_state(&[]), &target, "10.20.30.40", at, true).unwrap();
        assert_eq!(stale.result, Err(Reason::StaleState));
        let keyless = judge_dual(&gate, &State::default(), &target, "10.20.30.40", at, false).unwrap();
        assert_eq!((keyless.result, keyless.token_id), (Err(Reason::UnknownKey), None));
        // A tampered session id does not verify.
        let forged = target.replace("SessionID=test-id", "SessionID=test-ie");
        let v = judge_dual(&gate, &media_state(&[]), &forged, "10.20.30.40", at, false).unwrap();
        assert_eq!(v.result, Err(Reason::BadSignature));
    }
}
