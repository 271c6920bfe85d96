//! Variable substitution and word splitting as Docker's builder does it for `ENV`, `ARG`,
//! `LABEL`, `COPY`, `WORKDIR` ... (moby `shell.Lex`): `$VAR`, `${VAR}`, `${VAR:-word}`,
//! `${VAR:+word}`, `${VAR-word}`, `${VAR+word}`; single quotes keep text literal; double
//! quotes group and still substitute; the escape character keeps the next one literal.

use std::collections::HashMap;

/// Variables in scope: `ENV` values and declared `ARG`s.
pub type Vars = HashMap<String, String>;

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    vars: &'a Vars,
    escape: char,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        self.pos += 1;
        c
    }

    fn name(&mut self) -> String {
        let mut n = String::new();
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == '_' {
                n.push(c);
                self.pos += 1;
            } else {
                break;
            }
        }
        n
    }

    /// After a `$`: the substituted value (a lone `$` stays).
    fn dollar(&mut self) -> Result<String, String> {
        match self.peek() {
            Some('{') => {
                self.pos += 1;
                let name = self.name();
                if name.is_empty() {
                    return Err("bad substitution: missing variable name after ${".into());
                }
                let value = self.vars.get(&name).cloned();
                match self.next() {
                    Some('}') => Ok(value.unwrap_or_default()),
                    Some(':') | Some('-') | Some('+') => {
                        let colon = self.chars[self.pos - 1] == ':';
                        let op = if colon {
                            self.next().ok_or("bad substitution: unterminated ${")?
                        } else {
                            self.chars[self.pos - 1]
                        };
                        let word = self.until_brace()?;
                        let set = match &value {
                            Some(v) => !colon || !v.is_empty(),
                            None => false,
                        };
                        match op {
                            '-' => Ok(if set { value.unwrap_or_default() } else { word }),
                            '+' => Ok(if set { word } else { String::new() }),
                            '?' => {
                                if set {
                                    Ok(value.unwrap_or_default())
                                } else {
                                    Err(format!("{name}: {word}"))
                                }
                            }
                            o => Err(format!("unsupported modifier ({o}) in substitution")),
                        }
                    }
                    _ => Err(format!("bad substitution: ${{{name}")),
                }
            }
            Some(c) if c.is_ascii_alphanumeric() || c == '_' => {
                let name = self.name();
                Ok(self.vars.get(&name).cloned().unwrap_or_default())
            }
            _ => Ok("$".to_string()),
        }
    }

    /// The word of a `${VAR:-word}` up to its `}`, itself substituted.
    fn until_brace(&mut self) -> Result<String, String> {
        let mut out = String::new();
        loop {
            match self.next() {
                None => return Err("bad substitution: missing }".into()),
                Some('}') => return Ok(out),
                Some('$') => out.push_str(&self.dollar()?),
                Some(c) if c == self.escape => {
                    if let Some(n) = self.next() {
                        out.push(n);
                    }
                }
                Some(c) => out.push(c),
            }
        }
    }

    /// Words split on unquoted whitespace (`split`), or the whole text as one word.
    fn words(&mut self, split: bool) -> Result<Vec<String>, String> {
        let mut words = Vec::new();
        let mut cur = String::new();
        let mut in_word = false;
        while let Some(c) = self.next() {
            match c {
                c if split && c.is_whitespace() => {
                    if in_word {
                        words.push(std::mem::take(&mut cur));
                        in_word = false;
                    }
                }
                '\'' => {
                    in_word = true;
                    loop {
                        match self.next() {
                            None => return Err("unexpected end of statement while looking for matching single-quote".into()),
                            Some('\'') => break,
                            Some(c) => cur.push(c),
                        }
                    }
                }
                '"' => {
                    in_word = true;
                    loop {
                        match self.next() {
                            None => return Err("unexpected end of statement while looking for matching double-quote".into()),
                            Some('"') => break,
                            Some('$') => cur.push_str(&self.dollar()?),
                            Some(c) if c == self.escape => match self.peek() {
                                Some(n @ ('"' | '$')) => {
                                    cur.push(n);
                                    self.pos += 1;
                                }
                                Some(n) if n == self.escape => {
                                    cur.push(n);
                                    self.pos += 1;
                                }
                                _ => cur.push(c),
                            },
                            Some(c) => cur.push(c),
                        }
                    }
                }
                '$' => {
                    in_word = true;
                    cur.push_str(&self.dollar()?);
                }
                c if c == self.escape => {
                    in_word = true;
                    if let Some(n) = self.next() {
                        cur.push(n);
                    }
                }
                c => {
                    in_word = true;
                    cur.push(c);
                }
            }
        }
        if in_word || (!split && words.is_empty()) {
            words.push(cur);
        }
        Ok(words)
    }
}

fn lexer<'a>(text: &str, vars: &'a Vars, escape: char) -> Lexer<'a> {
    Lexer {
        chars: text.chars().collect(),
        pos: 0,
        vars,
        escape,
    }
}

/// One word: quotes removed, variables substituted (`WORKDIR`, `USER`, a `COPY` path).
pub fn word(text: &str, vars: &Vars, escape: char) -> Result<String, String> {
    Ok(lexer(text, vars, escape)
        .words(false)?
        .into_iter()
        .next()
        .unwrap_or_default())
}

/// Whitespace-separated words, each substituted (`EXPOSE 80 $PORT`).
pub fn words(text: &str, vars: &Vars, escape: char) -> Result<Vec<String>, String> {
    lexer(text, vars, escape).words(true)
}

/// `key=value` pairs of `ENV`/`LABEL`/`ARG`, or the legacy `ENV key value` form; values
/// substituted. `ARG name` (no `=`) gives `(name, None)`.
pub fn pairs(
    text: &str,
    vars: &Vars,
    escape: char,
    legacy: bool,
) -> Result<Vec<(String, Option<String>)>, String> {
    let t = text.trim();
    let first_raw = t.split_whitespace().next().unwrap_or("");
    if legacy && !first_raw.contains('=') {
        let (k, rest) = t.split_once(char::is_whitespace).unwrap_or((t, ""));
        if rest.trim().is_empty() {
            return Err(format!("ENV names can not be blank and needs a value: {t}"));
        }
        return Ok(vec![(
            k.to_string(),
            Some(word(rest.trim(), vars, escape)?),
        )]);
    }
    // Split first (quotes group), then substitute each part: `a=$b` uses the value before
    // this instruction, as Docker does.
    let raw = lexer(t, &Vars::new(), escape).raw_words()?;
    let mut out = Vec::new();
    for w in raw {
        match w.split_once('=') {
            Some((k, v)) => {
                if k.is_empty() {
                    return Err(format!("invalid key in {w:?}: a name can not be blank"));
                }
                out.push((word(k, vars, escape)?, Some(word(v, vars, escape)?)));
            }
            None => out.push((word(&w, vars, escape)?, None)),
        }
    }
    Ok(out)
}

impl Lexer<'_> {
    /// Words split on unquoted whitespace with quotes and escapes kept (substitution later).
    fn raw_words(&mut self) -> Result<Vec<String>, String> {
        let mut words = Vec::new();
        let mut cur = String::new();
        while let Some(c) = self.next() {
            if c.is_whitespace() {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
                continue;
            }
            cur.push(c);
            if c == self.escape {
                if let Some(n) = self.next() {
                    cur.push(n);
                }
            } else if c == '\'' || c == '"' {
                loop {
                    let Some(n) = self.next() else {
                        return Err(format!("unterminated quote in {:?}", cur));
                    };
                    cur.push(n);
                    if n == c {
                        break;
                    }
                    if c == '"' && n == self.escape {
                        if let Some(m) = self.next() {
                            cur.push(m);
                        }
                    }
                }
            }
        }
        if !cur.is_empty() {
            words.push(cur);
        }
        Ok(words)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        [("A", "one"), ("E", "")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn substitution_forms() {
        let v = vars();
        assert_eq!(word("$A/${A}x", &v, '\\').unwrap(), "one/onex");
        assert_eq!(word("${B:-def}", &v, '\\').unwrap(), "def");
        assert_eq!(word("${E:-def}", &v, '\\').unwrap(), "def");
        assert_eq!(word("${E-def}", &v, '\\').unwrap(), "");
        assert_eq!(word("${A:+alt}", &v, '\\').unwrap(), "alt");
        assert_eq!(word("${B:+alt}", &v, '\\').unwrap(), "");
        assert_eq!(word("'$A' \"$A\" \\$A", &v, '\\').unwrap(), "$A one $A");
        assert_eq!(word("a$", &v, '\\').unwrap(), "a$");
        assert!(word("${A", &v, '\\').is_err());
    }

    #[test]
    fn words_and_pairs() {
        let v = vars();
        assert_eq!(
            words("80 $A/udp \"x y\"", &v, '\\').unwrap(),
            vec!["80", "one/udp", "x y"]
        );
        assert_eq!(
            pairs("K=$A L=\"a b\" M='$A'", &v, '\\', true).unwrap(),
            vec![
                ("K".to_string(), Some("one".to_string())),
                ("L".to_string(), Some("a b".to_string())),
                ("M".to_string(), Some("$A".to_string())),
            ]
        );
        assert_eq!(
            pairs("K hello $A", &v, '\\', true).unwrap(),
            vec![("K".to_string(), Some("hello one".to_string()))]
        );
        assert_eq!(
            pairs("\"a.b\"=c", &v, '\\', true).unwrap(),
            vec![("a.b".to_string(), Some("c".to_string()))]
        );
        assert_eq!(
            pairs("N V=1", &v, '\\', false).unwrap(),
            vec![
                ("N".to_string(), None),
                ("V".to_string(), Some("1".to_string()))
            ]
        );
    }
}
