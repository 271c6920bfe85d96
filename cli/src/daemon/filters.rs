//! Docker's `filters` query parameter (Engine API, list and prune endpoints): a JSON object
//! mapping each filter name to its values, either as a list (`{"label":["a=b"]}`) or, from
//! older clients, as a set (`{"label":{"a=b":true}}`). Each endpoint names the filters it
//! applies; any other is refused (400), never ignored.

use std::collections::BTreeMap;

use super::error::DaemonError;

/// Parsed filters: name → values, in the order the client sent them.
#[derive(Debug, Default, PartialEq)]
pub struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
    /// Parses the raw query value (absent or empty = no filters); refuses malformed JSON and
    /// filter names outside `allowed`, as dockerd does (`invalid filter 'x'`).
    pub fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Filters, DaemonError> {
        let raw = raw.unwrap_or("").trim();
        if raw.is_empty() {
            return Ok(Filters::default());
        }
        let bad = |e: &dyn std::fmt::Display| DaemonError::Invalid(format!("invalid filters: {e}"));
        let v: serde_json::Value = serde_json::from_str(raw).map_err(|e| bad(&e))?;
        let obj = v.as_object().ok_or_else(|| bad(&"not a JSON object"))?;
        let mut out = BTreeMap::new();
        for (name, values) in obj {
            if !allowed.contains(&name.as_str()) {
                return Err(DaemonError::Invalid(format!("invalid filter '{name}'")));
            }
            let values: Vec<String> = match values {
                serde_json::Value::Array(a) => a
                    .iter()
                    .map(|x| x.as_str().map(str::to_string))
                    .collect::<Option<_>>()
                    .ok_or_else(|| bad(&format!("values of '{name}' must be strings")))?,
                serde_json::Value::Object(m) => m.keys().cloned().collect(),
                _ => return Err(bad(&format!("values of '{name}' must be a list"))),
            };
            out.insert(name.clone(), values);
        }
        Ok(Filters(out))
    }

    /// The values given for `name` (empty when the filter is absent).
    pub fn get(&self, name: &str) -> &[String] {
        self.0.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Adds a value to filter `name` (legacy parameters that are filters in newer APIs).
    pub fn add(&mut self, name: &str, value: String) {
        self.0.entry(name.to_string()).or_default().push(value);
    }

    /// Whether the client sent filter `name` (even with no values).
    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// Docker's `Args.Match`: true when `name` is absent, or one value equals `source` or, as
    /// a regular expression, matches somewhere in it (an invalid expression matches nothing).
    pub fn matches(&self, name: &str, source: &str) -> bool {
        let values = self.get(name);
        values.is_empty()
            || values
                .iter()
                .any(|v| v == source || regex::Regex::new(v).is_ok_and(|re| re.is_match(source)))
    }

    /// Docker's `Args.MatchKVList` (the `label` filters): every value, `key` or `key=value`,
    /// must be present in `labels`; true when `name` is absent.
    pub fn matches_labels<'a>(&self, name: &str, labels: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.get(name).iter().all(|v| match v.split_once('=') {
            Some((k, want)) => labels(k) == Some(want),
            None => labels(v).is_some(),
        })
    }

    /// A boolean filter (`true`/`1`, `false`/`0`); `None` when absent. Conflicting or other
    /// values are refused with dockerd's message.
    pub fn bool(&self, name: &str) -> Result<Option<bool>, DaemonError> {
        let mut out = None;
        for v in self.get(name) {
            let b = match v.to_ascii_lowercase().as_str() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => return Err(DaemonError::Invalid(format!("invalid filter '{name}={v}'"))),
            };
            if out.is_some_and(|o| o != b) {
                return Err(DaemonError::Invalid(format!(
                    "conflicting values for filter '{name}'"
                )));
            }
            out = Some(b);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_and_set_forms_parse_alike() {
        let a = Filters::parse(Some(r#"{"all":["true"]}"#), &["all"]).unwrap();
        let b = Filters::parse(Some(r#"{"all":{"true":true}}"#), &["all"]).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.bool("all").unwrap(), Some(true));
        assert_eq!(a.bool("dangling").unwrap(), None);
        assert_eq!(Filters::parse(None, &[]).unwrap(), Filters::default());
        assert_eq!(Filters::parse(Some(""), &[]).unwrap(), Filters::default());
    }

    #[test]
    fn match_is_exact_or_regex_and_labels_all_match() {
        let f = Filters::parse(
            Some(r#"{"name":["^/web$","db"],"label":["a","b=2"]}"#),
            &["name", "label"],
        )
        .unwrap();
        assert!(f.matches("name", "/web"));
        assert!(f.matches("name", "/mydb1"));
        assert!(!f.matches("name", "/web2"));
        assert!(f.matches("id", "anything"), "an absent filter matches");
        let labels = |m: &'static [(&'static str, &'static str)]| {
            move |k: &str| m.iter().find(|(kk, _)| *kk == k).map(|(_, v)| *v)
        };
        assert!(f.matches_labels("label", labels(&[("a", ""), ("b", "2")])));
        assert!(!f.matches_labels("label", labels(&[("a", "x"), ("b", "3")])));
        assert!(!f.matches_labels("label", labels(&[("b", "2")])));
        let bad = Filters::parse(Some(r#"{"name":["(["]}"#), &["name"]).unwrap();
        assert!(!bad.matches("name", "/x"));
    }

    #[test]
    fn unknown_names_and_bad_values_are_refused() {
        let e = Filters::parse(Some(r#"{"label":["a=b"]}"#), &["all"]).unwrap_err();
        assert_eq!(e.to_string(), "invalid filter 'label'");
        let e = Filters::parse(Some("{not json"), &["all"]).unwrap_err();
        assert!(e.to_string().starts_with("invalid filters:"), "{e}");
        let f = Filters::parse(Some(r#"{"all":["yes"]}"#), &["all"]).unwrap();
        assert_eq!(
            f.bool("all").unwrap_err().to_string(),
            "invalid filter 'all=yes'"
        );
        let f = Filters::parse(Some(r#"{"all":["true","0"]}"#), &["all"]).unwrap();
        assert!(f.bool("all").is_err());
    }
}
