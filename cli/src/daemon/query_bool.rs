//! Boolean query parameters as dockerd reads them (`httputils.BoolValue`).

/// True for anything but empty, `0`, `no`, `false` or `none` (any case, spaces trimmed).
pub fn truthy(v: &str) -> bool {
    !matches!(
        v.trim().to_lowercase().as_str(),
        "" | "0" | "no" | "false" | "none"
    )
}

/// [`truthy`] of an optional parameter; absent is false.
pub fn flag(v: &Option<String>) -> bool {
    v.as_deref().is_some_and(truthy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerd_bool_values() {
        for t in ["1", "true", "True", "yes", " on "] {
            assert!(truthy(t), "{t}");
        }
        for f in ["", "0", "no", "FALSE", "None"] {
            assert!(!truthy(f), "{f}");
        }
        assert!(!flag(&None));
        assert!(flag(&Some("1".into())));
    }
}
