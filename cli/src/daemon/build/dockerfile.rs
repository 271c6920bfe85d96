//! A Dockerfile read into owned steps. The syntax (parser directives such as `# escape=`,
//! line continuations, comments, JSON exec form against shell form, flags, heredocs) is
//! `parse-dockerfile`'s; this module keeps what the builder needs: each instruction with its
//! line and the text `Step N/M :` shows. Arguments stay unexpanded: variables are
//! substituted while building, with the values in scope at that step.

use parse_dockerfile as pd;

use super::BuildError;

/// A command as written: `["exe", "arg"]` (exec form) or a shell string.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Exec(Vec<String>),
    Shell(String),
}

/// One `COPY`/`ADD` source: a path (or URL), or a heredoc's content.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Path(String),
    Inline { name: String, content: String },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Instr {
    From {
        image: String,
        name: Option<String>,
        platform: Option<String>,
    },
    Arg(String),
    Env(String),
    Label(String),
    Workdir(String),
    User(String),
    Expose(Vec<String>),
    Volume(Vec<String>),
    Stopsignal(String),
    Maintainer(String),
    Run {
        flags: Vec<(String, Option<String>)>,
        cmd: Command,
    },
    Cmd(Command),
    Entrypoint(Command),
    Shell(Vec<String>),
    Copy {
        add: bool,
        flags: Vec<(String, Option<String>)>,
        srcs: Vec<Source>,
        dest: String,
    },
    Healthcheck {
        flags: Vec<(String, Option<String>)>,
        /// `None`: `HEALTHCHECK NONE`.
        cmd: Option<Command>,
    },
    /// The trigger's text, as `ONBUILD` stores it in the image config.
    Onbuild(String),
}

impl Instr {
    /// Docker's name for it (`RUN`, `COPY` ...).
    pub fn keyword(&self) -> &'static str {
        match self {
            Instr::From { .. } => "FROM",
            Instr::Arg(_) => "ARG",
            Instr::Env(_) => "ENV",
            Instr::Label(_) => "LABEL",
            Instr::Workdir(_) => "WORKDIR",
            Instr::User(_) => "USER",
            Instr::Expose(_) => "EXPOSE",
            Instr::Volume(_) => "VOLUME",
            Instr::Stopsignal(_) => "STOPSIGNAL",
            Instr::Maintainer(_) => "MAINTAINER",
            Instr::Run { .. } => "RUN",
            Instr::Cmd(_) => "CMD",
            Instr::Entrypoint(_) => "ENTRYPOINT",
            Instr::Shell(_) => "SHELL",
            Instr::Copy { add: true, .. } => "ADD",
            Instr::Copy { add: false, .. } => "COPY",
            Instr::Healthcheck { .. } => "HEALTHCHECK",
            Instr::Onbuild(_) => "ONBUILD",
        }
    }
}

/// An instruction with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// 1-based line of the instruction keyword.
    pub line: usize,
    /// The instruction as written, continuations joined (what `Step N/M :` shows).
    pub text: String,
    pub instr: Instr,
}

/// A parsed Dockerfile: `ARG`s before the first `FROM`, then every instruction in order.
#[derive(Debug, Clone)]
pub struct Dockerfile {
    pub steps: Vec<Step>,
    pub escape: char,
}

fn line_of(text: &str, pos: usize) -> usize {
    text[..pos.min(text.len())].matches('\n').count() + 1
}

/// The instruction's text from its keyword to the end of its last continued line, with
/// escape + newline removed and comment lines inside it skipped.
fn instruction_text(text: &str, start: usize, escape: char) -> String {
    let mut out = String::new();
    let mut first = true;
    for line in text[start..].lines() {
        let t = line.trim_end();
        if !first && t.trim_start().starts_with('#') {
            continue;
        }
        first = false;
        match t.strip_suffix(escape) {
            Some(body) => out.push_str(body),
            None => {
                out.push_str(t);
                break;
            }
        }
    }
    out.trim().to_string()
}

fn flags(f: &[pd::Flag<'_>]) -> Vec<(String, Option<String>)> {
    f.iter()
        .map(|f| {
            (
                f.name.value.to_string(),
                f.value.as_ref().map(|v| v.value.to_string()),
            )
        })
        .collect()
}

fn command(c: &pd::Command<'_>, escape: char) -> Command {
    match c {
        pd::Command::Exec(v) => {
            Command::Exec(v.value.iter().map(|s| s.value.to_string()).collect())
        }
        pd::Command::Shell(s) => Command::Shell(join_continuations(s.value, escape)),
        _ => Command::Shell(String::new()),
    }
}

/// Shell form keeps the escape character; Docker removes escape + newline (and the
/// comment lines between continued lines) before handing the command to the shell.
fn join_continuations(s: &str, escape: char) -> String {
    let mut out = String::new();
    let mut lines = s.split('\n').peekable();
    let mut continued = false;
    while let Some(line) = lines.next() {
        let l = line.strip_suffix('\r').unwrap_or(line);
        if continued && l.trim_start().starts_with('#') {
            continue;
        }
        match l.trim_end().strip_suffix(escape) {
            Some(body) if lines.peek().is_some() => {
                out.push_str(body);
                continued = true;
            }
            _ => {
                out.push_str(l);
                if lines.peek().is_some() {
                    out.push('\n');
                }
                continued = false;
            }
        }
    }
    out.trim().to_string()
}

/// `COPY` sources; a heredoc's file name is its delimiter word, read from the
/// instruction's first line (`COPY <<EOF /dst`).
fn sources(srcs: &[pd::Source<'_>], text: &str) -> Vec<Source> {
    let first_line = text.lines().next().unwrap_or("");
    let mut names = first_line.split_whitespace().filter_map(|w| {
        w.strip_prefix("<<").map(|n| {
            n.trim_start_matches('-')
                .trim_matches(|c| c == '"' || c == '\'')
                .to_string()
        })
    });
    srcs.iter()
        .filter_map(|s| match s {
            pd::Source::Path(p) => Some(Source::Path(p.value.to_string())),
            pd::Source::HereDoc(h) => Some(Source::Inline {
                name: names.next().unwrap_or_else(|| "heredoc".to_string()),
                content: h.value.to_string(),
            }),
            _ => None,
        })
        .collect()
}

fn convert(i: &pd::Instruction<'_>, text: &str, escape: char) -> Result<Instr, String> {
    Ok(match i {
        pd::Instruction::From(f) => {
            let platform = f
                .options
                .iter()
                .find(|o| o.name.value == "platform")
                .and_then(|o| o.value.as_ref().map(|v| v.value.to_string()));
            if let Some(o) = f.options.iter().find(|o| o.name.value != "platform") {
                return Err(format!("FROM: unknown flag --{}", o.name.value));
            }
            Instr::From {
                image: f.image.value.to_string(),
                name: f.as_.as_ref().map(|(_, n)| n.value.to_lowercase()),
                platform,
            }
        }
        pd::Instruction::Arg(a) => Instr::Arg(a.arguments.value.to_string()),
        pd::Instruction::Env(e) => Instr::Env(e.arguments.value.to_string()),
        pd::Instruction::Label(l) => Instr::Label(l.arguments.value.to_string()),
        pd::Instruction::Workdir(w) => Instr::Workdir(w.arguments.value.to_string()),
        pd::Instruction::User(u) => Instr::User(u.arguments.value.to_string()),
        pd::Instruction::Expose(e) => {
            Instr::Expose(e.arguments.iter().map(|s| s.value.to_string()).collect())
        }
        pd::Instruction::Volume(v) => Instr::Volume(match &v.arguments {
            pd::JsonOrStringArray::Json(a) => a.value.iter().map(|s| s.value.to_string()).collect(),
            pd::JsonOrStringArray::String(a) => a.iter().map(|s| s.value.to_string()).collect(),
        }),
        pd::Instruction::Stopsignal(s) => Instr::Stopsignal(s.arguments.value.to_string()),
        pd::Instruction::Maintainer(m) => Instr::Maintainer(m.name.value.to_string()),
        pd::Instruction::Run(r) => {
            let cmd = if r.here_docs.is_empty() {
                command(&r.arguments, escape)
            } else {
                // `RUN <<EOF ... EOF`: the heredoc is the script the shell runs.
                let shell = match &r.arguments {
                    pd::Command::Shell(s) => s.value.trim().to_string(),
                    _ => String::new(),
                };
                if r.here_docs.len() != 1 || !shell.is_empty() {
                    return Err(
                        "RUN: only a heredoc as the whole script (`RUN <<EOF`) is supported"
                            .to_string(),
                    );
                }
                Command::Shell(r.here_docs[0].value.to_string())
            };
            Instr::Run {
                flags: flags(&r.options),
                cmd,
            }
        }
        pd::Instruction::Cmd(c) => Instr::Cmd(command(&c.arguments, escape)),
        pd::Instruction::Entrypoint(e) => Instr::Entrypoint(command(&e.arguments, escape)),
        pd::Instruction::Shell(s) => {
            Instr::Shell(s.arguments.iter().map(|s| s.value.to_string()).collect())
        }
        pd::Instruction::Copy(c) => Instr::Copy {
            add: false,
            flags: flags(&c.options),
            srcs: sources(&c.src, text),
            dest: c.dest.value.to_string(),
        },
        pd::Instruction::Add(c) => Instr::Copy {
            add: true,
            flags: flags(&c.options),
            srcs: sources(&c.src, text),
            dest: c.dest.value.to_string(),
        },
        pd::Instruction::Healthcheck(h) => Instr::Healthcheck {
            flags: flags(&h.options),
            cmd: match &h.arguments {
                pd::HealthcheckArguments::Cmd { arguments, .. } => Some(command(arguments, escape)),
                _ => None,
            },
        },
        pd::Instruction::Onbuild(_) => {
            let rest = text
                .split_once(char::is_whitespace)
                .map_or("", |(_, r)| r)
                .trim();
            Instr::Onbuild(rest.to_string())
        }
        _ => return Err("unsupported instruction".to_string()),
    })
}

/// The keyword's start offset of an instruction (the crate keeps spans per keyword).
fn keyword_start(i: &pd::Instruction<'_>) -> usize {
    match i {
        pd::Instruction::Add(x) => x.add.span.start,
        pd::Instruction::Arg(x) => x.arg.span.start,
        pd::Instruction::Cmd(x) => x.cmd.span.start,
        pd::Instruction::Copy(x) => x.copy.span.start,
        pd::Instruction::Entrypoint(x) => x.entrypoint.span.start,
        pd::Instruction::Env(x) => x.env.span.start,
        pd::Instruction::Expose(x) => x.expose.span.start,
        pd::Instruction::From(x) => x.from.span.start,
        pd::Instruction::Healthcheck(x) => x.healthcheck.span.start,
        pd::Instruction::Label(x) => x.label.span.start,
        pd::Instruction::Maintainer(x) => x.maintainer.span.start,
        pd::Instruction::Onbuild(x) => x.onbuild.span.start,
        pd::Instruction::Run(x) => x.run.span.start,
        pd::Instruction::Shell(x) => x.shell.span.start,
        pd::Instruction::Stopsignal(x) => x.stopsignal.span.start,
        pd::Instruction::User(x) => x.user.span.start,
        pd::Instruction::Volume(x) => x.volume.span.start,
        pd::Instruction::Workdir(x) => x.workdir.span.start,
        _ => 0,
    }
}

/// Parses a Dockerfile. Errors name the line (and the instruction when it is known).
pub fn parse(text: &str) -> Result<Dockerfile, BuildError> {
    let df = pd::parse(text).map_err(|e| BuildError::Syntax {
        line: e.line(),
        message: e.to_string(),
    })?;
    let escape = df
        .parser_directives
        .escape
        .as_ref()
        .map_or('\\', |d| d.value.value);
    let mut steps = Vec::new();
    for i in &df.instructions {
        let start = keyword_start(i);
        let line = line_of(text, start);
        let shown = instruction_text(text, start, escape);
        let instr = convert(i, &shown, escape).map_err(|message| BuildError::Syntax {
            line,
            message: format!("{shown}: {message}"),
        })?;
        steps.push(Step {
            line,
            text: shown,
            instr,
        });
    }
    if !steps.iter().any(|s| matches!(s.instr, Instr::From { .. })) {
        return Err(BuildError::Syntax {
            line: 1,
            message: "no build stage in current context (a Dockerfile needs a FROM)".into(),
        });
    }
    if let Some(s) = steps
        .iter()
        .take_while(|s| !matches!(s.instr, Instr::From { .. }))
        .find(|s| !matches!(s.instr, Instr::Arg(_)))
    {
        return Err(BuildError::Syntax {
            line: s.line,
            message: format!("{}: only ARG may come before the first FROM", s.text),
        });
    }
    Ok(Dockerfile { steps, escape })
}

/// Parses one `ONBUILD` trigger (e.g. `RUN echo hi`) as a step.
pub fn parse_trigger(trigger: &str) -> Result<Step, BuildError> {
    let df = parse(&format!("FROM scratch\n{trigger}\n"))?;
    df.steps
        .into_iter()
        .nth(1)
        .ok_or_else(|| BuildError::Syntax {
            line: 1,
            message: format!("ONBUILD trigger {trigger:?} is empty"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuations_forms_and_lines() {
        let df = parse(
            "# syntax=docker/dockerfile:1\nARG BASE=busybox\nFROM $BASE AS Build\nRUN echo a \\\n  && echo b\n# c\nCMD [\"sh\", \"-c\", \"echo hi\"]\nCOPY --from=build --chown=1:2 a b /dst/\n",
        )
        .unwrap();
        assert_eq!(df.steps.len(), 5);
        assert_eq!(df.steps[1].line, 3);
        assert_eq!(
            df.steps[1].instr,
            Instr::From {
                image: "$BASE".into(),
                name: Some("build".into()),
                platform: None
            }
        );
        assert_eq!(
            df.steps[2].instr,
            Instr::Run {
                flags: vec![],
                cmd: Command::Shell("echo a   && echo b".into())
            }
        );
        assert_eq!(df.steps[2].text, "RUN echo a   && echo b");
        assert_eq!(
            df.steps[3].instr,
            Instr::Cmd(Command::Exec(vec![
                "sh".into(),
                "-c".into(),
                "echo hi".into()
            ]))
        );
        match &df.steps[4].instr {
            Instr::Copy {
                add,
                flags,
                srcs,
                dest,
            } => {
                assert!(!add);
                assert_eq!(flags[0], ("from".to_string(), Some("build".to_string())));
                assert_eq!(srcs.len(), 2);
                assert_eq!(dest, "/dst/");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn escape_directive() {
        let df = parse("# escape=`\nFROM busybox\nRUN echo a `\n b\n").unwrap();
        assert_eq!(df.escape, '`');
        assert_eq!(
            df.steps[1].instr,
            Instr::Run {
                flags: vec![],
                cmd: Command::Shell("echo a  b".into())
            }
        );
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse("FROM busybox\nRUN true\nFOO bar\n").unwrap_err();
        match e {
            BuildError::Syntax { line, .. } => assert_eq!(line, 3),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse("RUN true\n").unwrap_err(),
            BuildError::Syntax { .. }
        ));
    }

    #[test]
    fn onbuild_trigger_text() {
        let df = parse("FROM busybox\nONBUILD RUN echo hi\n").unwrap();
        assert_eq!(df.steps[1].instr, Instr::Onbuild("RUN echo hi".into()));
        let s = parse_trigger("RUN echo hi").unwrap();
        assert_eq!(
            s.instr,
            Instr::Run {
                flags: vec![],
                cmd: Command::Shell("echo hi".into())
            }
        );
    }

    #[test]
    fn heredoc_run_and_copy() {
        let df =
            parse("FROM busybox\nRUN <<EOF\necho one\necho two\nEOF\nCOPY <<F /f.txt\nhello\nF\n")
                .unwrap();
        assert_eq!(
            df.steps[1].instr,
            Instr::Run {
                flags: vec![],
                cmd: Command::Shell("echo one\necho two\n".into())
            }
        );
        match &df.steps[2].instr {
            Instr::Copy { srcs, .. } => assert_eq!(
                srcs[0],
                Source::Inline {
                    name: "F".into(),
                    content: "hello\n".into()
                }
            ),
            other => panic!("{other:?}"),
        }
    }
}
