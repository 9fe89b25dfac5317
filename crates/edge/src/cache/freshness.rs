//! Video-aware freshness: whether an origin response is stored, and for how long.
//!
//! The origin's `Cache-Control` and `Expires` come first (`no-store` and
//! `private` are never stored; `s-maxage` over `max-age` over `Expires`;
//! `no-cache` is stored but revalidated on every use; `stale-while-revalidate`
//! and `stale-if-error` honoured, and refused after `must-revalidate`,
//! `proxy-revalidate` or `s-maxage`, as RFC 9111 reads). When the origin says
//! nothing, `[cache.ttl]` gives a lifetime per object kind and status. Playlists
//! and MPDs get theirs from their own text once the fill is complete
//! ([`body_ttl`]): a live media playlist lives half a target duration, an LL-HLS
//! one a second, a finished one much longer.
//!
//! `Set-Cookie` is never stored; neither are headers named by `private=` or
//! `no-cache=`. Pure: the time is an argument.

use std::time::{Duration, SystemTime};

use pingora::cache::NoCacheReason;
use pingora::cache::cache_control::{CacheControl, Cacheable, InterpretCacheControl};
use pingora::cache::filters::calculate_expires_header_time;
use pingora::http::ResponseHeader;

use super::config::{CacheConfig, TtlConfig};

/// What the object is, by the name of the canonical path (the cache's view of a request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CacheKind {
    /// `.m3u8`: multivariant or media playlist, decided from the body.
    HlsPlaylist,
    /// `.mpd`: static or dynamic, decided from the body.
    Mpd,
    /// A media file whose name contains `init`.
    InitSegment,
    /// A media segment (`.ts`, `.m4s`, `.mp4`, `.aac`, `.vtt`, …).
    Segment,
    /// Anything else.
    Other,
}

const SEGMENT_EXTENSIONS: [&[u8]; 13] =
    [b"ts", b"m4s", b"mp4", b"m4a", b"m4v", b"aac", b"ac3", b"ec3", b"mp3", b"vtt", b"webvtt", b"cmfv", b"cmfa"];

impl CacheKind {
    /// Classifies a canonical path by the extension of its last segment.
    pub(crate) fn of_path(path: &[u8]) -> CacheKind {
        let name = path.rsplit(|&b| b == b'/').next().unwrap_or_default();
        let Some(dot) = name.iter().rposition(|&b| b == b'.') else { return CacheKind::Other };
        let ext = &name[dot + 1..];
        if ext.eq_ignore_ascii_case(b"m3u8") {
            CacheKind::HlsPlaylist
        } else if ext.eq_ignore_ascii_case(b"mpd") {
            CacheKind::Mpd
        } else if SEGMENT_EXTENSIONS.iter().any(|s| ext.eq_ignore_ascii_case(s)) {
            if name.windows(4).any(|w| w.eq_ignore_ascii_case(b"init")) {
                CacheKind::InitSegment
            } else {
                CacheKind::Segment
            }
        } else {
            CacheKind::Other
        }
    }
}

/// A response the cache stores.
#[derive(Debug)]
pub(crate) struct Plan {
    /// When the object was current at the origin (now, less the origin's `Age`).
    pub(crate) updated: SystemTime,
    /// Fresh until then.
    pub(crate) fresh_until: SystemTime,
    /// Stale-while-revalidate window, seconds.
    pub(crate) swr: u32,
    /// Stale-if-error window, seconds.
    pub(crate) sie: u32,
    /// The header as stored (no `Set-Cookie`, no `private=`/`no-cache=` fields).
    pub(crate) header: ResponseHeader,
    /// The lifetime is the kind's default and comes from the body at the end of the fill.
    pub(crate) from_body: Option<BodyKind>,
}

/// A manifest whose default lifetime is read from its text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BodyKind {
    /// HLS playlist; `ll_hls_request`: asked with `_HLS_msn` (a blocking reload).
    Hls {
        /// The request carried `_HLS_msn`.
        ll_hls_request: bool,
    },
    /// DASH MPD.
    Mpd,
}

/// Why a response is not stored (the label in logs; Pingora's reason for its predictor).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Skip {
    /// `no-store`, `private`, or a request with `Authorization` the origin did not allow.
    Origin,
    /// A status the cache does not store, or whose default lifetime is 0.
    Status,
    /// No freshness from the origin and the kind's default is 0.
    NoLifetime,
    /// `Vary` on something other than `Accept-Encoding` or `Origin`.
    Vary,
    /// Larger than `cache.max_object_bytes`.
    TooLarge,
}

impl Skip {
    /// Pingora's reason (its predictor then bypasses the cache for the key next time).
    pub(crate) fn reason(self) -> NoCacheReason {
        match self {
            Skip::Origin => NoCacheReason::OriginNotCache,
            Skip::TooLarge => NoCacheReason::ResponseTooLarge,
            Skip::Status => NoCacheReason::Custom("status"),
            Skip::NoLifetime => NoCacheReason::Custom("no_lifetime"),
            Skip::Vary => NoCacheReason::Custom("vary"),
        }
    }
}

/// Decides whether `resp` is stored and with which freshness.
pub(crate) fn decide(
    resp: &ResponseHeader,
    kind: CacheKind,
    ll_hls_request: bool,
    authorization: bool,
    config: &CacheConfig,
    now: SystemTime,
) -> Result<Plan, Skip> {
    let status = resp.status.as_u16();
    if let Some(len) = content_length(resp)
        && len > config.max_object_bytes
    {
        return Err(Skip::TooLarge);
    }
    let cc = CacheControl::from_resp_headers(resp);
    if cc.as_ref().is_some_and(|c| c.is_cacheable() == Cacheable::No) {
        return Err(Skip::Origin);
    }
    if authorization && !cc.as_ref().is_some_and(|c| c.allow_caching_authorized_req()) {
        return Err(Skip::Origin);
    }
    if !vary_is_harmless(resp) {
        return Err(Skip::Vary);
    }
    let ttl = &config.ttl;
    let default_ttl = match status {
        200 | 203 => Some(kind_ttl(kind, ll_hls_request, ttl)),
        204 | 300 | 301 | 308 => Some(ttl.other_secs),
        404 | 410 => Some(ttl.not_found_secs),
        400..=599 => return stored_error(resp, ttl.error_secs, now),
        _ => None,
    }
    .ok_or(Skip::Status)?;
    let origin_age = header_secs(resp, "age").unwrap_or(0);
    let updated = now.checked_sub(Duration::from_secs(origin_age)).unwrap_or(now);
    let explicit = cc
        .as_ref()
        .and_then(|c| c.fresh_duration())
        // A zero lifetime (`no-cache`, `max-age=0`) is stale at once.
        .map(|d| if d.is_zero() { now - Duration::from_secs(1) } else { updated.checked_add(d).unwrap_or(now) })
        .or_else(|| calculate_expires_header_time(resp));
    let (fresh_until, from_body) = match explicit {
        Some(t) => (t, None),
        None if default_ttl == 0 => return Err(if status == 200 { Skip::NoLifetime } else { Skip::Status }),
        None => {
            let body = match (status, kind) {
                (200 | 203, CacheKind::HlsPlaylist) => Some(BodyKind::Hls { ll_hls_request }),
                (200 | 203, CacheKind::Mpd) => Some(BodyKind::Mpd),
                _ => None,
            };
            (now + Duration::from_secs(default_ttl.into()), body)
        }
    };
    let secs = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
    let swr = cc
        .as_ref()
        .and_then(|c| c.serve_stale_while_revalidate_duration())
        .map_or(config.stale_while_revalidate_secs, secs);
    let sie = cc.as_ref().and_then(|c| c.serve_stale_if_error_duration()).map_or(config.stale_if_error_secs, secs);
    Ok(Plan { updated, fresh_until, swr, sie, header: stored_header(resp, cc.as_ref()), from_body })
}

/// An error answer is stored only for `cache.ttl.error_secs` (origin freshness ignored), never stale.
fn stored_error(resp: &ResponseHeader, secs: u32, now: SystemTime) -> Result<Plan, Skip> {
    if secs == 0 {
        return Err(Skip::Status);
    }
    let cc = CacheControl::from_resp_headers(resp);
    Ok(Plan {
        updated: now,
        fresh_until: now + Duration::from_secs(secs.into()),
        swr: 0,
        sie: 0,
        header: stored_header(resp, cc.as_ref()),
        from_body: None,
    })
}

/// The default lifetime of a kind before its body is seen, seconds.
fn kind_ttl(kind: CacheKind, ll_hls_request: bool, ttl: &TtlConfig) -> u32 {
    match kind {
        // Provisional (the body decides at the end of the fill): the shortest playlist lifetime.
        CacheKind::HlsPlaylist if ll_hls_request => ttl.ll_hls_playlist_secs,
        CacheKind::HlsPlaylist => ttl.ll_hls_playlist_secs.max(1),
        CacheKind::Mpd => ttl.dynamic_mpd_secs.max(1),
        CacheKind::InitSegment => ttl.init_segment_secs,
        CacheKind::Segment => ttl.segment_secs,
        CacheKind::Other => ttl.other_secs,
    }
}

/// The default lifetime of a playlist or MPD from its text, seconds (0: do not keep it).
pub(crate) fn body_ttl(kind: BodyKind, body: &[u8], ttl: &TtlConfig) -> u32 {
    match kind {
        BodyKind::Hls { ll_hls_request } => {
            let mut target = None;
            let (mut multivariant, mut finished, mut parts) = (false, false, ll_hls_request);
            for line in body.split(|&b| b == b'\n').map(<[u8]>::trim_ascii) {
                if line.starts_with(b"#EXT-X-STREAM-INF") || line.starts_with(b"#EXT-X-I-FRAME-STREAM-INF") {
                    multivariant = true;
                } else if line == b"#EXT-X-ENDLIST" || line == b"#EXT-X-PLAYLIST-TYPE:VOD" {
                    finished = true;
                } else if line.starts_with(b"#EXT-X-PART-INF") {
                    parts = true;
                } else if let Some(v) = line.strip_prefix(b"#EXT-X-TARGETDURATION:") {
                    target = std::str::from_utf8(v).ok().and_then(|v| v.trim().parse::<u32>().ok());
                }
            }
            if multivariant {
                ttl.multivariant_playlist_secs
            } else if finished {
                ttl.vod_playlist_secs
            } else if parts {
                ttl.ll_hls_playlist_secs
            } else {
                // Half a target duration (at least a second), capped.
                target.map_or(1, |t| (t / 2).max(1)).min(ttl.live_playlist_max_secs)
            }
        }
        BodyKind::Mpd => {
            let head = &body[..body.len().min(4096)];
            let dynamic = [&b"type=\"dynamic\""[..], b"type='dynamic'"]
                .iter()
                .any(|needle| head.windows(needle.len()).any(|w| w == *needle));
            if dynamic { ttl.dynamic_mpd_secs } else { ttl.static_mpd_secs }
        }
    }
}

/// `Vary` only on `Accept-Encoding` (the edge asks the origin for identity
/// encoding when it caches) or `Origin` (CORS is the edge's).
fn vary_is_harmless(resp: &ResponseHeader) -> bool {
    resp.headers.get_all(http::header::VARY).iter().all(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .all(|f| f.eq_ignore_ascii_case("accept-encoding") || f.eq_ignore_ascii_case("origin"))
        })
    })
}

fn stored_header(resp: &ResponseHeader, cc: Option<&CacheControl>) -> ResponseHeader {
    let mut h = resp.clone();
    for name in ["set-cookie", "set-cookie2"] {
        h.remove_header(name);
    }
    if let Some(cc) = cc {
        cc.strip_private_headers(&mut h);
    }
    h
}

fn content_length(resp: &ResponseHeader) -> Option<u64> {
    resp.headers.get(http::header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

fn header_secs(resp: &ResponseHeader, name: &str) -> Option<u64> {
    resp.headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(NOW)
    }

    fn resp(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn config() -> CacheConfig {
        CacheConfig { enabled: true, ..CacheConfig::default() }
    }

    /// (ttl seconds, swr, sie, from_body) or the skip.
    fn check(status: u16, headers: &[(&str, &str)], path: &str) -> Result<(u64, u32, u32, bool), Skip> {
        let kind = CacheKind::of_path(path.as_bytes());
        let p = decide(&resp(status, headers), kind, path.contains("_HLS_msn"), false, &config(), now())?;
        let ttl = p.fresh_until.duration_since(now()).map_or(0, |d| d.as_secs());
        Ok((ttl, p.swr, p.sie, p.from_body.is_some()))
    }

    #[test]
    fn origin_directives_come_first() {
        let seg = "/vod/a/seg1.ts";
        assert_eq!(check(200, &[("cache-control", "no-store, max-age=60")], seg), Err(Skip::Origin));
        assert_eq!(check(200, &[("cache-control", "private, max-age=60")], seg), Err(Skip::Origin));
        assert_eq!(check(200, &[("cache-control", "max-age=60")], seg), Ok((60, 2, 86_400, false)));
        assert_eq!(check(200, &[("cache-control", "max-age=60, s-maxage=5")], seg), Ok((5, 0, 0, false)));
        assert_eq!(
            check(200, &[("cache-control", "max-age=60, stale-while-revalidate=7, stale-if-error=9")], seg),
            Ok((60, 7, 9, false))
        );
        assert_eq!(check(200, &[("cache-control", "max-age=60, must-revalidate")], seg), Ok((60, 0, 0, false)));
        assert_eq!(check(200, &[("cache-control", "no-cache")], seg), Ok((0, 2, 86_400, false)), "stored, revalidated");
        assert_eq!(check(200, &[("cache-control", "max-age=60"), ("age", "50")], seg), Ok((10, 2, 86_400, false)));
        assert_eq!(check(200, &[("expires", "Fri, 15 Jan 2027 08:00:00 GMT")], seg).map(|c| c.0 > 0), Ok(false));
        let later = httpdate::fmt_http_date(now() + Duration::from_secs(120));
        assert_eq!(check(200, &[("expires", &later)], seg), Ok((120, 2, 86_400, false)));
        assert_eq!(check(200, &[("vary", "Cookie")], seg), Err(Skip::Vary));
        assert_eq!(check(200, &[("vary", "Accept-Encoding, Origin")], seg), Ok((86_400, 2, 86_400, false)));
        assert_eq!(check(200, &[("content-length", "67108865")], seg), Err(Skip::TooLarge));
    }

    #[test]
    fn defaults_per_kind_and_status() {
        assert_eq!(check(200, &[], "/vod/a/seg1.ts"), Ok((86_400, 2, 86_400, false)));
        assert_eq!(check(200, &[], "/vod/a/init.mp4"), Ok((86_400, 2, 86_400, false)));
        assert_eq!(check(200, &[], "/vod/a/master.m3u8"), Ok((1, 2, 86_400, true)), "provisional, body decides");
        assert_eq!(check(200, &[], "/vod/a/manifest.mpd").map(|c| c.3), Ok(true));
        assert_eq!(check(200, &[], "/vod/a/key.bin"), Err(Skip::NoLifetime));
        assert_eq!(check(404, &[], "/vod/a/seg9.ts"), Ok((2, 2, 86_400, false)));
        assert_eq!(check(500, &[("cache-control", "max-age=600")], "/vod/a/seg9.ts"), Err(Skip::Status));
        assert_eq!(check(403, &[], "/vod/a/seg9.ts"), Err(Skip::Status));
        assert_eq!(check(206, &[("cache-control", "max-age=600")], "/vod/a/seg9.ts"), Err(Skip::Status));
        assert_eq!(check(302, &[], "/vod/a/seg9.ts"), Err(Skip::Status));
        assert_eq!(CacheKind::of_path(b"/a/B.M3U8"), CacheKind::HlsPlaylist);
        assert_eq!(CacheKind::of_path(b"/a/v1_init.m4s"), CacheKind::InitSegment);
        assert_eq!(CacheKind::of_path(b"/a/x"), CacheKind::Other);
    }

    #[test]
    fn set_cookie_is_never_stored() {
        // `private="x-a"` makes only that field private (RFC 9111 5.2.2.7): stored without it.
        for cc in ["max-age=5, private=\"x-a\"", "max-age=5, no-cache=\"x-a\""] {
            let r = resp(200, &[("set-cookie", "sid=1"), ("cache-control", cc), ("x-a", "1"), ("etag", "\"e\"")]);
            let p = decide(&r, CacheKind::Segment, false, false, &config(), now()).unwrap();
            assert!(p.header.headers.get("set-cookie").is_none() && p.header.headers.get("x-a").is_none(), "{cc}");
            assert_eq!(p.header.headers.get("etag").unwrap(), "\"e\"");
        }
        let r = resp(200, &[("cache-control", "max-age=5")]);
        assert_eq!(decide(&r, CacheKind::Segment, false, true, &config(), now()).unwrap_err(), Skip::Origin);
    }

    #[test]
    fn playlists_get_their_lifetime_from_their_text() {
        let t = TtlConfig::default();
        let hls = BodyKind::Hls { ll_hls_request: false };
        let master = b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nv1/index.m3u8\n";
        assert_eq!(body_ttl(hls, master, &t), 10);
        assert_eq!(body_ttl(hls, b"#EXTM3U\n#EXT-X-TARGETDURATION:6\n#EXTINF:6,\na.ts\n#EXT-X-ENDLIST\n", &t), 60);
        assert_eq!(body_ttl(hls, b"#EXTM3U\n#EXT-X-TARGETDURATION:6\n#EXTINF:6,\na.ts\n", &t), 3);
        assert_eq!(body_ttl(hls, b"#EXTM3U\r\n#EXT-X-TARGETDURATION:1\r\n", &t), 1);
        assert_eq!(body_ttl(hls, b"#EXTM3U\n#EXT-X-TARGETDURATION:30\n", &t), 6, "capped");
        assert_eq!(body_ttl(hls, b"#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-PART-INF:PART-TARGET=1\n", &t), 1);
        assert_eq!(body_ttl(BodyKind::Hls { ll_hls_request: true }, b"#EXTM3U\n#EXT-X-TARGETDURATION:4\n", &t), 1);
        assert_eq!(body_ttl(BodyKind::Mpd, b"<MPD type=\"dynamic\" minimumUpdatePeriod=\"PT2S\">", &t), 2);
        assert_eq!(body_ttl(BodyKind::Mpd, b"<MPD type=\"static\">", &t), 60);
    }
}
