//! Container ids and generated names, as Docker makes them.

use rand::seq::SliceRandom;
use rand::RngCore;

const LEFT: &[&str] = &[
    "admiring",
    "agitated",
    "amazing",
    "bold",
    "brave",
    "busy",
    "clever",
    "cool",
    "dazzling",
    "eager",
    "ecstatic",
    "elegant",
    "epic",
    "festive",
    "focused",
    "gallant",
    "gifted",
    "happy",
    "hopeful",
    "jolly",
    "keen",
    "kind",
    "laughing",
    "lucid",
    "nifty",
    "nostalgic",
    "optimistic",
    "peaceful",
    "practical",
    "quirky",
    "relaxed",
    "serene",
    "sharp",
    "stoic",
    "sweet",
    "tender",
    "trusting",
    "upbeat",
    "vibrant",
    "wizardly",
    "youthful",
    "zealous",
];
const RIGHT: &[&str] = &[
    "babbage", "bell", "bohr", "curie", "darwin", "dijkstra", "einstein", "euler", "fermi",
    "feynman", "galileo", "gauss", "hopper", "hypatia", "kepler", "knuth", "lamport", "lovelace",
    "mccarthy", "meitner", "newton", "noether", "pascal", "ritchie", "shannon", "thompson",
    "torvalds", "turing", "wozniak", "yalow",
];

/// 64 random hex characters.
pub fn new_id() -> String {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// "adjective_scientist", with a digit appended after a collision (`attempt` > 0).
pub fn generate_name(attempt: u32) -> String {
    let mut rng = rand::thread_rng();
    let l = LEFT.choose(&mut rng).expect("non-empty");
    let r = RIGHT.choose(&mut rng).expect("non-empty");
    if attempt == 0 {
        format!("{l}_{r}")
    } else {
        format!("{l}_{r}{attempt}")
    }
}

/// Docker's rule for names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    name.len() >= 2 && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_64_hex() {
        let id = new_id();
        assert_eq!(id.len(), 64);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(id, new_id());
    }

    #[test]
    fn names_follow_docker_rules() {
        assert!(valid_name(&generate_name(0)));
        assert!(valid_name(&generate_name(3)));
        assert!(valid_name("web-1.a_b"));
        assert!(!valid_name("-web"));
        assert!(!valid_name("a"));
        assert!(!valid_name("we b"));
    }
}
