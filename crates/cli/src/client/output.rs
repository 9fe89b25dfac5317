//! Output for people and scripts: aligned tables, UTC and relative times,
//! durations, and the parsers for times and durations given on the command line.

use std::fmt::Write as _;

/// An aligned text table: a header row and data rows, columns separated by two spaces.
#[derive(Debug)]
pub(crate) struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(header: &[&'static str]) -> Table {
        Table { header: header.to_vec(), rows: Vec::new() }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Renders the table; the last column is not padded.
    pub(crate) fn render(&self) -> String {
        let n = self.header.len();
        let mut width = vec![0usize; n];
        for (i, h) in self.header.iter().enumerate() {
            width[i] = h.chars().count();
        }
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(n) {
                width[i] = width[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        let mut line = |cells: &mut dyn Iterator<Item = &str>| {
            let mut l = String::new();
            for (i, c) in cells.enumerate() {
                if i + 1 < n {
                    let _ = write!(l, "{c:<w$}  ", w = width[i]);
                } else {
                    l.push_str(c);
                }
            }
            out.push_str(l.trim_end());
            out.push('\n');
        };
        line(&mut self.header.iter().copied());
        for r in &self.rows {
            line(&mut r.iter().map(String::as_str));
        }
        out
    }
}

/// `2024-05-01 12:00:00 UTC`; `-` for 0 (unset).
pub(crate) fn utc(secs: u64) -> String {
    if secs == 0 {
        return "-".into();
    }
    let (y, mo, d, h, mi, s) = civil(secs);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC")
}

/// `2024-05-01T12:00:00Z`, for JSON.
pub(crate) fn rfc3339(secs: u64) -> String {
    let (y, mo, d, h, mi, s) = civil(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// `4 min ago`, `in 2 h 5 min`, `just now`.
pub(crate) fn relative(secs: u64, now: u64) -> String {
    if secs == now {
        "just now".into()
    } else if secs < now {
        format!("{} ago", duration(now - secs))
    } else {
        format!("in {}", duration(secs - now))
    }
}

/// `12 s`, `4 min 12 s`, `2 h 5 min`, `3 d 4 h`.
pub(crate) fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match secs {
        0..60 => format!("{s} s"),
        60..600 if s != 0 => format!("{m} min {s} s"),
        60..3600 => format!("{m} min"),
        3600..86_400 if m != 0 => format!("{} h {m} min", secs / 3600),
        3600..86_400 => format!("{} h", secs / 3600),
        _ if h != 0 => format!("{d} d {h} h"),
        _ => format!("{d} d"),
    }
}

/// Parses a signed duration: `3s`, `-2m`, `+1h30m`, `90` (seconds), `500ms`
/// (rounded to whole seconds away from zero). Units: ms, s, m/min, h, d.
pub(crate) fn parse_duration(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let (sign, body) = match t.as_bytes().first() {
        Some(b'-') => (-1, &t[1..]),
        Some(b'+') => (1, &t[1..]),
        _ => (1, t),
    };
    let bad = || format!("{s:?} is not a duration (examples: 3s, -2m, 1h30m, 90)");
    if body.is_empty() {
        return Err(bad());
    }
    if body.bytes().all(|b| b.is_ascii_digit()) {
        return body.parse::<i64>().map(|v| sign * v).map_err(|_| bad());
    }
    let (mut total_ms, mut rest) = (0i64, body);
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: i64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let factor_ms = match &rest[..unit_len] {
            "ms" => 1,
            "s" | "sec" => 1000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total_ms = n.checked_mul(factor_ms).and_then(|v| total_ms.checked_add(v)).ok_or_else(bad)?;
    }
    Ok(sign * ((total_ms + 999) / 1000))
}

/// Parses a point in time: Unix seconds, `now`, an RFC 3339 UTC time
/// (`2024-05-01T12:00:00Z`, also with a space and without the `Z`), or a signed
/// duration relative to `now` (`-10m`, `+1h`).
pub(crate) fn parse_time(s: &str, now: u64) -> Result<u64, String> {
    let t = s.trim();
    if t == "now" {
        return Ok(now);
    }
    if t.starts_with('-') || t.starts_with('+') {
        let d = parse_duration(t)?;
        return now.checked_add_signed(d).ok_or_else(|| format!("{s:?} is out of range"));
    }
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().map_err(|_| format!("{s:?} is out of range"));
    }
    parse_rfc3339(t)
        .ok_or_else(|| format!("{s:?} is not a time (examples: 2024-05-01T12:00:00Z, 1714564800, now, -10m, +1h)"))
}

fn parse_rfc3339(t: &str) -> Option<u64> {
    let t = t.strip_suffix('Z').or_else(|| t.strip_suffix("+00:00")).unwrap_or(t);
    let (date, time) = t.split_once(['T', ' '])?;
    let mut d = date.split('-');
    let (y, mo, da): (i64, u32, u32) = (d.next()?.parse().ok()?, d.next()?.parse().ok()?, d.next()?.parse().ok()?);
    let mut c = time.split(':');
    let (h, mi): (u64, u64) = (c.next()?.parse().ok()?, c.next()?.parse().ok()?);
    let s: u64 = c.next().map(|v| v.split('.').next().unwrap_or("0").parse()).transpose().ok()?.unwrap_or(0);
    if d.next().is_some() || c.next().is_some() || !(1..=12).contains(&mo) || !(1..=31).contains(&da) {
        return None;
    }
    if h > 23 || mi > 59 || s > 60 || y < 1970 {
        return None;
    }
    let days = days_from_civil(y, mo, da);
    u64::try_from(days).ok().map(|d| d * 86_400 + h * 3600 + mi * 60 + s)
}

/// Howard Hinnant's `days_from_civil`.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Howard Hinnant's `civil_from_days`, plus the time of day.
fn civil(secs: u64) -> (i64, u32, u32, u64, u64, u64) {
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let tod = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, tod / 3600, tod / 60 % 60, tod % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_format_and_parse_back() {
        for (secs, text) in [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_700_000_000, "2023-11-14T22:13:20Z"),
            (4_102_444_799, "2099-12-31T23:59:59Z"),
        ] {
            assert_eq!(rfc3339(secs), text);
            assert_eq!(parse_time(text, 5).unwrap(), secs, "{text}");
        }
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(parse_time("2023-11-14 22:13:20", 0).unwrap(), 1_700_000_000);
        assert_eq!(parse_time("now", 42).unwrap(), 42);
        assert_eq!(parse_time("-10m", 1000).unwrap(), 400);
        assert_eq!(parse_time("+1h", 0).unwrap(), 3600);
        assert_eq!(parse_time("1700000000", 0).unwrap(), 1_700_000_000);
        for bad in ["", "yesterday", "2023-13-01T00:00:00Z", "2023-11-14", "-x"] {
            assert!(parse_time(bad, 0).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        for (s, v) in [("3s", 3), ("-3s", -3), ("+2m", 120), ("1h30m", 5400), ("90", 90), ("1500ms", 2), ("1d", 86_400)]
        {
            assert_eq!(parse_duration(s).unwrap(), v, "{s}");
        }
        for bad in ["", "s", "3x", "1.5s", "--3s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(duration(12), "12 s");
        assert_eq!(duration(252), "4 min 12 s");
        assert_eq!(duration(240), "4 min");
        assert_eq!(duration(3000), "50 min");
        assert_eq!(duration(7500), "2 h 5 min");
        assert_eq!(duration(3 * 86_400 + 4 * 3600 + 5), "3 d 4 h");
        assert_eq!(relative(100, 340), "4 min ago");
        assert_eq!(relative(400, 340), "in 1 min");
        assert_eq!(relative(5, 5), "just now");
    }

    #[test]
    fn tables_align() {
        let mut t = Table::new(&["ID", "STATE", "NOTE"]);
        t.row(vec!["1".into(), "ACTIVE".into(), "x".into()]);
        t.row(vec!["10".into(), "RETIRED".into(), "".into()]);
        assert_eq!(t.render(), "ID  STATE    NOTE\n1   ACTIVE   x\n10  RETIRED\n");
    }
}
