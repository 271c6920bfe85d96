//! Docker's time arguments (`since`, `until` of logs, events and filters): Unix seconds with
//! an optional fraction (`1700000000.123456789`, what the CLI sends), RFC 3339, a date
//! (`2006-01-02`, `2006-01-02T15:04:05`, UTC), or a Go duration before now (`10m`, `1h30m`).

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

/// Unix seconds of `v`, or `None` when it is none of the accepted forms.
pub fn parse(v: &str) -> Option<i64> {
    parse_nanos(v).map(|n| n.div_euclid(1_000_000_000) as i64)
}

/// Unix nanoseconds of `v`, or `None` when it is none of the accepted forms.
pub fn parse_nanos(v: &str) -> Option<i128> {
    let v = v.trim();
    if v.is_empty() {
        return None;
    }
    if let Some((secs, frac)) = v.split_once('.') {
        if let (Ok(s), true) = (
            secs.parse::<i64>(),
            frac.chars().all(|c| c.is_ascii_digit()),
        ) {
            let digits = format!("{frac:0<9}");
            let nanos: i128 = digits.get(..9)?.parse().ok()?;
            return Some(s as i128 * 1_000_000_000 + nanos);
        }
    } else if let Ok(s) = v.parse::<i64>() {
        return Some(s as i128 * 1_000_000_000);
    }
    let nanos = |t: DateTime<Utc>| t.timestamp_nanos_opt().map(i128::from);
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return nanos(t.with_timezone(&Utc));
    }
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(v, f) {
            return nanos(t.and_utc());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(v, "%Y-%m-%d") {
        return nanos(d.and_hms_opt(0, 0, 0)?.and_utc());
    }
    let ago = duration_nanos(v)?;
    Some(nanos(Utc::now())? - ago)
}

/// A Go duration (`1h30m`, `10s`, `1.5h`, `300ms`) in nanoseconds.
fn duration_nanos(v: &str) -> Option<i128> {
    let mut total = 0f64;
    let mut rest = v;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_len..];
    }
    Some(total as i128)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_docker_accepts() {
        assert_eq!(parse("1700000000"), Some(1_700_000_000));
        assert_eq!(parse_nanos("1700000000.5"), Some(1_700_000_000_500_000_000));
        assert_eq!(parse("2023-11-14T22:13:20Z"), Some(1_700_000_000));
        assert_eq!(parse("2023-11-14T22:13:20"), Some(1_700_000_000));
        assert_eq!(parse("2023-11-14"), Some(1_699_920_000));
        let now = Utc::now().timestamp();
        let ago = parse("1h30m").unwrap();
        assert!((now - 5400 - ago).abs() <= 1, "{ago}");
        assert_eq!(parse("soon"), None);
        assert_eq!(parse(""), None);
        assert_eq!(parse("10x"), None);
    }
}
