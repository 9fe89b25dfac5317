//! Who the client is: its address (socket peer, or `X-Forwarded-For` behind a
//! configured number of trusted hops) and its country (a MaxMind `.mmdb` file or
//! a header set by a trusted layer in front).

use std::net::IpAddr;
use std::path::Path;

use http::HeaderName;
use stile_token::Country;

use crate::config::ClientConfig;

/// Where countries come from.
#[derive(Debug)]
pub(crate) enum Geo {
    /// No source: every country is unknown (country-bound tokens follow `token.unknown_country`).
    None,
    /// A header set by a trusted layer in front (e.g. `cf-ipcountry`).
    Header(HeaderName),
    /// A MaxMind country or city database, held in memory.
    Mmdb(Box<maxminddb::Reader<Vec<u8>>>),
}

/// Why the geo source could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    /// The database file is unreadable or corrupt.
    #[error("cannot open GeoIP database {path}: {message}")]
    Database {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The header name is invalid.
    #[error("invalid client.country_header {0:?}")]
    Header(String),
}

impl Geo {
    /// Opens the configured source; a database is verified in full, so a corrupt file fails here.
    pub(crate) fn open(config: &ClientConfig) -> Result<Geo, GeoError> {
        if !config.country_header.is_empty() {
            let name = HeaderName::from_bytes(config.country_header.to_ascii_lowercase().as_bytes())
                .map_err(|_| GeoError::Header(config.country_header.clone()))?;
            return Ok(Geo::Header(name));
        }
        if config.geoip_db.is_empty() {
            return Ok(Geo::None);
        }
        let path = Path::new(&config.geoip_db);
        let err =
            |e: maxminddb::MaxMindDbError| GeoError::Database { path: config.geoip_db.clone(), message: e.to_string() };
        let reader = maxminddb::Reader::open_readfile(path).map_err(err)?;
        reader.verify().map_err(err)?;
        Ok(Geo::Mmdb(Box::new(reader)))
    }

    /// The client's country from its address or the trusted header value.
    pub(crate) fn country(&self, ip: Option<IpAddr>, header: Option<&[u8]>) -> Option<Country> {
        match self {
            Geo::None => None,
            Geo::Header(_) => Country::from_client(header?),
            Geo::Mmdb(reader) => lookup(reader, ip?),
        }
    }

    /// The trusted header to read, if that is the source.
    pub(crate) fn header(&self) -> Option<&HeaderName> {
        match self {
            Geo::Header(h) => Some(h),
            _ => None,
        }
    }
}

fn lookup(reader: &maxminddb::Reader<Vec<u8>>, ip: IpAddr) -> Option<Country> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let found = reader.lookup(ip).ok()?;
    let code = |field| {
        found.decode_path::<&str>(&[maxminddb::PathElement::Key(field), maxminddb::PathElement::Key("iso_code")])
    };
    let iso = code("country").ok().flatten().or_else(|| code("registered_country").ok().flatten())?;
    Country::from_client(iso.as_bytes())
}

/// The client address: the socket peer, or with `trusted_hops` = n > 0 the n-th
/// address from the right of `X-Forwarded-For` (each trusted hop appends the
/// address it received the request from). Too few entries or an unparsable one: unknown.
pub(crate) fn client_ip<'a, I>(peer: Option<IpAddr>, trusted_hops: usize, xff: I) -> Option<IpAddr>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    if trusted_hops == 0 {
        return peer;
    }
    // Headers in order, entries in order: the n-th from the right over all of them.
    let mut entries: [&[u8]; 16] = [&[]; 16];
    let mut n = 0usize;
    for h in xff {
        for e in h.split(|&b| b == b',') {
            entries[n % 16] = e.trim_ascii();
            n += 1;
        }
    }
    if trusted_hops > n || trusted_hops > 16 {
        return None;
    }
    let e = entries[(n - trusted_hops) % 16];
    std::str::from_utf8(e).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/data/geoip");

    fn db(name: &str) -> Result<Geo, GeoError> {
        Geo::open(&ClientConfig { geoip_db: format!("{DIR}/{name}"), ..ClientConfig::default() })
    }

    #[test]
    fn mmdb_countries_match_the_test_data() {
        let g = db("GeoLite2-Country-Test.mmdb").unwrap();
        let c = |ip: &str| g.country(Some(ip.parse().unwrap()), None).map(|c| c.to_string());
        assert_eq!(c("81.2.69.142").as_deref(), Some("GB"));
        assert_eq!(c("50.114.0.1").as_deref(), Some("US"));
        assert_eq!(c("89.160.20.113").as_deref(), Some("SE"));
        assert_eq!(c("2001:218::1").as_deref(), Some("JP"));
        assert_eq!(c("::ffff:81.2.69.142").as_deref(), Some("GB"));
        assert_eq!(c("127.0.0.1"), None);
    }

    #[test]
    fn corrupt_mmdb_is_refused() {
        let e = db("GeoIP2-City-Test-Invalid-Node-Count.mmdb").unwrap_err();
        assert!(e.to_string().contains("Invalid-Node-Count"), "{e}");
        assert!(db("does-not-exist.mmdb").is_err());
    }

    #[test]
    fn header_source() {
        let g = Geo::open(&ClientConfig { country_header: "CF-IPCountry".into(), ..ClientConfig::default() }).unwrap();
        assert_eq!(g.header().map(HeaderName::as_str), Some("cf-ipcountry"));
        assert_eq!(g.country(None, Some(b"se")).map(|c| c.to_string()).as_deref(), Some("SE"));
        assert_eq!(g.country(None, Some(b"XXX")), None);
        // Cloudflare's "unknown" and Tor markers are unknown, not countries.
        assert_eq!(g.country(None, Some(b"XX")), None);
        assert_eq!(g.country(None, Some(b"T1")), None);
        assert_eq!(g.country(None, None), None);
    }

    #[test]
    fn forwarded_for_hops() {
        let peer = Some("10.0.0.1".parse().unwrap());
        let ip = |hops, hs: &[&str]| client_ip(peer, hops, hs.iter().map(|h| h.as_bytes())).map(|i| i.to_string());
        assert_eq!(ip(0, &["1.1.1.1"]).as_deref(), Some("10.0.0.1"));
        assert_eq!(ip(1, &["6.6.6.6, 1.1.1.1"]).as_deref(), Some("1.1.1.1"));
        assert_eq!(ip(2, &["6.6.6.6, 1.1.1.1", "2.2.2.2"]).as_deref(), Some("1.1.1.1"));
        assert_eq!(ip(2, &["1.1.1.1"]), None);
        assert_eq!(ip(1, &[]), None);
        assert_eq!(ip(1, &["junk"]), None);
    }
}
