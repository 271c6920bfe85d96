//! NAT and forwarding rules through the system's `iptables` command, as Docker does. All of
//! skiff's rules live in its own chains (named from a configurable prefix), reached by one
//! jump rule per built-in chain; per-container rules carry the comment `skiff:<id>` so they
//! can be found and removed exactly. Every change is check-then-add, so re-applying after a
//! restart never doubles a rule.

use tokio::process::Command;

use crate::error::{Result, RuntimeError};

/// One rule: table, chain and the match/target arguments (`-A`/`-C`/`-D` are added here).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Rule {
    pub table: &'static str,
    pub chain: String,
    pub args: Vec<String>,
}

impl Rule {
    pub fn new(table: &'static str, chain: &str, args: &[&str]) -> Self {
        Self {
            table,
            chain: chain.to_string(),
            args: args.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Adds `-m comment --comment skiff:<id>`.
    pub fn tagged(mut self, id: &str) -> Self {
        self.args
            .extend(["-m".into(), "comment".into(), "--comment".into(), tag(id)]);
        self
    }
}

/// The comment that marks a container's rules.
pub(crate) fn tag(id: &str) -> String {
    format!("skiff:{id}")
}

struct Outcome {
    ok: bool,
    status: String,
    stdout: String,
    stderr: String,
}

async fn iptables(args: &[String]) -> Result<Outcome> {
    let out = Command::new("iptables")
        .arg("-w")
        .args(args)
        .output()
        .await
        .map_err(|source| RuntimeError::Io {
            step: "run iptables",
            path: "iptables".into(),
            source,
        })?;
    Ok(Outcome {
        ok: out.status.success(),
        status: out.status.to_string(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

/// Runs iptables and turns a failure into an error naming the arguments.
async fn must(args: Vec<String>) -> Result<String> {
    let out = iptables(&args).await?;
    if !out.ok {
        return Err(RuntimeError::Iptables {
            args: args.join(" "),
            status: out.status,
            stderr: out.stderr,
        });
    }
    Ok(out.stdout)
}

fn with_op(rule: &Rule, op: &str) -> Vec<String> {
    let mut v = vec![
        "-t".into(),
        rule.table.into(),
        op.into(),
        rule.chain.clone(),
    ];
    v.extend(rule.args.iter().cloned());
    v
}

pub(crate) async fn exists(rule: &Rule) -> Result<bool> {
    Ok(iptables(&with_op(rule, "-C")).await?.ok)
}

/// Appends the rule unless an identical one is there.
pub(crate) async fn ensure(rule: &Rule) -> Result<()> {
    if !exists(rule).await? {
        must(with_op(rule, "-A")).await?;
    }
    Ok(())
}

/// Inserts the rule first in its chain unless an identical one is there (for jumps into
/// skiff's chains, which must come before the host's own rules can drop the traffic).
pub(crate) async fn ensure_first(rule: &Rule) -> Result<()> {
    if !exists(rule).await? {
        let mut args = vec![
            "-t".into(),
            rule.table.into(),
            "-I".into(),
            rule.chain.clone(),
            "1".into(),
        ];
        args.extend(rule.args.iter().cloned());
        must(args).await?;
    }
    Ok(())
}

/// Deletes every copy of the rule; absent is fine.
pub(crate) async fn remove(rule: &Rule) -> Result<()> {
    for _ in 0..64 {
        if !exists(rule).await? {
            return Ok(());
        }
        must(with_op(rule, "-D")).await?;
    }
    Ok(())
}

async fn chain_exists(table: &'static str, chain: &str) -> Result<bool> {
    Ok(
        iptables(&["-t".into(), table.into(), "-S".into(), chain.into()])
            .await?
            .ok,
    )
}

pub(crate) async fn ensure_chain(table: &'static str, chain: &str) -> Result<()> {
    if !chain_exists(table, chain).await? {
        let out = iptables(&["-t".into(), table.into(), "-N".into(), chain.into()]).await?;
        if !out.ok && !chain_exists(table, chain).await? {
            return Err(RuntimeError::Iptables {
                args: format!("-t {table} -N {chain}"),
                status: out.status,
                stderr: out.stderr,
            });
        }
    }
    Ok(())
}

/// Flushes and deletes a chain (its jump rules must be gone first); absent is fine.
pub(crate) async fn delete_chain(table: &'static str, chain: &str) -> Result<()> {
    if chain_exists(table, chain).await? {
        must(vec!["-t".into(), table.into(), "-F".into(), chain.into()]).await?;
        must(vec!["-t".into(), table.into(), "-X".into(), chain.into()]).await?;
    }
    Ok(())
}

/// The rules of a chain tagged `skiff:<id>`, with the id, parsed from `iptables -S`;
/// used after a restart to drop rules of containers the state no longer knows.
pub(crate) async fn tagged_rules(table: &'static str, chain: &str) -> Result<Vec<(String, Rule)>> {
    if !chain_exists(table, chain).await? {
        return Ok(Vec::new());
    }
    let listing = must(vec!["-t".into(), table.into(), "-S".into(), chain.into()]).await?;
    Ok(parse_tagged(table, chain, &listing))
}

fn parse_tagged(table: &'static str, chain: &str, listing: &str) -> Vec<(String, Rule)> {
    let prefix = format!("-A {chain} ");
    let mut found = Vec::new();
    for line in listing.lines() {
        let Some(rest) = line.strip_prefix(&prefix) else {
            continue;
        };
        let args: Vec<String> = rest
            .split_whitespace()
            .map(|a| a.trim_matches('"').to_string())
            .collect();
        let id = args
            .windows(2)
            .find(|w| w[0] == "--comment")
            .and_then(|w| w[1].strip_prefix("skiff:").map(str::to_string));
        if let Some(id) = id {
            found.push((
                id,
                Rule {
                    table,
                    chain: chain.to_string(),
                    args,
                },
            ));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tagged_rules_from_listing() {
        let listing = "-N SK-DNAT\n\
            -A SK-DNAT ! -i sk0 -p tcp -m tcp --dport 8080 -m comment --comment \"skiff:abc\" -j DNAT --to-destination 172.18.0.2:80\n\
            -A SK-DNAT -p tcp -j RETURN\n\
            -A OTHER -m comment --comment \"skiff:zzz\" -j ACCEPT\n";
        let found = parse_tagged("nat", "SK-DNAT", listing);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, "abc");
        assert_eq!(found[0].1.args[0], "!");
        assert!(found[0].1.args.contains(&"skiff:abc".to_string()));
    }
}
