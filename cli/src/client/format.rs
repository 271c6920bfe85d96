//! Docker's human-readable output: durations, sizes, truncated ids, tables.

use std::time::{SystemTime, UNIX_EPOCH};

/// "3 seconds", "About a minute", "2 hours" — Docker's `units.HumanDuration`.
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    if s < 1 {
        "Less than a second".into()
    } else if s == 1 {
        "1 second".into()
    } else if s < 60 {
        format!("{s} seconds")
    } else if s / 60 == 1 {
        "About a minute".into()
    } else if s < 3600 {
        format!("{} minutes", s / 60)
    } else if (s as f64 / 3600.0).round() as i64 == 1 {
        "About an hour".into()
    } else if s < 48 * 3600 {
        format!("{} hours", (s as f64 / 3600.0).round() as i64)
    } else if s < 7 * 24 * 3600 * 2 {
        format!("{} days", s / (24 * 3600))
    } else if s < 30 * 24 * 3600 * 2 {
        format!("{} weeks", s / (7 * 24 * 3600))
    } else if s < 365 * 24 * 3600 * 2 {
        format!("{} months", s / (30 * 24 * 3600))
    } else {
        format!("{} years", s / (365 * 24 * 3600))
    }
}

/// "2 minutes ago" for a unix timestamp.
pub fn ago(unix_secs: i64) -> String {
    format!("{} ago", human_duration(now() - unix_secs))
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Sizes as Docker prints them: decimal units, 3 significant digits ("1.23MB", "423MB").
pub fn human_size(bytes: i64) -> String {
    scaled(bytes, 1000.0, &["B", "kB", "MB", "GB", "TB", "PB"], 3)
}

/// Memory sizes as `docker stats` prints them: binary units, 4 significant digits
/// ("455.2KiB", "32MiB"; go-units' `BytesSize`).
pub fn binary_size(bytes: i64) -> String {
    scaled(bytes, 1024.0, &["B", "KiB", "MiB", "GiB", "TiB", "PiB"], 4)
}

/// `bytes` in the largest unit below it, as C's `%.<significant>g` (trailing zeros
/// trimmed) followed by the unit.
fn scaled(bytes: i64, base: f64, units: &[&str], significant: usize) -> String {
    let mut v = bytes.max(0) as f64;
    let mut i = 0;
    while v >= base && i < units.len() - 1 {
        v /= base;
        i += 1;
    }
    let int_digits = if v >= 1.0 {
        v.log10().floor() as usize + 1
    } else {
        1
    };
    let digits = significant.saturating_sub(int_digits);
    let mut out = format!("{v:.digits$}");
    if out.contains('.') {
        out = out.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{out}{}", units[i])
}

/// The 12-character short form of an id (after an optional `sha256:`).
pub fn short_id(id: &str) -> String {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    id.chars().take(12).collect()
}

/// Truncates with an ellipsis like Docker's `ps` COMMAND column.
pub fn ellipsis(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

/// Prints rows as columns separated by at least three spaces, like Docker's tabwriter.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        let n = cells.len();
        for (i, c) in cells.into_iter().enumerate() {
            if i + 1 == n {
                out.push_str(&c);
            } else {
                let pad = widths[i] + 3 - c.chars().count();
                out.push_str(&c);
                out.push_str(&" ".repeat(pad));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.iter().map(|s| s.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

/// Parses "64m", "1g", "512k", "1024" (bytes) as Docker's `RAMInBytes`.
pub fn parse_bytes(s: &str) -> Option<i64> {
    let s = s.trim().to_ascii_lowercase();
    let (num, mult) = match s.trim_end_matches('b').chars().last()? {
        'k' => (&s[..s.trim_end_matches('b').len() - 1], 1i64 << 10),
        'm' => (&s[..s.trim_end_matches('b').len() - 1], 1 << 20),
        'g' => (&s[..s.trim_end_matches('b').len() - 1], 1 << 30),
        't' => (&s[..s.trim_end_matches('b').len() - 1], 1 << 40),
        _ => (s.trim_end_matches('b'), 1),
    };
    let v: f64 = num.parse().ok()?;
    if v < 0.0 {
        return None;
    }
    Some((v * mult as f64) as i64)
}

/// `--filter KEY=VALUE` flags as Docker's `filters` map (values of one key are alternatives).
pub fn filter_map(
    flags: &[String],
) -> anyhow::Result<std::collections::HashMap<String, Vec<String>>> {
    let mut out: std::collections::HashMap<String, Vec<String>> = Default::default();
    for f in flags {
        let (k, v) = f
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("bad format of filter (expected name=value): {f}"))?;
        out.entry(k.to_string()).or_default().push(v.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_read_like_docker_stats() {
        assert_eq!(binary_size(0), "0B");
        assert_eq!(binary_size(200 * 1024), "200KiB");
        assert_eq!(binary_size(466_124), "455.2KiB");
        assert_eq!(binary_size(32 << 20), "32MiB");
        assert_eq!(binary_size(1536 << 20), "1.5GiB");
    }

    #[test]
    fn durations_read_like_docker() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(3), "3 seconds");
        assert_eq!(human_duration(65), "About a minute");
        assert_eq!(human_duration(150), "2 minutes");
        assert_eq!(human_duration(3700), "About an hour");
        assert_eq!(human_duration(3 * 3600), "3 hours");
        assert_eq!(human_duration(3 * 86400), "3 days");
    }

    #[test]
    fn sizes_read_like_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1234), "1.23kB");
        assert_eq!(human_size(423_000_000), "423MB");
        assert_eq!(human_size(12_500_000), "12.5MB");
    }

    #[test]
    fn byte_specs_parse() {
        assert_eq!(parse_bytes("64m"), Some(64 << 20));
        assert_eq!(parse_bytes("1g"), Some(1 << 30));
        assert_eq!(parse_bytes("512KB"), Some(512 << 10));
        assert_eq!(parse_bytes("100"), Some(100));
        assert_eq!(parse_bytes("x"), None);
    }

    #[test]
    fn ids_and_commands_shorten() {
        assert_eq!(short_id("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(ellipsis("abcdef", 4), "abc…");
        assert_eq!(ellipsis("abc", 4), "abc");
    }
}
