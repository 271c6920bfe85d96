//! `.dockerignore` with Docker's rules (moby `patternmatcher`): one pattern a line, `#`
//! comments, patterns cleaned like paths and relative to the context root (a leading `/`
//! is dropped), `*` and `?` within one path element, `**` across any number of them,
//! `[...]` classes, `!` re-includes; the last pattern that matches decides, and a path is
//! matched when it or one of its parent directories is.

use std::path::Path;

use regex::Regex;

#[derive(Debug)]
struct Pattern {
    re: Regex,
    exclusion: bool,
}

#[derive(Debug, Default)]
pub struct Ignore {
    patterns: Vec<Pattern>,
}

/// `a/./b/../c` → `a/c`, with `..` above the root dropped (as `filepath.Clean` on a
/// rooted path).
pub fn clean(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

/// A Docker path pattern as an anchored regex (`*` and `?` do not cross `/`).
pub fn pattern_regex(pattern: &str) -> Result<Regex, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut re = String::from("^");
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '*' if chars.get(i + 1) == Some(&'*') => {
                i += 1;
                if chars.get(i + 1) == Some(&'/') {
                    // `**/` matches zero or more directories.
                    i += 1;
                    re.push_str("(.*/)?");
                } else {
                    re.push_str(".*");
                }
            }
            '*' => re.push_str("[^/]*"),
            '?' => re.push_str("[^/]"),
            '[' => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|&c| c == ']')
                    .ok_or_else(|| format!("syntax error in pattern {pattern:?}: unclosed ["))?;
                let class: String = chars[i + 1..i + 1 + end].iter().collect();
                let class = class
                    .strip_prefix('^')
                    .map_or(class.clone(), |c| format!("^{c}"));
                re.push('[');
                re.push_str(&class.replace('\\', "\\\\"));
                re.push(']');
                i += end + 1;
            }
            '\\' => {
                i += 1;
                if let Some(n) = chars.get(i) {
                    re.push_str(&regex::escape(&n.to_string()));
                }
            }
            c => re.push_str(&regex::escape(&c.to_string())),
        }
        i += 1;
    }
    re.push('$');
    Regex::new(&re).map_err(|e| format!("syntax error in pattern {pattern:?}: {e}"))
}

impl Ignore {
    /// Reads the patterns of a `.dockerignore` text.
    pub fn parse(text: &str) -> Result<Ignore, String> {
        let mut patterns = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (exclusion, p) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let p = clean(p);
            if p.is_empty() {
                continue;
            }
            patterns.push(Pattern {
                re: pattern_regex(&p)?,
                exclusion,
            });
        }
        Ok(Ignore { patterns })
    }

    /// Whether the context-relative `path` (`a/b.txt`) is left out.
    pub fn excluded(&self, path: &str) -> bool {
        let path = clean(path);
        let mut parents = Vec::new();
        let mut acc = String::new();
        for part in path.split('/') {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(part);
            parents.push(acc.clone());
        }
        let mut excluded = false;
        for p in &self.patterns {
            if p.exclusion != excluded {
                continue;
            }
            if parents.iter().any(|candidate| p.re.is_match(candidate)) {
                excluded = !p.exclusion;
            }
        }
        excluded
    }

    /// Deletes what the patterns exclude from the unpacked context `root` (a directory
    /// stays when something under it is re-included).
    pub fn apply(&self, root: &Path) -> std::io::Result<()> {
        if self.patterns.is_empty() {
            return Ok(());
        }
        self.apply_dir(root, root)
    }

    fn apply_dir(&self, root: &Path, dir: &Path) -> std::io::Result<()> {
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let path = e.path();
            let rel = path
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .into_owned();
            let ft = e.file_type()?;
            if ft.is_dir() {
                self.apply_dir(root, &path)?;
                if self.excluded(&rel) && std::fs::read_dir(&path)?.next().is_none() {
                    std::fs::remove_dir(&path)?;
                }
            } else if self.excluded(&rel) {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_rules() {
        let ig = Ignore::parse(
            "# comment\n*.log\n/tmp\n**/*.bak\nsecret/\n!secret/keep.txt\ndocs/**/draft?\n",
        )
        .unwrap();
        assert!(ig.excluded("a.log"));
        assert!(!ig.excluded("sub/a.log"), "* stays in one element");
        assert!(ig.excluded("tmp/x/y"), "a parent matching excludes");
        assert!(ig.excluded("x/y/z.bak"));
        assert!(ig.excluded("z.bak"));
        assert!(ig.excluded("secret/other"));
        assert!(!ig.excluded("secret/keep.txt"));
        assert!(ig.excluded("docs/a/b/draft1"));
        assert!(ig.excluded("docs/draft1"));
        assert!(!ig.excluded("main.go"));
    }

    #[test]
    fn last_match_wins_and_classes() {
        let ig = Ignore::parse("*\n!src\nsrc/[ab].txt\n").unwrap();
        assert!(ig.excluded("Dockerfile"));
        assert!(!ig.excluded("src/c.txt"));
        assert!(ig.excluded("src/a.txt"));
    }

    #[test]
    fn apply_keeps_reincluded_paths() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("secret")).unwrap();
        std::fs::write(d.path().join("secret/keep.txt"), "k").unwrap();
        std::fs::write(d.path().join("secret/drop.txt"), "d").unwrap();
        std::fs::create_dir_all(d.path().join("logs")).unwrap();
        std::fs::write(d.path().join("logs/a"), "a").unwrap();
        std::fs::write(d.path().join("app.txt"), "x").unwrap();
        Ignore::parse("secret\n!secret/keep.txt\nlogs\n")
            .unwrap()
            .apply(d.path())
            .unwrap();
        assert!(d.path().join("secret/keep.txt").exists());
        assert!(!d.path().join("secret/drop.txt").exists());
        assert!(!d.path().join("logs").exists());
        assert!(d.path().join("app.txt").exists());
    }
}
