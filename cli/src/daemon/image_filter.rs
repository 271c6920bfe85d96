//! Which images `GET /images/json` lists: Docker's `filters` (`before`, `dangling`, `label`,
//! `reference`, `since`, `until`) with dockerd's semantics (daemon/images/images.go):
//! `reference` is a `path.Match` glob over the familiar name with or without its tag, and
//! keeps only the tags it matches; `before`/`since` compare creation times strictly.

use std::collections::HashMap;

use super::error::DaemonError;
use super::filters::Filters;

/// The filter names `/images/json` accepts.
pub const NAMES: &[&str] = &["before", "dangling", "label", "reference", "since", "until"];

/// One image as the list sees it.
pub struct ImageRow {
    /// Familiar `name:tag` strings.
    pub tags: Vec<String>,
    /// Unix seconds.
    pub created: i64,
    pub labels: HashMap<String, String>,
}

/// A parsed image list request.
pub struct ImageQuery {
    filters: Filters,
    dangling: Option<bool>,
    references: Vec<regex::Regex>,
    /// Unix seconds of the `before` / `since` images, and the `until` bound.
    before: Option<i64>,
    since: Option<i64>,
    until: Option<i64>,
}

impl ImageQuery {
    /// Validates `filters`; `created` gives the creation time of an image reference
    /// (`before`, `since`; its error, a 404, is the answer).
    pub fn new(
        filters: Filters,
        created: impl Fn(&str) -> Result<i64, DaemonError>,
    ) -> Result<ImageQuery, DaemonError> {
        let dangling = filters.bool("dangling")?;
        let references = filters
            .get("reference")
            .iter()
            .map(|p| glob_regex(p))
            .collect::<Result<_, _>>()?;
        let one = |name: &str| -> Result<Option<i64>, DaemonError> {
            filters.get(name).last().map(|v| created(v)).transpose()
        };
        let before = one("before")?;
        let since = one("since")?;
        let until = filters
            .get("until")
            .last()
            .map(|v| {
                super::time_arg::parse(v).ok_or_else(|| {
                    DaemonError::Invalid(format!("invalid filter 'until={v}': not a timestamp"))
                })
            })
            .transpose()?;
        Ok(ImageQuery {
            filters,
            dangling,
            references,
            before,
            since,
            until,
        })
    }

    /// The image's tags this listing shows, or `None` when it does not list the image.
    pub fn select(&self, row: &ImageRow) -> Option<Vec<String>> {
        if self.before.is_some_and(|b| row.created >= b)
            || self.since.is_some_and(|s| row.created <= s)
            || self.until.is_some_and(|u| row.created > u)
        {
            return None;
        }
        if !self
            .filters
            .matches_labels("label", |k| row.labels.get(k).map(String::as_str))
        {
            return None;
        }
        let tags: Vec<String> = if self.references.is_empty() {
            row.tags.clone()
        } else {
            let kept: Vec<String> = row
                .tags
                .iter()
                .filter(|t| {
                    let name = t.rsplit_once(':').filter(|(_, tag)| !tag.contains('/'));
                    self.references
                        .iter()
                        .any(|re| re.is_match(t) || name.is_some_and(|(n, _)| re.is_match(n)))
                })
                .cloned()
                .collect();
            // A reference filter never lists untagged images.
            if kept.is_empty() {
                return None;
            }
            kept
        };
        match self.dangling {
            Some(true) if !row.tags.is_empty() => None,
            Some(false) if row.tags.is_empty() => None,
            _ => Some(tags),
        }
    }
}

/// Go's `path.Match` pattern as an anchored regular expression: `*` and `?` stop at `/`,
/// `[...]` classes (with `^` negation) and `\` escapes as Go has them.
fn glob_regex(pattern: &str) -> Result<regex::Regex, DaemonError> {
    let bad = || DaemonError::Invalid(format!("invalid reference filter {pattern:?}: bad pattern"));
    let mut re = String::from("^");
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => re.push_str("[^/]*"),
            '?' => re.push_str("[^/]"),
            '\\' => re.push_str(&regex::escape(&chars.next().ok_or_else(bad)?.to_string())),
            '[' => {
                re.push('[');
                if chars.peek() == Some(&'^') {
                    chars.next();
                    re.push('^');
                }
                let mut closed = false;
                for c in chars.by_ref() {
                    if c == ']' {
                        closed = true;
                        break;
                    }
                    if matches!(c, '[' | '\\' | '&' | '~' | '|') {
                        re.push('\\');
                    }
                    re.push(c);
                }
                if !closed {
                    return Err(bad());
                }
                re.push(']');
            }
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    regex::Regex::new(&re).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<ImageRow> {
        let row = |tags: &[&str], created: i64, label: Option<(&str, &str)>| ImageRow {
            tags: tags.iter().map(|t| t.to_string()).collect(),
            created,
            labels: label
                .map(|(k, v)| HashMap::from([(k.to_string(), v.to_string())]))
                .unwrap_or_default(),
        };
        vec![
            row(
                &["busybox:latest", "busybox:1"],
                100,
                Some(("tier", "base")),
            ),
            row(&["127.0.0.1:5000/app/web:v2"], 200, Some(("tier", "app"))),
            row(&[], 300, None),
        ]
    }

    fn list(raw: &str) -> Vec<String> {
        let f = Filters::parse(Some(raw), NAMES).unwrap();
        let q = ImageQuery::new(f, |r| match r {
            "busybox" => Ok(100),
            "c" => Ok(300),
            _ => Err(DaemonError::NoSuchImage(r.into())),
        })
        .unwrap();
        rows()
            .iter()
            .zip(["a", "b", "c"])
            .filter_map(|(r, id)| q.select(r).map(|t| format!("{id}{t:?}")))
            .collect()
    }

    #[test]
    fn each_filter_selects_as_dockerd() {
        assert_eq!(list("{}").len(), 3);
        assert_eq!(list(r#"{"dangling":["true"]}"#), [r#"c[]"#]);
        assert_eq!(list(r#"{"dangling":["false"]}"#).len(), 2);
        assert_eq!(
            list(r#"{"label":["tier=app"]}"#),
            [r#"b["127.0.0.1:5000/app/web:v2"]"#]
        );
        assert_eq!(list(r#"{"label":["tier"]}"#).len(), 2);
        assert_eq!(
            list(r#"{"reference":["busybox"]}"#),
            [r#"a["busybox:latest", "busybox:1"]"#]
        );
        assert_eq!(
            list(r#"{"reference":["busybox:1"]}"#),
            [r#"a["busybox:1"]"#]
        );
        assert_eq!(list(r#"{"reference":["busy*"]}"#).len(), 1);
        assert!(list(r#"{"reference":["web"]}"#).is_empty());
        assert_eq!(list(r#"{"reference":["127.0.0.1:5000/app/*"]}"#).len(), 1);
        assert_eq!(list(r#"{"reference":["*/app/web:v?"]}"#).len(), 1);
        assert_eq!(list(r#"{"before":["c"]}"#).len(), 2);
        assert_eq!(list(r#"{"since":["busybox"]}"#).len(), 2);
        assert_eq!(list(r#"{"until":["150"]}"#).len(), 1);
    }

    #[test]
    fn bad_filters_are_refused() {
        let f = |raw: &str| {
            Filters::parse(Some(raw), NAMES)
                .and_then(|f| ImageQuery::new(f, |r| Err(DaemonError::NoSuchImage(r.into()))))
        };
        assert_eq!(
            f(r#"{"colour":["x"]}"#).err().unwrap().to_string(),
            "invalid filter 'colour'"
        );
        assert_eq!(
            f(r#"{"dangling":["maybe"]}"#).err().unwrap().to_string(),
            "invalid filter 'dangling=maybe'"
        );
        assert!(matches!(
            f(r#"{"before":["ghost"]}"#),
            Err(DaemonError::NoSuchImage(_))
        ));
        assert!(f(r#"{"reference":["[ab"]}"#).is_err());
        assert!(f(r#"{"until":["soon"]}"#).is_err());
    }
}
