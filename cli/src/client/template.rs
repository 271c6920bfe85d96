//! `inspect --format`: Go text/template (the `gotmpl` crate) with the docker CLI's extra
//! functions, and the docker CLI's inspect output rules (docs/inspect.md).
//!
//! As the docker CLI does: `""` prints the objects as an indented JSON array, `json` as one
//! compact JSON line, anything else is a template run once per object, each result followed
//! by a newline. A template that does not parse ends the command with exit 64 before any
//! object is fetched; one that fails on an object (e.g. `index` of a missing list element)
//! is reported, the other objects still print, and the command exits 1.

use std::io::Write;

use anyhow::Result;
use gotmpl::{Template, TemplateError, Value};
use serde::Serialize;

use crate::exit::Exit;

/// A parsed `--format` template with Docker's functions: `json`, `split`, `join`, `title`,
/// `lower`, `upper`, `pad`, `truncate` (the docker CLI's `templates.basicFunctions`).
pub struct GoTemplate(Template);

impl GoTemplate {
    /// Parses `src`; the error reads like Go's (`template: :1: unclosed action`).
    pub fn parse(src: &str) -> Result<GoTemplate, TemplateError> {
        // A field the daemon left out prints `<no value>` (Go's default for maps): docker's
        // typed structs print a zero value there, which an untyped JSON object cannot know.
        Template::new("")
            .func("json", |a| {
                Ok(Value::String(to_json(arg(a, 0, "json")?).into()))
            })
            .func("split", |a| {
                let (s, sep) = (text(a, 0, "split")?, text(a, 1, "split")?);
                Ok(Value::List(
                    go_split(&s, &sep)
                        .into_iter()
                        .map(|p| Value::String(p.into()))
                        .collect(),
                ))
            })
            .func("join", |a| {
                let Value::List(items) = arg(a, 0, "join")? else {
                    return Err(bad_arg("join", "a list of strings"));
                };
                let sep = text(a, 1, "join")?;
                let parts: Vec<String> = items.iter().map(|v| v.to_string()).collect();
                Ok(Value::String(parts.join(&sep).into()))
            })
            .func("title", |a| {
                Ok(Value::String(title(&text(a, 0, "title")?).into()))
            })
            .func("lower", |a| {
                Ok(Value::String(text(a, 0, "lower")?.to_lowercase().into()))
            })
            .func("upper", |a| {
                Ok(Value::String(text(a, 0, "upper")?.to_uppercase().into()))
            })
            .func("pad", |a| {
                let s = text(a, 0, "pad")?;
                let (before, after) = (count(a, 1, "pad")?, count(a, 2, "pad")?);
                Ok(Value::String(
                    format!("{}{s}{}", " ".repeat(before), " ".repeat(after)).into(),
                ))
            })
            .func("truncate", |a| {
                let s = text(a, 0, "truncate")?;
                let n = count(a, 1, "truncate")?;
                // Go slices bytes; stop at a character boundary rather than split one.
                let mut end = n.min(s.len());
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                Ok(Value::String(s[..end].into()))
            })
            .parse(src)
            .map(GoTemplate)
    }

    /// Runs the template on `data` (serialized as its JSON form, maps sorted by key).
    pub fn render<T: Serialize>(&self, data: &T) -> Result<String, TemplateError> {
        let json = serde_json::to_value(data).map_err(|e| TemplateError::Exec(e.to_string()))?;
        self.0.execute_to_string(&gotmpl::to_value(&json)?)
    }
}

/// How `inspect` prints what it found: the docker CLI's three forms.
enum Style {
    Indented,
    Compact,
    Template(GoTemplate),
}

/// Collects inspected objects and errors, then prints them as the docker CLI does.
pub struct Inspector {
    style: Style,
    objects: Vec<serde_json::Value>,
    rendered: String,
    failed: bool,
}

impl Inspector {
    /// `format` is the `-f/--format` value. A template that does not parse is reported here
    /// (`template parsing error: ...`) and ends the command with exit 64, as in docker.
    pub fn new(format: Option<&str>) -> Result<Inspector> {
        let style = match format.unwrap_or("") {
            "" => Style::Indented,
            "json" => Style::Compact,
            src => match GoTemplate::parse(src) {
                Ok(t) => Style::Template(t),
                Err(e) => {
                    eprintln!("template parsing error: {e}");
                    return Err(Exit(64).into());
                }
            },
        };
        Ok(Inspector {
            style,
            objects: Vec::new(),
            rendered: String::new(),
            failed: false,
        })
    }

    /// Adds one found object (rendered at once when there is a template).
    pub fn add<T: Serialize>(&mut self, object: &T) -> Result<()> {
        let value = serde_json::to_value(object)?;
        match &self.style {
            Style::Template(t) => match t.render(&value) {
                Ok(s) => {
                    self.rendered.push_str(&s);
                    self.rendered.push('\n');
                }
                Err(e) => self.error(&format!("template parsing error: {e}")),
            },
            _ => self.objects.push(value),
        }
        Ok(())
    }

    /// Adds the daemon's answer for one object: the object, or its error reported as the
    /// docker CLI words it (`Error response from daemon: ...`).
    pub fn add_answer<T: Serialize>(
        &mut self,
        answer: Result<T, bollard::errors::Error>,
    ) -> Result<()> {
        match answer {
            Ok(object) => self.add(&object),
            Err(e) => {
                let message = super::error_message(&e);
                self.error(&format!("Error response from daemon: {message}"));
                Ok(())
            }
        }
    }

    /// Reports an object that could not be inspected; the command will exit 1.
    pub fn error(&mut self, message: &str) {
        eprintln!("{message}");
        self.failed = true;
    }

    /// Prints everything; exit 1 if anything failed.
    pub fn finish(self) -> Result<()> {
        let mut out = std::io::stdout().lock();
        match self.style {
            Style::Indented => {
                let mut buf = Vec::new();
                let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
                let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
                self.objects.serialize(&mut ser)?;
                buf.push(b'\n');
                out.write_all(&buf)?;
            }
            Style::Compact => writeln!(out, "{}", serde_json::to_string(&self.objects)?)?,
            Style::Template(_) if self.rendered.is_empty() => writeln!(out)?,
            Style::Template(_) => out.write_all(self.rendered.as_bytes())?,
        }
        out.flush()?;
        if self.failed {
            return Err(Exit(1).into());
        }
        Ok(())
    }
}

fn arg<'a>(args: &'a [Value], i: usize, func: &str) -> Result<&'a Value, TemplateError> {
    args.get(i).ok_or_else(|| TemplateError::ArgCount {
        name: func.to_string(),
        expected: i + 1,
        got: args.len(),
    })
}

fn bad_arg(func: &str, wanted: &str) -> TemplateError {
    TemplateError::Exec(format!("{func}: wrong type for value; expected {wanted}"))
}

fn text(args: &[Value], i: usize, func: &str) -> Result<String, TemplateError> {
    match arg(args, i, func)? {
        Value::String(s) => Ok(s.to_string()),
        _ => Err(bad_arg(func, "string")),
    }
}

fn count(args: &[Value], i: usize, func: &str) -> Result<usize, TemplateError> {
    match arg(args, i, func)? {
        Value::Int(n) if *n >= 0 => Ok(*n as usize),
        Value::Uint(n) => Ok(*n as usize),
        _ => Err(bad_arg(func, "int")),
    }
}

/// Go's `strings.Split`: an empty separator splits into characters.
fn go_split(s: &str, sep: &str) -> Vec<String> {
    if sep.is_empty() {
        s.chars().map(String::from).collect()
    } else {
        s.split(sep).map(String::from).collect()
    }
}

/// Go's `strings.Title`: the first letter of each word upper-cased, the rest left alone.
fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut at_start = true;
    for c in s.chars() {
        if at_start && c.is_alphanumeric() {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        at_start = !(c.is_alphanumeric() || c == '_' || c == '\'');
    }
    out
}

/// The `json` function: Go's `json.Encoder` output without the trailing newline (HTML
/// characters not escaped, which is also serde_json's way).
fn to_json(v: &Value) -> String {
    serde_json::to_string(&from_template(v)).unwrap_or_default()
}

fn from_template(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Nil | Value::Function(_) => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(n) => J::from(*n),
        Value::Uint(n) => J::from(*n),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Value::String(s) => J::String(s.to_string()),
        Value::List(items) => J::Array(items.iter().map(from_template).collect()),
        Value::Map(m) => J::Object(
            m.iter()
                .map(|(k, v)| (k.to_string(), from_template(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(src: &str, data: serde_json::Value) -> String {
        GoTemplate::parse(src).unwrap().render(&data).unwrap()
    }

    #[test]
    fn docker_inspect_templates_render() {
        let c = json!({
            "Name": "/web",
            "State": {"Status": "running", "Pid": 42},
            "Config": {"Cmd": ["sh", "-c", "x"], "Labels": {"k": "v", "a b": "c"}},
            "NetworkSettings": {"Networks": {"z": {"IPAddress": "10.0.0.3"},
                                             "a": {"IPAddress": "10.0.0.2"}}},
        });
        assert_eq!(run("{{.State.Status}}", c.clone()), "running");
        assert_eq!(run("{{.Name}} {{.State.Pid}}", c.clone()), "/web 42");
        assert_eq!(run("{{.Config.Cmd}}", c.clone()), "[sh -c x]");
        assert_eq!(run(r#"{{index .Config.Labels "k"}}"#, c.clone()), "v");
        assert_eq!(
            run(r#"{{json .Config}}"#, c.clone()),
            r#"{"Cmd":["sh","-c","x"],"Labels":{"a b":"c","k":"v"}}"#
        );
        // Go ranges over map keys in sorted order.
        assert_eq!(
            run(
                "{{range .NetworkSettings.Networks}}{{.IPAddress}};{{end}}",
                c.clone()
            ),
            "10.0.0.2;10.0.0.3;"
        );
        assert_eq!(
            run(
                r#"{{join .Config.Cmd ","}}|{{upper .State.Status}}|{{title "ab cd"}}|{{pad "x" 1 2}}|{{truncate "abcdef" 3}}|{{len (split "a:b" ":")}}"#,
                c
            ),
            "sh,-c,x|RUNNING|Ab Cd| x  |abc|2"
        );
    }

    #[test]
    fn missing_fields_print_no_value_and_bad_templates_are_errors() {
        let err = GoTemplate::parse("{{.State.Status")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("unclosed action"), "{err}");
        // gotmpl finds an unknown function when it runs, Go when it parses.
        let t = GoTemplate::parse("{{nosuchfunc .}}").unwrap();
        assert!(t.render(&json!({})).is_err());
        let data = json!({"Name": "x", "Config": {}});
        assert_eq!(run("{{.Nope}}", data.clone()), "<no value>");
        assert_eq!(
            run(
                "{{if .Config.Entrypoint}}set{{else}}unset{{end}}",
                data.clone()
            ),
            "unset"
        );
        assert_eq!(run("{{json .Config.Entrypoint}}", data.clone()), "null");
        let t = GoTemplate::parse("{{index .Name 7}}").unwrap();
        assert!(t.render(&data).is_err());
    }
}
