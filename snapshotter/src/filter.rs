//! Walk filters, in containerd's filter syntax (`pkg/filters`): a list of filters of which
//! any may match; each is `,`-joined conditions that all must match; a condition is
//! `field==value`, `field!=value` or a bare `field` (present). Fields: `name`, `parent`,
//! `kind`, `labels.<key>` (the key may be quoted: `labels."containerd.io/gc.root"`).
//! Values may be double-quoted. Regular expressions (`~=`) are refused rather than ignored.

use crate::error::{Result, SnapshotError};
use crate::meta::Snapshot;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    Name,
    Parent,
    Kind,
    Label(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Present,
    Eq(String),
    Ne(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Condition {
    field: Field,
    op: Op,
}

/// Parsed filters: a snapshot matches if any filter's conditions all hold (no filter: all).
#[derive(Debug, Clone, Default)]
pub struct Filters(Vec<Vec<Condition>>);

fn unquote(s: &str) -> String {
    let s = s.trim();
    match s.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(inner) => inner.replace("\\\"", "\""),
        None => s.to_string(),
    }
}

/// Splits on `sep` outside double quotes.
fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    let mut prev = '\0';
    for (i, c) in s.char_indices() {
        if c == '"' && prev != '\\' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            out.push(&s[start..i]);
            start = i + c.len_utf8();
        }
        prev = c;
    }
    out.push(&s[start..]);
    out
}

fn parse_field(filter: &str, f: &str) -> Result<Field> {
    let bad = |reason| SnapshotError::BadFilter {
        filter: filter.to_string(),
        reason,
    };
    let f = f.trim();
    Ok(match f {
        "name" => Field::Name,
        "parent" => Field::Parent,
        "kind" => Field::Kind,
        _ => match f.strip_prefix("labels.") {
            Some(key) if !key.is_empty() => Field::Label(unquote(key)),
            _ => return Err(bad("unknown field (name, parent, kind, labels.<key>)")),
        },
    })
}

fn parse_condition(filter: &str, c: &str) -> Result<Condition> {
    if c.contains("~=") {
        return Err(SnapshotError::BadFilter {
            filter: filter.to_string(),
            reason: "regular expression matches (~=) are not supported",
        });
    }
    for (sep, ne) in [("!=", true), ("==", false)] {
        // The operator is the first one outside quotes.
        if let Some((field, value)) = find_op(c, sep) {
            let field = parse_field(filter, field)?;
            let value = unquote(value);
            let op = if ne { Op::Ne(value) } else { Op::Eq(value) };
            return Ok(Condition { field, op });
        }
    }
    Ok(Condition {
        field: parse_field(filter, c)?,
        op: Op::Present,
    })
}

fn find_op<'a>(c: &'a str, op: &str) -> Option<(&'a str, &'a str)> {
    let mut quoted = false;
    for (i, ch) in c.char_indices() {
        if ch == '"' {
            quoted = !quoted;
        } else if !quoted && c[i..].starts_with(op) {
            return Some((&c[..i], &c[i + op.len()..]));
        }
    }
    None
}

impl Filters {
    /// Parses containerd filter strings; an empty list (or only empty strings) matches all.
    pub fn parse(filters: &[String]) -> Result<Filters> {
        let mut out = Vec::new();
        for f in filters {
            if f.trim().is_empty() {
                continue;
            }
            let conds = split_unquoted(f, ',')
                .into_iter()
                .map(|c| parse_condition(f, c))
                .collect::<Result<Vec<_>>>()?;
            out.push(conds);
        }
        Ok(Filters(out))
    }

    /// Whether `s` passes.
    pub fn matches(&self, s: &Snapshot) -> bool {
        self.0.is_empty() || self.0.iter().any(|conds| conds.iter().all(|c| c.holds(s)))
    }
}

impl Condition {
    fn holds(&self, s: &Snapshot) -> bool {
        let value = match &self.field {
            Field::Name => Some(s.key.as_str()),
            Field::Parent => Some(s.parent.as_str()),
            Field::Kind => Some(s.kind.as_str()),
            Field::Label(k) => s.labels.get(k).map(String::as_str),
        };
        match &self.op {
            Op::Present => value.is_some_and(|v| !v.is_empty()),
            Op::Eq(want) => value == Some(want.as_str()),
            Op::Ne(want) => value != Some(want.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::Kind;
    use std::collections::HashMap;
    use std::time::SystemTime;

    fn snap(key: &str, parent: &str, labels: &[(&str, &str)]) -> Snapshot {
        Snapshot {
            id: 1,
            key: key.into(),
            kind: Kind::Committed,
            parent: parent.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>(),
            created: SystemTime::UNIX_EPOCH,
            updated: SystemTime::UNIX_EPOCH,
            size: 0,
            inodes: 0,
            remote: None,
        }
    }

    #[test]
    fn conditions_and_within_a_filter_or_across_filters() {
        let s = snap("a", "p", &[("containerd.io/gc.root", "x")]);
        let f = |v: &[&str]| Filters::parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert!(f(&[]).unwrap().matches(&s));
        assert!(f(&["name==a,parent==p"]).unwrap().matches(&s));
        assert!(!f(&["name==a,parent==q"]).unwrap().matches(&s));
        assert!(f(&["name==b", "kind==committed"]).unwrap().matches(&s));
        assert!(f(&[r#"labels."containerd.io/gc.root""#])
            .unwrap()
            .matches(&s));
        assert!(f(&[r#"labels."containerd.io/gc.root"=="x""#])
            .unwrap()
            .matches(&s));
        assert!(!f(&["labels.other"]).unwrap().matches(&s));
        assert!(f(&["name!=b"]).unwrap().matches(&s));
    }

    #[test]
    fn unknown_fields_and_regexps_are_refused_by_name() {
        let e = Filters::parse(&["size==3".into()]).unwrap_err();
        assert!(e.to_string().contains("size==3"), "{e}");
        let e = Filters::parse(&["name~=a.*".into()]).unwrap_err();
        assert!(e.to_string().contains("not supported"), "{e}");
    }
}
