//! DASH MPD rewriting: when an MPD was admitted with a query-string token, every
//! URL a player derives from it gets the token too, the way [`crate::playlist`]
//! does for HLS.
//!
//! Rewritten (`param=token` appended, `&amp;`-joined when a query exists; a token that
//! is a vendor's query pairs, `…&Expires=…&Signature=…`, is XML-escaped the same way):
//! - `SegmentTemplate@media`, `@initialization`, `@index`, `@bitstreamSwitching`;
//! - `SegmentURL@media`, `@index`;
//! - `Initialization@sourceURL`, `RepresentationIndex@sourceURL`, `BitstreamSwitching@sourceURL`;
//! - the text of `BaseURL`, `Location` and `PatchLocation`;
//! - `xlink:href` (remote elements), except `urn:` values such as resolve-to-zero.
//!
//! The DASH-IF way of carrying query parameters (ISO/IEC 23009-1 Annex I: a
//! `UrlQueryInfo` or `ExtUrlQueryInfo` in an `EssentialProperty` or
//! `SupplementalProperty` of scheme `urn:mpeg:dash:urlparam:2014`/`2016`) makes a
//! player that supports it (dash.js does) copy the MPD URL's query — our token — into
//! segment requests, which would then carry the token twice (refused as `malformed`).
//! Such a property with `useMPDUrlQuery="true"` is rewritten to `"false"`, and the MPD
//! URL's other parameters move into its `queryString`, so the origin's own parameters
//! still travel and the token travels exactly once, in every player.
//!
//! Left alone, as in HLS: URLs naming another host than the request's, non-http(s)
//! schemes, URLs already carrying the parameter. A relative URL whose `BaseURL` chain
//! may lead to another host (an absolute `BaseURL` naming another host at its level,
//! above it, or — for inherited segment information — below it) is left alone too:
//! the token never leaves for another host. A document with a `DOCTYPE` (entity
//! definitions could change what a value means) is returned unchanged.
//!
//! The function is pure, works on the bytes (no re-serialisation: everything it does
//! not rewrite is copied byte for byte) and is linear in the input; the caller bounds
//! the input's size.

use crate::playlist::{Rewriter, scheme_end};

/// Rewrites `mpd` so that every URL staying on `host` carries `param=token`;
/// `mpd_query` is the MPD request's query without the token (for `UrlQueryInfo`).
pub fn rewrite(mpd: &[u8], param: &str, token: &str, host: Option<&str>, mpd_query: &str) -> Vec<u8> {
    let rw = Rewriter { param: param.as_bytes(), token: token.as_bytes(), host: host.map(str::as_bytes) };
    let Some(doc) = scan(mpd, &rw) else { return mpd.to_vec() };
    let edits = plan(mpd, &doc, &rw, mpd_query);
    // `param=token` as XML: a vendor's query pairs (`…&Expires=…&Signature=…`) hold `&`.
    let mut pair = Vec::with_capacity(rw.param.len() + rw.token.len() + 1);
    escape_anywhere(rw.param, &mut pair);
    pair.push(b'=');
    escape_anywhere(rw.token, &mut pair);
    let per_token = pair.len() + 5;
    let extra: usize = edits
        .iter()
        .map(|e| match &e.text {
            Text::Bytes(v) => v.len(),
            Text::Token(_) => per_token,
        })
        .sum();
    let mut out = Vec::with_capacity(mpd.len() + extra);
    let mut at = 0;
    for e in &edits {
        out.extend_from_slice(&mpd[at..e.start]);
        match &e.text {
            Text::Bytes(v) => out.extend_from_slice(v),
            Text::Token(sep) => {
                out.extend_from_slice(sep);
                out.extend_from_slice(&pair);
            }
        }
        at = e.end;
    }
    out.extend_from_slice(&mpd[at..]);
    out
}

/// Element kinds the rewriter cares about (by local name, any namespace prefix).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// MPD, Period, AdaptationSet, Representation, SubRepresentation: levels that hold `BaseURL`s.
    Level,
    SegmentTemplate,
    SegmentUrl,
    /// Initialization, RepresentationIndex, BitstreamSwitching (`@sourceURL`).
    SourceUrl,
    BaseUrl,
    /// Location, PatchLocation: resolved against the MPD's own URL.
    MpdLocation,
    /// UrlQueryInfo, ExtUrlQueryInfo.
    QueryInfo,
    Other,
}

#[derive(Debug)]
struct Element {
    parent: Option<usize>,
    kind: Kind,
    /// The nearest `Level` ancestor-or-self.
    level: Option<usize>,
    /// A `BaseURL` child names another host (absolute), or could not be read.
    foreign_base: bool,
}

/// Where a URL sits.
#[derive(Debug)]
enum Place {
    /// An attribute value (between the quotes).
    Attr { quote: u8 },
    /// The text content of an element, up to its end tag.
    Text,
}

#[derive(Debug)]
struct Site {
    element: usize,
    start: usize,
    end: usize,
    place: Place,
}

/// A `UrlQueryInfo` with `useMPDUrlQuery="true"`.
#[derive(Debug)]
struct QueryInfo {
    /// The `useMPDUrlQuery` value's span.
    use_mpd: (usize, usize),
    /// The `queryString` value's span and quote, if present.
    query_string: Option<(usize, usize, u8)>,
    /// Where a new attribute goes (just after the element name's last attribute).
    insert_at: usize,
}

#[derive(Debug, Default)]
struct Doc {
    elements: Vec<Element>,
    sites: Vec<Site>,
    query_infos: Vec<QueryInfo>,
}

struct Edit {
    start: usize,
    end: usize,
    text: Text,
}

enum Text {
    Bytes(Vec<u8>),
    /// This separator, then `param=token` (the common case: no allocation per URL).
    Token(&'static [u8]),
}

// ------------------------------------------------------------------ scanning

/// One pass over the markup: elements (document order, parents first), URL sites,
/// query infos. `None` when the document must not be rewritten (a `DOCTYPE`).
fn scan(b: &[u8], rw: &Rewriter<'_>) -> Option<Doc> {
    let mut doc = Doc::default();
    let mut stack: Vec<(usize, &[u8])> = Vec::new();
    let mut i = 0;
    while let Some(off) = memchr(b'<', &b[i..]) {
        let lt = i + off;
        let rest = &b[lt..];
        if rest.starts_with(b"<!--") {
            i = skip_past(b, lt + 4, b"-->")?;
        } else if rest.starts_with(b"<![CDATA[") {
            i = skip_past(b, lt + 9, b"]]>")?;
        } else if rest.starts_with(b"<?") {
            i = skip_past(b, lt + 2, b"?>")?;
        } else if rest.starts_with(b"<!") {
            return None; // DOCTYPE (or garbage): leave the document alone
        } else if rest.starts_with(b"</") {
            let name_end = lt + 2 + name_len(&b[lt + 2..]);
            let name = &b[lt + 2..name_end];
            if let Some(pos) = stack.iter().rposition(|(_, n)| *n == name) {
                stack.truncate(pos);
            }
            i = skip_past(b, name_end, b">")?;
        } else {
            let tag = parse_start_tag(b, lt)?;
            let name = &b[lt + 1..lt + 1 + tag.name_len];
            let kind = kind_of(local(name));
            let parent = stack.last().map(|(e, _)| *e);
            let index = doc.elements.len();
            let level = if kind == Kind::Level { Some(index) } else { parent.and_then(|p| doc.elements[p].level) };
            doc.elements.push(Element { parent, kind, level, foreign_base: false });
            element_sites(&mut doc, index, kind, &tag);
            if tag.self_closing {
                i = tag.end;
                continue;
            }
            i = tag.end;
            if matches!(kind, Kind::BaseUrl | Kind::MpdLocation) {
                let text_end = i + memchr(b'<', &b[i..]).unwrap_or(b.len() - i);
                let closes = b[text_end..].starts_with(b"</");
                if kind == Kind::BaseUrl
                    && let Some(p) = parent
                {
                    // A BaseURL we cannot read is treated as another host's.
                    let foreign = !closes
                        || decode(&b[i..text_end])
                            .is_none_or(|v| is_foreign(v.trim_matches(|c: char| c.is_ascii_whitespace()), rw));
                    doc.elements[p].foreign_base |= foreign;
                }
                if closes {
                    doc.sites.push(Site { element: index, start: i, end: text_end, place: Place::Text });
                }
            }
            stack.push((index, name));
        }
    }
    Some(doc)
}

/// A parsed start tag.
struct StartTag<'a> {
    name_len: usize,
    attrs: Vec<Attr<'a>>,
    /// Just past `>`.
    end: usize,
    /// Where `/>` or `>` starts, after trailing whitespace is skipped back.
    attrs_end: usize,
    self_closing: bool,
}

struct Attr<'a> {
    name: &'a [u8],
    /// The value's span (between the quotes) and its quote.
    start: usize,
    end: usize,
    quote: u8,
}

fn parse_start_tag(b: &[u8], lt: usize) -> Option<StartTag<'_>> {
    let name_len = name_len(&b[lt + 1..]);
    if name_len == 0 {
        return None;
    }
    let mut i = lt + 1 + name_len;
    let mut attrs = Vec::new();
    let mut attrs_end = i;
    loop {
        while b.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        match b.get(i)? {
            b'>' => return Some(StartTag { name_len, attrs, end: i + 1, attrs_end, self_closing: false }),
            b'/' if b.get(i + 1) == Some(&b'>') => {
                return Some(StartTag { name_len, attrs, end: i + 2, attrs_end, self_closing: true });
            }
            _ => {}
        }
        let n = name_len_at(b, i);
        if n == 0 {
            return None;
        }
        let name = &b[i..i + n];
        i += n;
        while b.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        if *b.get(i)? != b'=' {
            return None;
        }
        i += 1;
        while b.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        let quote = *b.get(i)?;
        if quote != b'"' && quote != b'\'' {
            return None;
        }
        let start = i + 1;
        let len = memchr(quote, &b[start..])?;
        attrs.push(Attr { name, start, end: start + len, quote });
        i = start + len + 1;
        attrs_end = i;
    }
}

fn element_sites(doc: &mut Doc, index: usize, kind: Kind, tag: &StartTag<'_>) {
    let mut use_mpd = None;
    let mut query_string = None;
    for a in &tag.attrs {
        let (prefix, name) = split_prefix(a.name);
        let url = match kind {
            _ if prefix.is_some() && name == b"href" => true,
            Kind::SegmentTemplate => {
                matches!(name, b"media" | b"initialization" | b"index" | b"bitstreamSwitching") && prefix.is_none()
            }
            Kind::SegmentUrl => matches!(name, b"media" | b"index") && prefix.is_none(),
            Kind::SourceUrl => name == b"sourceURL" && prefix.is_none(),
            Kind::QueryInfo => {
                match name {
                    b"useMPDUrlQuery" => use_mpd = Some((a.start, a.end)),
                    b"queryString" => query_string = Some((a.start, a.end, a.quote)),
                    _ => {}
                }
                false
            }
            _ => false,
        };
        if url {
            doc.sites.push(Site { element: index, start: a.start, end: a.end, place: Place::Attr { quote: a.quote } });
        }
    }
    if let Some(use_mpd) = use_mpd {
        doc.query_infos.push(QueryInfo { use_mpd, query_string, insert_at: tag.attrs_end });
    }
}

// ------------------------------------------------------------------ planning

/// The edits, in document order.
fn plan(b: &[u8], doc: &Doc, rw: &Rewriter<'_>, mpd_query: &str) -> Vec<Edit> {
    let n = doc.elements.len();
    // Ancestor-or-self has a foreign BaseURL child (parents come first).
    let mut on_path = vec![false; n];
    for (i, e) in doc.elements.iter().enumerate() {
        on_path[i] = e.foreign_base || e.parent.is_some_and(|p| on_path[p]);
    }
    // Some descendant (or self) has a foreign BaseURL child (children come later).
    let mut below = vec![false; n];
    for (i, e) in doc.elements.iter().enumerate().rev() {
        below[i] |= e.foreign_base;
        if let Some(p) = e.parent {
            below[p] |= below[i];
        }
    }
    let mut edits = Vec::new();
    for s in &doc.sites {
        let e = &doc.elements[s.element];
        // May a relative URL here resolve against another host?
        let risky = match e.kind {
            Kind::MpdLocation => false,
            // Resolved against the BaseURLs above its own level.
            Kind::BaseUrl => e.parent.and_then(|l| doc.elements[l].parent).is_some_and(|p| on_path[p]),
            // Resolved against every BaseURL chain its level passes it down to.
            _ => on_path[s.element] || e.level.is_some_and(|l| below[l]),
        };
        let raw = &b[s.start..s.end];
        if !raw.contains(&b'&') && std::str::from_utf8(raw).is_ok() {
            // No character reference: insert `?param=token` in place.
            let t = raw.trim_ascii();
            if t.is_empty() || (risky && !is_absolute(t)) || !rw.stays_here(t) || rw.has_param(t) {
                continue;
            }
            let body = &t[..t.iter().position(|&c| c == b'#').unwrap_or(t.len())];
            let sep: &'static [u8] = match body.iter().position(|&c| c == b'?') {
                None => b"?",
                Some(q) if q + 1 == body.len() => b"", // an empty query
                Some(_) => b"&amp;",
            };
            let at = s.start + (raw.len() - raw.trim_ascii_start().len()) + body.len();
            edits.push(Edit { start: at, end: at, text: Text::Token(sep) });
            continue;
        }
        let Some(value) = decode(raw) else { continue };
        let trimmed = value.trim_matches(|c: char| c.is_ascii_whitespace());
        if trimmed.is_empty() || (risky && !is_absolute(trimmed.as_bytes())) {
            continue;
        }
        let mut with = Vec::with_capacity(trimmed.len() + rw.param.len() + rw.token.len() + 2);
        rw.uri(trimmed.as_bytes(), &mut with);
        if with.len() == trimmed.len() {
            continue; // another host, another scheme, or already carrying the parameter
        }
        let lead = value.len() - value.trim_start_matches(|c: char| c.is_ascii_whitespace()).len();
        let mut text = Vec::with_capacity(value.len() + with.len());
        escape_into(&value.as_bytes()[..lead], &s.place, &mut text);
        escape_into(&with, &s.place, &mut text);
        escape_into(&value.as_bytes()[lead + trimmed.len()..], &s.place, &mut text);
        edits.push(Edit { start: s.start, end: s.end, text: Text::Bytes(text) });
    }
    for q in &doc.query_infos {
        if !b[q.use_mpd.0..q.use_mpd.1].trim_ascii().eq_ignore_ascii_case(b"true") {
            continue;
        }
        edits.push(Edit { start: q.use_mpd.0, end: q.use_mpd.1, text: Text::Bytes(b"false".to_vec()) });
        if mpd_query.is_empty() {
            continue;
        }
        match q.query_string {
            Some((start, end, quote)) => {
                let Some(existing) = decode(&b[start..end]) else { continue };
                let joined = if existing.is_empty() { mpd_query.to_owned() } else { format!("{existing}&{mpd_query}") };
                let mut text = Vec::new();
                escape_into(joined.as_bytes(), &Place::Attr { quote }, &mut text);
                edits.push(Edit { start, end, text: Text::Bytes(text) });
            }
            None => {
                let mut text = b" queryString=\"".to_vec();
                escape_into(mpd_query.as_bytes(), &Place::Attr { quote: b'"' }, &mut text);
                text.push(b'"');
                edits.push(Edit { start: q.insert_at, end: q.insert_at, text: Text::Bytes(text) });
            }
        }
    }
    edits.sort_by_key(|e| (e.start, e.end));
    edits
}

fn is_absolute(uri: &[u8]) -> bool {
    uri.starts_with(b"//") || scheme_end(uri).is_some()
}

/// An absolute URL that does not stay on our host (or any other scheme).
fn is_foreign(uri: &str, rw: &Rewriter<'_>) -> bool {
    is_absolute(uri.as_bytes()) && !rw.stays_here(uri.as_bytes())
}

// ------------------------------------------------------------------ XML bits

fn kind_of(local: &[u8]) -> Kind {
    match local {
        b"MPD" | b"Period" | b"AdaptationSet" | b"Representation" | b"SubRepresentation" => Kind::Level,
        b"SegmentTemplate" => Kind::SegmentTemplate,
        b"SegmentURL" => Kind::SegmentUrl,
        b"Initialization" | b"RepresentationIndex" | b"BitstreamSwitching" => Kind::SourceUrl,
        b"BaseURL" => Kind::BaseUrl,
        b"Location" | b"PatchLocation" => Kind::MpdLocation,
        b"UrlQueryInfo" | b"ExtUrlQueryInfo" => Kind::QueryInfo,
        _ => Kind::Other,
    }
}

fn local(name: &[u8]) -> &[u8] {
    split_prefix(name).1
}

fn split_prefix(name: &[u8]) -> (Option<&[u8]>, &[u8]) {
    match memchr(b':', name) {
        Some(i) => (Some(&name[..i]), &name[i + 1..]),
        None => (None, name),
    }
}

/// Length of the XML name at the start of `b` (ASCII name characters and any non-ASCII byte).
fn name_len(b: &[u8]) -> usize {
    b.iter()
        .position(|&c| !(c.is_ascii_alphanumeric() || matches!(c, b':' | b'_' | b'-' | b'.') || c >= 0x80))
        .unwrap_or(b.len())
}

fn name_len_at(b: &[u8], i: usize) -> usize {
    name_len(&b[i..])
}

/// Index just past the first `pat` at or after `from`.
fn skip_past(b: &[u8], from: usize, pat: &[u8]) -> Option<usize> {
    b.get(from..)?.windows(pat.len()).position(|w| w == pat).map(|p| from + p + pat.len())
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&c| c == needle)
}

/// The value with XML's predefined and numeric character references resolved;
/// `None` for other entities, malformed references, or invalid UTF-8.
fn decode(raw: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(raw).ok()?;
    if !s.contains('&') {
        return Some(s.to_owned());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let semi = rest[amp..].find(';')? + amp;
        let c = match &rest[amp + 1..semi] {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            r => {
                let n = if let Some(h) = r.strip_prefix("#x") {
                    u32::from_str_radix(h, 16).ok()?
                } else {
                    r.strip_prefix('#')?.parse().ok()?
                };
                char::from_u32(n)?
            }
        };
        out.push(c);
        rest = &rest[semi + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// Escapes `v` for any place a URL may sit (element text, an attribute in either quote).
fn escape_anywhere(v: &[u8], out: &mut Vec<u8>) {
    for &c in v {
        match c {
            b'&' => out.extend_from_slice(b"&amp;"),
            b'<' => out.extend_from_slice(b"&lt;"),
            b'>' => out.extend_from_slice(b"&gt;"),
            b'"' => out.extend_from_slice(b"&quot;"),
            b'\'' => out.extend_from_slice(b"&apos;"),
            _ => out.push(c),
        }
    }
}

fn escape_into(v: &[u8], place: &Place, out: &mut Vec<u8>) {
    for &c in v {
        match (c, place) {
            (b'&', _) => out.extend_from_slice(b"&amp;"),
            (b'<', _) => out.extend_from_slice(b"&lt;"),
            (b'>', Place::Text) => out.extend_from_slice(b"&gt;"),
            (b'"', Place::Attr { quote: b'"' }) => out.extend_from_slice(b"&quot;"),
            (b'\'', Place::Attr { quote: b'\'' }) => out.extend_from_slice(b"&apos;"),
            _ => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(input: &str) -> String {
        String::from_utf8(rewrite(input.as_bytes(), "st", "TOK", Some("edge.example"), "")).unwrap()
    }

    fn check(input: &str, expect: &str) {
        assert_eq!(rw(input), expect, "input: {input}");
    }

    /// A vendor's query pairs (Cloud CDN URL prefixes, Bunny) hold `&`, and a hostile
    /// query may hold any of XML's special characters: each URL stays well-formed and
    /// decodes to the URL with the pairs appended, in every place and quoting.
    #[test]
    fn carried_query_pairs_are_escaped() {
        let token = "aHR0cA&Expires=1&KeyName=k'<>\"&Signature=s";
        let out =
            |input: &str| String::from_utf8(rewrite(input.as_bytes(), "URLPrefix", token, Some("e.x"), "")).unwrap();
        let value = |doc: &str, open: &str, close: char| {
            let start = doc.find(open).unwrap() + open.len();
            let end = start + doc[start..].find(close).unwrap();
            decode(&doc.as_bytes()[start..end]).unwrap()
        };
        let pairs = "URLPrefix=aHR0cA&amp;Expires=1&amp;KeyName=k&apos;&lt;&gt;&quot;&amp;Signature=s";
        let double = out(r#"<SegmentURL media="a.m4s"/>"#);
        assert_eq!(double, format!(r#"<SegmentURL media="a.m4s?{pairs}"/>"#));
        let single = out("<SegmentURL media='a.m4s'/>");
        assert_eq!(single, format!("<SegmentURL media='a.m4s?{pairs}'/>"));
        let text = out("<MPD><BaseURL>v/</BaseURL></MPD>");
        assert_eq!(text, format!("<MPD><BaseURL>v/?{pairs}</BaseURL></MPD>"));
        let want = format!("a.m4s?URLPrefix={token}");
        assert_eq!(value(&double, "media=\"", '"'), want);
        assert_eq!(value(&single, "media='", '\''), want);
        assert_eq!(value(&text, "<BaseURL>", '<'), format!("v/?URLPrefix={token}"));
        // A value with a character reference is decoded, appended to and escaped again.
        let referenced = out(r#"<SegmentURL media="a.m4s?x=1&amp;y=2"/>"#);
        assert_eq!(value(&referenced, "media=\"", '"'), format!("a.m4s?x=1&y=2&URLPrefix={token}"));
    }

    #[test]
    fn attribute_table() {
        for (input, expect) in [
            (
                r#"<SegmentTemplate media="s-$Number$.m4s" initialization="i.mp4" index="x.sidx" bitstreamSwitching="b.mp4" timescale="1"/>"#,
                r#"<SegmentTemplate media="s-$Number$.m4s?st=TOK" initialization="i.mp4?st=TOK" index="x.sidx?st=TOK" bitstreamSwitching="b.mp4?st=TOK" timescale="1"/>"#,
            ),
            (
                r#"<SegmentList><Initialization sourceURL="init.mp4" range="0-9"/><SegmentURL media="a.m4s" index="a.sidx" mediaRange="1-2"/></SegmentList>"#,
                r#"<SegmentList><Initialization sourceURL="init.mp4?st=TOK" range="0-9"/><SegmentURL media="a.m4s?st=TOK" index="a.sidx?st=TOK" mediaRange="1-2"/></SegmentList>"#,
            ),
            (
                r#"<SegmentBase><RepresentationIndex sourceURL="i.sidx"/></SegmentBase>"#,
                r#"<SegmentBase><RepresentationIndex sourceURL="i.sidx?st=TOK"/></SegmentBase>"#,
            ),
            (r#"<BitstreamSwitching sourceURL="bs.mp4"/>"#, r#"<BitstreamSwitching sourceURL="bs.mp4?st=TOK"/>"#),
            (r#"<SegmentURL media='a.m4s'/>"#, r#"<SegmentURL media='a.m4s?st=TOK'/>"#),
            (r#"<SegmentURL media = "a.m4s" />"#, r#"<SegmentURL media = "a.m4s?st=TOK" />"#),
            (r#"<SegmentURL media="a.m4s?x=1"/>"#, r#"<SegmentURL media="a.m4s?x=1&amp;st=TOK"/>"#),
            (r#"<SegmentURL media="a.m4s?x=1&amp;y=2"/>"#, r#"<SegmentURL media="a.m4s?x=1&amp;y=2&amp;st=TOK"/>"#),
            (r#"<SegmentURL media="a.m4s?x=1&amp;st=OLD"/>"#, r#"<SegmentURL media="a.m4s?x=1&amp;st=OLD"/>"#),
            (r#"<SegmentURL media="a.m4s#t=1"/>"#, r#"<SegmentURL media="a.m4s?st=TOK#t=1"/>"#),
            (r#"<SegmentURL media="a.m4s?"/>"#, r#"<SegmentURL media="a.m4s?st=TOK"/>"#),
            (r#"<SegmentURL media="a?x?"/>"#, r#"<SegmentURL media="a?x?&amp;st=TOK"/>"#),
            (
                r#"<SegmentURL media="https://edge.example/a.m4s"/>"#,
                r#"<SegmentURL media="https://edge.example/a.m4s?st=TOK"/>"#,
            ),
            (r#"<SegmentURL media="https://cdn.other/a.m4s"/>"#, r#"<SegmentURL media="https://cdn.other/a.m4s"/>"#),
            (r#"<SegmentURL media="//cdn.other/a.m4s"/>"#, r#"<SegmentURL media="//cdn.other/a.m4s"/>"#),
            (r#"<SegmentURL media="data:x"/>"#, r#"<SegmentURL media="data:x"/>"#),
            (r#"<SegmentURL media=""/>"#, r#"<SegmentURL media=""/>"#),
            (r#"<SegmentURL mediaRange="0-1"/>"#, r#"<SegmentURL mediaRange="0-1"/>"#),
            (r#"<x:SegmentURL media="a.m4s"/>"#, r#"<x:SegmentURL media="a.m4s?st=TOK"/>"#),
            (r#"<SegmentURL x:media="a.m4s"/>"#, r#"<SegmentURL x:media="a.m4s"/>"#),
            (r#"<AdaptationSet bitstreamSwitching="true"/>"#, r#"<AdaptationSet bitstreamSwitching="true"/>"#),
            (r#"<Representation media="a.m4s"/>"#, r#"<Representation media="a.m4s"/>"#),
            (
                r#"<Period xlink:href="remote.xml" xlink:actuate="onLoad"/>"#,
                r#"<Period xlink:href="remote.xml?st=TOK" xlink:actuate="onLoad"/>"#,
            ),
            (
                r#"<Period xlink:href="urn:mpeg:dash:resolve-to-zero:2013"/>"#,
                r#"<Period xlink:href="urn:mpeg:dash:resolve-to-zero:2013"/>"#,
            ),
            (r#"<SegmentURL media="a&#46;m4s"/>"#, r#"<SegmentURL media="a.m4s?st=TOK"/>"#),
            (r#"<SegmentURL media="a&custom;.m4s"/>"#, r#"<SegmentURL media="a&custom;.m4s"/>"#),
            (r#"<SegmentURL media="a&amp"/>"#, r#"<SegmentURL media="a&amp"/>"#),
            (r#"<SegmentURL media="it's.m4s"/>"#, r#"<SegmentURL media="it's.m4s?st=TOK"/>"#),
            (r#"<SegmentURL media='say"hi".m4s'/>"#, r#"<SegmentURL media='say"hi".m4s?st=TOK'/>"#),
            (r#"<SegmentURL media="a.m4s?q=&quot;"/>"#, r#"<SegmentURL media="a.m4s?q=&quot;&amp;st=TOK"/>"#),
        ] {
            check(input, expect);
        }
    }

    #[test]
    fn text_table() {
        for (input, expect) in [
            ("<MPD><BaseURL>v/</BaseURL></MPD>", "<MPD><BaseURL>v/?st=TOK</BaseURL></MPD>"),
            ("<MPD><BaseURL> v/ </BaseURL></MPD>", "<MPD><BaseURL> v/?st=TOK </BaseURL></MPD>"),
            ("<MPD><BaseURL>v/?a=1</BaseURL></MPD>", "<MPD><BaseURL>v/?a=1&amp;st=TOK</BaseURL></MPD>"),
            ("<MPD><BaseURL></BaseURL></MPD>", "<MPD><BaseURL></BaseURL></MPD>"),
            ("<MPD><BaseURL/></MPD>", "<MPD><BaseURL/></MPD>"),
            (
                "<MPD><Location>https://edge.example/live.mpd</Location></MPD>",
                "<MPD><Location>https://edge.example/live.mpd?st=TOK</Location></MPD>",
            ),
            ("<MPD><Location>live.mpd</Location></MPD>", "<MPD><Location>live.mpd?st=TOK</Location></MPD>"),
            (
                "<MPD><PatchLocation ttl=\"60\">patch.mpp</PatchLocation></MPD>",
                "<MPD><PatchLocation ttl=\"60\">patch.mpp?st=TOK</PatchLocation></MPD>",
            ),
            (
                "<MPD><Location>https://other.example/live.mpd</Location></MPD>",
                "<MPD><Location>https://other.example/live.mpd</Location></MPD>",
            ),
            ("<MPD><BaseURL><![CDATA[v/]]></BaseURL></MPD>", "<MPD><BaseURL><![CDATA[v/]]></BaseURL></MPD>"),
            ("<MPD><Title>seg.m4s</Title></MPD>", "<MPD><Title>seg.m4s</Title></MPD>"),
        ] {
            check(input, expect);
        }
    }

    #[test]
    fn markup_that_is_not_an_element_is_left_alone() {
        for input in [
            "<?xml version=\"1.0\"?><!-- <SegmentURL media=\"a\"/> --><MPD/>",
            "<MPD><![CDATA[<SegmentURL media=\"a\"/>]]></MPD>",
            "<?pi <SegmentURL media=\"a\"/> ?><MPD/>",
        ] {
            check(input, input);
        }
        let dtd = "<!DOCTYPE MPD [<!ENTITY e \"x\">]><MPD><SegmentURL media=\"a\"/></MPD>";
        check(dtd, dtd);
    }

    #[test]
    fn a_base_url_on_another_host_keeps_the_token_from_relative_urls_below_and_beside_it() {
        // MPD-level foreign BaseURL: nothing relative gets the token.
        let input = r#"<MPD><BaseURL>https://cdn.other/v/</BaseURL><Period><BaseURL>p/</BaseURL><AdaptationSet><SegmentTemplate media="$Number$.m4s"/></AdaptationSet></Period></MPD>"#;
        check(input, input);
        // A foreign BaseURL in one Representation: a template inherited from the
        // AdaptationSet is left alone; a sibling Representation's own template is rewritten.
        check(
            r#"<MPD><Period><AdaptationSet><SegmentTemplate media="a.m4s"/><Representation id="1"><BaseURL>https://cdn.other/</BaseURL></Representation><Representation id="2"><SegmentTemplate media="b.m4s"/></Representation></AdaptationSet></Period></MPD>"#,
            r#"<MPD><Period><AdaptationSet><SegmentTemplate media="a.m4s"/><Representation id="1"><BaseURL>https://cdn.other/</BaseURL></Representation><Representation id="2"><SegmentTemplate media="b.m4s?st=TOK"/></Representation></AdaptationSet></Period></MPD>"#,
        );
        // Absolute URLs on our host are safe anywhere; a same-host absolute BaseURL is not foreign.
        check(
            r#"<MPD><BaseURL>https://cdn.other/</BaseURL><Period><SegmentTemplate media="https://edge.example/a.m4s"/></Period></MPD>"#,
            r#"<MPD><BaseURL>https://cdn.other/</BaseURL><Period><SegmentTemplate media="https://edge.example/a.m4s?st=TOK"/></Period></MPD>"#,
        );
        check(
            r#"<MPD><BaseURL>https://edge.example/v/</BaseURL><Period><SegmentTemplate media="a.m4s"/></Period></MPD>"#,
            r#"<MPD><BaseURL>https://edge.example/v/?st=TOK</BaseURL><Period><SegmentTemplate media="a.m4s?st=TOK"/></Period></MPD>"#,
        );
        // A foreign alternative beside a local BaseURL: the local one still gets it, the
        // segments (which may resolve against either) do not.
        check(
            r#"<MPD><Period><BaseURL>https://cdn.other/</BaseURL><BaseURL>local/</BaseURL><SegmentTemplate media="a.m4s"/></Period></MPD>"#,
            r#"<MPD><Period><BaseURL>https://cdn.other/</BaseURL><BaseURL>local/?st=TOK</BaseURL><SegmentTemplate media="a.m4s"/></Period></MPD>"#,
        );
        // Location resolves against the MPD URL, whatever the BaseURLs say.
        check(
            r#"<MPD><BaseURL>https://cdn.other/</BaseURL><Location>next.mpd</Location></MPD>"#,
            r#"<MPD><BaseURL>https://cdn.other/</BaseURL><Location>next.mpd?st=TOK</Location></MPD>"#,
        );
        // Without a request host, any absolute BaseURL is foreign.
        let got = rewrite(b"<MPD><BaseURL>https://h/</BaseURL><SegmentURL media=\"a\"/></MPD>", "st", "T", None, "");
        assert_eq!(got, b"<MPD><BaseURL>https://h/</BaseURL><SegmentURL media=\"a\"/></MPD>");
    }

    #[test]
    fn url_query_info_stops_copying_the_mpd_query() {
        let input = r#"<MPD><EssentialProperty schemeIdUri="urn:mpeg:dash:urlparam:2014"><up:UrlQueryInfo queryTemplate="$querypart$" useMPDUrlQuery="true"/></EssentialProperty><SegmentURL media="a"/></MPD>"#;
        assert_eq!(
            String::from_utf8(rewrite(input.as_bytes(), "st", "TOK", Some("h"), "cdn=1&x=a\"b")).unwrap(),
            r#"<MPD><EssentialProperty schemeIdUri="urn:mpeg:dash:urlparam:2014"><up:UrlQueryInfo queryTemplate="$querypart$" useMPDUrlQuery="false" queryString="cdn=1&amp;x=a&quot;b"/></EssentialProperty><SegmentURL media="a?st=TOK"/></MPD>"#
        );
        // Without other parameters it is only switched off.
        check(
            r#"<ExtUrlQueryInfo useMPDUrlQuery="true" queryTemplate="$querypart$" includeInRequests="segment"/>"#,
            r#"<ExtUrlQueryInfo useMPDUrlQuery="false" queryTemplate="$querypart$" includeInRequests="segment"/>"#,
        );
        // An existing queryString keeps its parameters first.
        assert_eq!(
            String::from_utf8(rewrite(
                br#"<UrlQueryInfo queryString="a=1" useMPDUrlQuery="true"></UrlQueryInfo>"#,
                "st",
                "T",
                None,
                "b=2"
            ))
            .unwrap(),
            r#"<UrlQueryInfo queryString="a=1&amp;b=2" useMPDUrlQuery="false"></UrlQueryInfo>"#
        );
        let off = r#"<UrlQueryInfo useMPDUrlQuery="false" queryString="a=1"/>"#;
        check(off, off);
    }

    #[test]
    fn a_real_mpd_keeps_every_other_byte() {
        let input = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\r\n<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" type=\"static\">\r\n\t<Period id=\"0\">\r\n\t\t<AdaptationSet id=\"0\" contentType=\"video\">\r\n\t\t\t<Representation id=\"0\" codecs=\"avc1.42c016\" bandwidth=\"500000\">\r\n\t\t\t\t<SegmentTemplate timescale=\"1000000\" duration=\"2000000\" initialization=\"init-$RepresentationID$.m4s\" media=\"seg-$RepresentationID$-$Number%03d$.m4s\" startNumber=\"1\">\r\n\t\t\t\t</SegmentTemplate>\r\n\t\t\t</Representation>\r\n\t\t</AdaptationSet>\r\n\t</Period>\r\n</MPD>\r\n";
        let expect = input
            .replace("init-$RepresentationID$.m4s", "init-$RepresentationID$.m4s?st=TOK")
            .replace("$Number%03d$.m4s", "$Number%03d$.m4s?st=TOK");
        check(input, &expect);
    }

    #[test]
    fn rewriting_twice_changes_nothing() {
        // From the fuzzer: a second `?` ending the URL once made the token go in twice.
        for input in [
            r#"<SegmentURL media="a?x?"/>"#,
            "<MPD><Location>p?.m?</Location></MPD>",
            r#"<SegmentURL media="a?x&amp;"/>"#,
        ] {
            let once = rw(input);
            assert_eq!(rw(&once), once, "{input}");
        }
    }

    #[test]
    fn never_panics_on_odd_bytes() {
        for input in [
            &b"<"[..],
            b"<<<",
            b"</",
            b"<a",
            b"<a b",
            b"<a b=",
            b"<a b=\"",
            b"<a b=c>",
            b"<!--",
            b"<![CDATA[",
            b"<?",
            b"<BaseURL>",
            b"<BaseURL>x",
            b"<SegmentURL media=\"\xff\"/>",
            b"<MPD></Period></MPD><BaseURL>a</BaseURL>",
            b"<Location>&#xFFFFFFFF;</Location>",
            b"<Location>&#;</Location>",
            b"\xff\xfe<\x00>",
        ] {
            let _ = rewrite(input, "st", "T", Some("h"), "a=b");
        }
    }
}
