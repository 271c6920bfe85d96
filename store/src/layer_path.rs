//! [`LayerPath`]: a file name or link target of a layer, as the bytes the tar carries.
//!
//! Linux names are bytes, not text: `caf\xe9.txt` (Latin-1) is a valid name that Docker,
//! containerd and podman keep byte for byte. Layer indexes are persisted as JSON (SQLite table
//! `layer_files`), so the serde form is chosen to keep indexes written before names were bytes
//! loadable without a migration:
//!
//! - valid UTF-8 → a plain JSON string (`"etc/passwd"`), exactly as before;
//! - anything else → `{"b64": "<standard base64 of the bytes>"}`.
//!
//! Deserializing accepts both forms. Text shown to people (errors, logs) is lossy
//! ([`LayerPath::display`]); nothing else converts the bytes.

use std::borrow::Cow;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use base64::Engine;

/// A path or link target inside a layer, as raw bytes (see the module docs for its JSON form).
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LayerPath(Vec<u8>);

impl LayerPath {
    pub fn new(bytes: impl Into<Vec<u8>>) -> LayerPath {
        LayerPath(bytes.into())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    pub fn as_os_str(&self) -> &OsStr {
        OsStr::from_bytes(&self.0)
    }

    /// The path as text, if it is valid UTF-8.
    pub fn to_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// For messages only: invalid UTF-8 shows as U+FFFD.
    pub fn display(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.0)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `/`-separated components (empty ones included, as `split` gives them).
    pub fn components(&self) -> impl Iterator<Item = &[u8]> {
        self.0.split(|&b| b == b'/')
    }
}

impl std::fmt::Debug for LayerPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.to_str() {
            Some(s) => write!(f, "{s:?}"),
            None => write!(f, "b\"{}\"", self.0.escape_ascii()),
        }
    }
}

/// Lossy, for messages.
impl std::fmt::Display for LayerPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display())
    }
}

impl From<&str> for LayerPath {
    fn from(s: &str) -> Self {
        LayerPath(s.as_bytes().to_vec())
    }
}

impl From<String> for LayerPath {
    fn from(s: String) -> Self {
        LayerPath(s.into_bytes())
    }
}

impl From<Vec<u8>> for LayerPath {
    fn from(b: Vec<u8>) -> Self {
        LayerPath(b)
    }
}

impl From<&[u8]> for LayerPath {
    fn from(b: &[u8]) -> Self {
        LayerPath(b.to_vec())
    }
}

impl PartialEq<str> for LayerPath {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for LayerPath {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<String> for LayerPath {
    fn eq(&self, other: &String) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<[u8]> for LayerPath {
    fn eq(&self, other: &[u8]) -> bool {
        self.0 == other
    }
}

impl PartialEq<&[u8]> for LayerPath {
    fn eq(&self, other: &&[u8]) -> bool {
        self.0 == *other
    }
}

impl serde::Serialize for LayerPath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self.to_str() {
            Some(text) => s.serialize_str(text),
            None => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry(
                    "b64",
                    &base64::engine::general_purpose::STANDARD.encode(&self.0),
                )?;
                m.end()
            }
        }
    }
}

impl<'de> serde::Deserialize<'de> for LayerPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = LayerPath;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or {\"b64\": \"...\"}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<LayerPath, E> {
                Ok(LayerPath::from(v))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<LayerPath, E> {
                Ok(LayerPath::from(v))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<LayerPath, A::Error> {
                let mut out = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "b64" {
                        return Err(serde::de::Error::unknown_field(&key, &["b64"]));
                    }
                    let text: String = map.next_value()?;
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(text)
                        .map_err(serde::de::Error::custom)?;
                    out = Some(LayerPath(bytes));
                }
                out.ok_or_else(|| serde::de::Error::missing_field("b64"))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_stays_a_plain_string_and_bytes_round_trip() {
        let p = LayerPath::from("etc/passwd");
        assert_eq!(serde_json::to_string(&p).unwrap(), r#""etc/passwd""#);
        let raw = LayerPath::new(b"caf\xe9.txt".to_vec());
        let json = serde_json::to_string(&raw).unwrap();
        assert_eq!(json, r#"{"b64":"Y2Fm6S50eHQ="}"#);
        assert_eq!(serde_json::from_str::<LayerPath>(&json).unwrap(), raw);
        // Indexes stored before names were bytes: plain strings load unchanged.
        let old: LayerPath = serde_json::from_str(r#""a/b c""#).unwrap();
        assert_eq!(old, "a/b c");
        assert_eq!(raw.display(), "caf\u{fffd}.txt");
        assert_eq!(format!("{raw:?}"), r#"b"caf\xe9.txt""#);
        assert!(serde_json::from_str::<LayerPath>(r#"{"hex":"00"}"#).is_err());
    }
}
