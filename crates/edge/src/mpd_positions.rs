//! Where each segment of a static (VOD) DASH presentation ends: the DASH side of
//! the playback module's `Segments`, which HLS fills from `#EXTINF` durations.
//!
//! Read from the MPD the edge serves under a playback session (ISO/IEC 23009-1):
//! `MPD@type` must be `static` with a `mediaPresentationDuration` (the total);
//! every `Period` (its start from `Period@start`, the previous period's end, or 0;
//! its end from `Period@duration`, the next period's start, or the total) and in
//! it every `Representation` of every `AdaptationSet`, whose segments come from
//!
//! - a `SegmentTemplate` (inherited Period → AdaptationSet → Representation, the
//!   inner one's attributes winning) with `@media` and either a `SegmentTimeline`
//!   (`S@t`, `@d`, `@r`, `r = -1` repeating to the next `S@t` or the period's end)
//!   or `@duration`; identifiers `$RepresentationID$`, `$Number$`, `$Time$`,
//!   `$Bandwidth$` (with a `%0Nd` width) and `$$`; `@timescale` (default 1),
//!   `@startNumber` (default 1), `@presentationTimeOffset`;
//! - or a `SegmentList` of `SegmentURL@media` with its `@duration` or timeline.
//!
//! URLs resolve against the MPD's path and the `BaseURL`s of each level (the
//! first of each; an absolute one by its path: the edge never sees requests for
//! another host, so those entries are never looked up), and are canonicalised
//! like request paths. A `SegmentBase` (one file read by byte ranges) has no
//! per-segment path and adds nothing.
//!
//! Bounded: documents with a DTD are refused (no entity expansion), the parser
//! stops at [`MAX_NODES`] nodes, and at most `limit` segments are returned.

use roxmltree::{Document, Node, ParsingOptions};

/// Most XML nodes read from one MPD.
pub const MAX_NODES: u32 = 1 << 18;

/// Every segment's canonical path and end (milliseconds from the start of the
/// presentation), and the total duration in milliseconds; `None` for a dynamic
/// (live) MPD, one without a duration, or one that does not parse. At most `limit` segments.
pub fn segment_ends(mpd_path: &str, body: &[u8], limit: usize) -> Option<(Vec<(String, u32)>, u32)> {
    let text = std::str::from_utf8(body).ok()?;
    let doc = Document::parse_with_options(
        text,
        ParsingOptions { allow_dtd: false, nodes_limit: MAX_NODES, ..ParsingOptions::default() },
    )
    .ok()?;
    let mpd = doc.root_element();
    if mpd.tag_name().name() != "MPD" || attr(mpd, "type").is_some_and(|t| t.trim() != "static") {
        return None;
    }
    let total = attr(mpd, "mediaPresentationDuration").and_then(parse_duration)?;
    if total <= 0.0 {
        return None;
    }
    let mut out = Vec::new();
    // Segments looked at, recorded or not: bounds the work whatever the document says.
    let mut budget = limit;
    let mpd_base = resolve(mpd_path, base_url(mpd));
    let periods: Vec<Node<'_, '_>> = children(mpd, "Period").collect();
    let mut start = 0.0;
    for (i, period) in periods.iter().enumerate() {
        start = attr(*period, "start").and_then(parse_duration).unwrap_or(start);
        let end = match attr(*period, "duration").and_then(parse_duration) {
            Some(d) => start + d,
            None => periods.get(i + 1).and_then(|p| attr(*p, "start")).and_then(parse_duration).unwrap_or(total),
        }
        .min(total);
        let p = Period { start, end, total };
        let period_base = resolve(&mpd_base, base_url(*period));
        for set in children(*period, "AdaptationSet") {
            let set_base = resolve(&period_base, base_url(set));
            for rep in children(set, "Representation") {
                let rep_base = resolve(&set_base, base_url(rep));
                let levels = [*period, set, rep];
                representation(&levels, &rep_base, &p, &mut budget, &mut out);
                if budget == 0 {
                    return Some((out, to_ms(total)));
                }
            }
        }
        start = end;
    }
    Some((out, to_ms(total)))
}

/// A period's bounds and the presentation's total, seconds.
struct Period {
    start: f64,
    end: f64,
    total: f64,
}

/// The segment information of one level (`SegmentTemplate` or `SegmentList`).
#[derive(Clone, Default)]
struct Info<'a, 'i> {
    media: Option<&'a str>,
    timescale: Option<f64>,
    duration: Option<f64>,
    start_number: Option<u64>,
    pto: Option<f64>,
    timeline: Option<Node<'a, 'i>>,
    list: Option<Node<'a, 'i>>,
}

impl<'a, 'i> Info<'a, 'i> {
    /// This level's element over the outer levels' (inner attributes win).
    fn over(mut self, e: Node<'a, 'i>) -> Info<'a, 'i> {
        let num = |n: &str| attr(e, n).and_then(|v| v.trim().parse::<f64>().ok()).filter(|v| v.is_finite());
        self.media = attr(e, "media").or(self.media);
        self.timescale = num("timescale").filter(|t| *t > 0.0).or(self.timescale);
        self.duration = num("duration").filter(|d| *d > 0.0).or(self.duration);
        self.start_number = attr(e, "startNumber").and_then(|v| v.trim().parse().ok()).or(self.start_number);
        self.pto = num("presentationTimeOffset").or(self.pto);
        self.timeline = children(e, "SegmentTimeline").next().or(self.timeline);
        self
    }
}

fn representation(
    levels: &[Node<'_, '_>; 3],
    base: &str,
    p: &Period,
    budget: &mut usize,
    out: &mut Vec<(String, u32)>,
) {
    let (mut template, mut list) = (None::<Info<'_, '_>>, None::<Info<'_, '_>>);
    for level in levels {
        if let Some(t) = children(*level, "SegmentTemplate").next() {
            template = Some(template.unwrap_or_default().over(t));
        }
        if let Some(l) = children(*level, "SegmentList").next() {
            let mut info = list.unwrap_or_default().over(l);
            info.list = Some(l);
            list = Some(info);
        }
    }
    let rep = levels[2];
    let (id, bandwidth) = (attr(rep, "id").unwrap_or(""), attr(rep, "bandwidth").unwrap_or(""));
    // One segment: `number`, `time` (timescale units), its end (seconds into the period).
    let mut push = |media: &str, number: u64, time: u64, end: f64| {
        if *budget == 0 {
            return false;
        }
        *budget -= 1;
        if let Some(url) = substitute(media, id, bandwidth, number, time)
            && let Some(path) = canonical(&resolve(base, Some(&url)))
        {
            out.push((path, to_ms((p.start + end).min(p.total))));
        }
        true
    };
    if let Some(t) = template.filter(|t| t.media.is_some()) {
        let media = t.media.unwrap_or_default();
        segments(&t, p, |n, time, end| push(media, n, time, end));
    } else if let Some(l) = list.filter(|l| l.list.is_some()) {
        let urls: Vec<&str> =
            l.list.into_iter().flat_map(|n| children(n, "SegmentURL")).filter_map(|u| attr(u, "media")).collect();
        let mut i = 0;
        segments(&l, p, |_, _, end| match urls.get(i) {
            Some(u) => {
                i += 1;
                // A SegmentURL is a URL, not a template.
                push(&u.replace('$', "$$"), 0, 0, end)
            }
            None => false,
        });
    }
}

/// Calls `each(number, time, end)` for every segment of `info` in the period, in order,
/// until it returns false; `end` in seconds from the period's start.
fn segments(info: &Info<'_, '_>, p: &Period, mut each: impl FnMut(u64, u64, f64) -> bool) {
    let scale = info.timescale.unwrap_or(1.0);
    let pto = info.pto.unwrap_or(0.0);
    let first = info.start_number.unwrap_or(1);
    let length = (p.end - p.start).max(0.0);
    if let Some(timeline) = info.timeline {
        let s: Vec<Node<'_, '_>> = children(timeline, "S").collect();
        let mut t = 0f64;
        let mut number = first;
        for (i, e) in s.iter().enumerate() {
            let num = |n: &str| attr(*e, n).and_then(|v| v.trim().parse::<f64>().ok()).filter(|v| v.is_finite());
            t = num("t").unwrap_or(t);
            let Some(d) = num("d").filter(|d| *d > 0.0) else { return };
            let next_t = s.get(i + 1).and_then(|n| attr(*n, "t")).and_then(|v| v.trim().parse::<f64>().ok());
            let r = num("r").unwrap_or(0.0);
            let repeats = if r < 0.0 {
                // Up to the next S@t, or the end of the period.
                let until = next_t.unwrap_or(pto + length * scale);
                ((until - t) / d).ceil().max(1.0) - 1.0
            } else {
                r
            };
            let mut k = 0.0;
            while k <= repeats {
                let end = (t + d - pto) / scale;
                if !each(number, t as u64, end.min(length)) || end >= length {
                    return;
                }
                t += d;
                number += 1;
                k += 1.0;
            }
        }
    } else if let Some(d) = info.duration {
        let seg = d / scale;
        let count = (length / seg).ceil();
        let mut k = 0.0;
        while k < count {
            let end = ((k + 1.0) * seg).min(length);
            if !each(first + k as u64, (pto + k * d) as u64, end) {
                return;
            }
            k += 1.0;
        }
    }
}

/// `media` with its identifiers replaced (ISO/IEC 23009-1 § 5.3.9.4.4); `None` for
/// an unknown identifier or an unclosed `$`.
fn substitute(media: &str, id: &str, bandwidth: &str, number: u64, time: u64) -> Option<String> {
    let mut out = String::with_capacity(media.len() + 16);
    let mut rest = media;
    while let Some(open) = rest.find('$') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('$')?;
        let ident = &after[..close];
        rest = &after[close + 1..];
        if ident.is_empty() {
            out.push('$');
            continue;
        }
        let (name, width) = match ident.split_once('%') {
            Some((n, f)) => {
                let w = f.strip_prefix('0').unwrap_or(f).strip_suffix('d')?;
                (n, w.parse::<usize>().ok().filter(|w| *w <= 32)?)
            }
            None => (ident, 0),
        };
        match name {
            "RepresentationID" if width == 0 => out.push_str(id),
            "Number" => out.push_str(&format!("{number:0width$}")),
            "Time" => out.push_str(&format!("{time:0width$}")),
            "Bandwidth" => out.push_str(&format!("{:0>width$}", bandwidth)),
            _ => return None,
        }
    }
    out.push_str(rest);
    Some(out)
}

/// The first `BaseURL` child's text.
fn base_url<'a>(e: Node<'a, '_>) -> Option<&'a str> {
    children(e, "BaseURL").next().and_then(|b| b.text()).map(str::trim).filter(|t| !t.is_empty())
}

fn children<'a, 'i>(e: Node<'a, 'i>, name: &'static str) -> impl Iterator<Item = Node<'a, 'i>> {
    e.children().filter(move |c| c.is_element() && c.tag_name().name() == name)
}

fn attr<'a>(e: Node<'a, '_>, name: &str) -> Option<&'a str> {
    e.attribute(name)
}

/// `reference` resolved against the absolute path `base` (RFC 3986 § 5.2, paths only:
/// an absolute URL counts by its path; query and fragment dropped).
fn resolve(base: &str, reference: Option<&str>) -> String {
    let Some(r) = reference else { return base.to_owned() };
    let r = &r[..r.find(['?', '#']).unwrap_or(r.len())];
    match crate::playlist::uri_path(r) {
        Some(path) => path.to_owned(),
        None => format!("{}{r}", &base[..base.rfind('/').map_or(0, |i| i + 1)]),
    }
}

/// The canonical request path of an absolute path (dot segments removed first, as players do).
fn canonical(path: &str) -> Option<String> {
    let mut resolved = String::with_capacity(path.len());
    crate::playlist::remove_dot_segments(path, &mut resolved);
    stile_token::canonicalize_path(resolved.as_bytes()).ok().map(|c| c.into_owned())
}

/// An `xs:duration` as DASH writes it (`PT1H2M3.5S`, `P1DT…`), in seconds; no years or months.
pub fn parse_duration(v: &str) -> Option<f64> {
    let rest = v.trim().strip_prefix('P')?;
    let (days, time) = match rest.split_once('T') {
        Some((d, t)) => (d, t),
        None => (rest, ""),
    };
    let mut secs = 0.0;
    if !days.is_empty() {
        secs += days.strip_suffix('D')?.parse::<f64>().ok()? * 86_400.0;
    }
    let mut num = String::new();
    let mut seen = false;
    for c in time.chars() {
        match c {
            '0'..='9' | '.' => num.push(c),
            'H' | 'M' | 'S' => {
                let n: f64 = num.parse().ok()?;
                secs += n * match c {
                    'H' => 3600.0,
                    'M' => 60.0,
                    _ => 1.0,
                };
                num.clear();
                seen = true;
            }
            _ => return None,
        }
    }
    (num.is_empty() && (seen || !days.is_empty()) && secs.is_finite()).then_some(secs)
}

/// Seconds to whole milliseconds, clamped to `u32` (positions in the segment table).
pub(crate) fn to_ms(secs: f64) -> u32 {
    (secs * 1e3).round().clamp(0.0, f64::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends(path: &str, mpd: &str) -> (Vec<(String, u32)>, u32) {
        segment_ends(path, mpd.as_bytes(), 10_000).expect("a VOD MPD")
    }

    #[test]
    fn durations() {
        for (v, want) in
            [("PT3M0.0S", 180.0), ("PT1H2M3.5S", 3723.5), ("P1DT1S", 86_401.0), ("PT0.5S", 0.5), ("P2D", 172_800.0)]
        {
            assert_eq!(parse_duration(v), Some(want), "{v}");
        }
        for v in ["", "P", "PT", "1S", "PT1X", "PT1.2.3S", "P1Y", "PTS"] {
            assert_eq!(parse_duration(v), None, "{v}");
        }
    }

    /// ffmpeg's dash muxer with `-use_template 1 -use_timeline 0` (the dev sample's form).
    #[test]
    fn a_template_with_a_duration() {
        let mpd = r#"<?xml version="1.0" encoding="utf-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT5.0S">
  <Period id="0" start="PT0.0S">
    <AdaptationSet id="0" contentType="video">
      <Representation id="0" bandwidth="800000">
        <SegmentTemplate timescale="1000000" duration="2000000" initialization="init-$RepresentationID$.m4s" media="seg-$RepresentationID$-$Number$.m4s" startNumber="1"/>
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>"#;
        let (segs, total) = ends("/vod/abc/dash/manifest.mpd", mpd);
        assert_eq!(total, 5000);
        assert_eq!(
            segs,
            [
                ("/vod/abc/dash/seg-0-1.m4s".to_owned(), 2000),
                ("/vod/abc/dash/seg-0-2.m4s".to_owned(), 4000),
                ("/vod/abc/dash/seg-0-3.m4s".to_owned(), 5000)
            ]
        );
    }

    /// A timeline with `r`, `r = -1`, `$Time$`, an inherited template, BaseURLs, two periods.
    #[test]
    fn timelines_base_urls_and_periods() {
        let mpd = r#"<MPD type="static" mediaPresentationDuration="PT10S">
  <BaseURL>media/</BaseURL>
  <Period duration="PT6S">
    <AdaptationSet>
      <SegmentTemplate timescale="10" media="$RepresentationID$/t$Time$.m4s">
        <SegmentTimeline><S t="0" d="20" r="1"/><S d="20"/></SegmentTimeline>
      </SegmentTemplate>
      <Representation id="v1" bandwidth="1"/>
      <Representation id="v2" bandwidth="2"><BaseURL>/abs/</BaseURL></Representation>
    </AdaptationSet>
  </Period>
  <Period>
    <AdaptationSet>
      <Representation id="a" bandwidth="64000">
        <SegmentTemplate media="../a/$Bandwidth$-$Number%03d$.m4s" startNumber="7" timescale="1">
          <SegmentTimeline><S t="0" d="3" r="-1"/></SegmentTimeline>
        </SegmentTemplate>
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>"#;
        let (segs, total) = ends("/vod/x/m.mpd", mpd);
        assert_eq!(total, 10_000);
        let want = [
            ("/vod/x/media/v1/t0.m4s", 2000),
            ("/vod/x/media/v1/t20.m4s", 4000),
            ("/vod/x/media/v1/t40.m4s", 6000),
            ("/abs/v2/t0.m4s", 2000),
            ("/abs/v2/t20.m4s", 4000),
            ("/abs/v2/t40.m4s", 6000),
            ("/vod/x/a/64000-007.m4s", 9000),
            ("/vod/x/a/64000-008.m4s", 10_000),
        ];
        let got: Vec<(&str, u32)> = segs.iter().map(|(p, e)| (p.as_str(), *e)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn segment_lists() {
        let mpd = r#"<MPD type="static" mediaPresentationDuration="PT9S"><Period><AdaptationSet><Representation id="r">
  <SegmentList duration="4"><SegmentURL media="s1.ts"/><SegmentURL media="s2.ts?x=1"/><SegmentURL media="s3.ts"/></SegmentList>
</Representation></AdaptationSet></Period></MPD>"#;
        let (segs, _) = ends("/v/m.mpd", mpd);
        let got: Vec<(&str, u32)> = segs.iter().map(|(p, e)| (p.as_str(), *e)).collect();
        assert_eq!(got, [("/v/s1.ts", 4000), ("/v/s2.ts", 8000), ("/v/s3.ts", 9000)]);
    }

    #[test]
    fn live_broken_and_hostile_mpds_give_nothing_or_little() {
        let none = |mpd: &str| segment_ends("/m.mpd", mpd.as_bytes(), 100);
        assert!(none(r#"<MPD type="dynamic" mediaPresentationDuration="PT9S"/>"#).is_none());
        assert!(none(r#"<MPD type="static"/>"#).is_none(), "no duration, no total");
        assert!(none("<MPD").is_none());
        assert!(
            none(r#"<!DOCTYPE MPD [<!ENTITY a "b">]><MPD type="static" mediaPresentationDuration="PT9S"/>"#).is_none()
        );
        assert!(none(r#"<HLS type="static" mediaPresentationDuration="PT9S"/>"#).is_none());
        // A billion tiny segments: cut at the limit.
        let flood = r#"<MPD type="static" mediaPresentationDuration="PT100000S"><Period><AdaptationSet><Representation id="r">
  <SegmentTemplate media="$Number$.m4s" duration="1" timescale="10000"/></Representation></AdaptationSet></Period></MPD>"#;
        assert_eq!(none(flood).unwrap().0.len(), 100);
        // Segments that all fail to resolve still count against the bound.
        let unresolvable = r#"<MPD type="static" mediaPresentationDuration="PT100000S"><Period><AdaptationSet><Representation id="r">
  <SegmentTemplate media="$Nope$" timescale="10000"><SegmentTimeline><S d="1" r="-1"/></SegmentTimeline></SegmentTemplate>
</Representation></AdaptationSet></Period></MPD>"#;
        assert!(none(unresolvable).unwrap().0.is_empty());
        // Identifiers it does not know, paths the canonicaliser refuses: skipped, not fatal.
        let odd = r#"<MPD type="static" mediaPresentationDuration="PT4S"><Period><AdaptationSet><Representation id="r">
  <SegmentTemplate media="$Nope$/$Number$.m4s" duration="2"/></Representation>
  <Representation id="%2F"><SegmentTemplate media="$RepresentationID$/$Number$.m4s" duration="2"/></Representation>
  <Representation id="ok"><SegmentTemplate media="$RepresentationID$/$$$Number$.m4s" duration="2"/></Representation>
</AdaptationSet></Period></MPD>"#;
        let got: Vec<String> = none(odd).unwrap().0.into_iter().map(|(p, _)| p).collect();
        assert_eq!(got, ["/ok/$1.m4s", "/ok/$2.m4s"]);
        // Non-ASCII text where a URL scheme would end (found by the fuzz target: a byte
        // slice inside a character panicked).
        let text = r#"<MPD type="static" mediaPresentationDuration="PT2S"><Period><AdaptationSet><Representation id="v1">
  <SegmentTemplate media="$RepresentationID$/t$Time$Ғ˒" duration="2"/></Representation></AdaptationSet></Period></MPD>"#;
        // Raw non-ASCII is no request path the canonicaliser takes: nothing recorded, no panic.
        assert!(none(text).unwrap().0.is_empty());
    }
}
