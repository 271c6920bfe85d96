//! `--format` of the list commands (`ps`, `images`, `volume ls`, `network ls`), as the
//! docker CLI reads it: `json` prints each row's fields as one JSON line, `table T` prints
//! T's tab-separated columns aligned under a header naming each field as docker does
//! (`table` alone: the command's default table), and any other T runs once per row. `\t`
//! and `\n` typed in a shell argument become the characters. A template that does not
//! parse exits 64 before anything is printed (docs/inspect.md).

use anyhow::Result;
use serde_json::Value;

use super::format::print_table;
use super::template::GoTemplate;
use crate::exit::Exit;

/// A list's columns: each field's header (`{"ID": "CONTAINER ID", ...}`) and the template
/// of its default table.
pub struct Columns {
    pub header: Value,
    pub default_table: &'static str,
}

/// Prints `rows` (one object of string fields per row) as `format` asks.
pub fn print(format: &str, rows: &[Value], columns: &Columns) -> Result<()> {
    if format == "json" {
        for r in rows {
            println!("{}", serde_json::to_string(r)?);
        }
        return Ok(());
    }
    let (table, src) = match format.strip_prefix("table") {
        Some(rest) if rest.is_empty() || rest.starts_with(char::is_whitespace) => {
            let rest = rest.trim_start();
            (
                true,
                if rest.is_empty() {
                    columns.default_table
                } else {
                    rest
                },
            )
        }
        _ => (false, format),
    };
    let src = src.replace("\\t", "\t").replace("\\n", "\n");
    let template = match GoTemplate::parse(&src) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("template parsing error: {e}");
            return Err(Exit(64).into());
        }
    };
    let mut lines = Vec::with_capacity(rows.len() + 1);
    if table {
        lines.push(template.render(&columns.header)?);
    }
    for r in rows {
        lines.push(template.render(r)?);
    }
    if !table {
        for l in lines {
            println!("{l}");
        }
        return Ok(());
    }
    let mut cells: Vec<Vec<String>> = lines
        .iter()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect();
    let width = cells.iter().map(Vec::len).max().unwrap_or(0);
    for c in &mut cells {
        c.resize(width, String::new());
    }
    let header: Vec<&str> = cells[0].iter().map(String::as_str).collect();
    print_table(&header, &cells[1..]);
    Ok(())
}

/// Labels as the docker CLI's `.Labels` field prints them: `k=v` pairs, sorted, joined by
/// commas.
pub fn joined_labels<'a>(labels: impl IntoIterator<Item = (&'a String, &'a String)>) -> String {
    let mut pairs: Vec<String> = labels
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    pairs.sort();
    pairs.join(",")
}
