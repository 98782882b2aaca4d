//! How SQL text is held.
//!
//! A statement is a `&'static str` template, or a function that joins
//! named `&'static str` parts (a variant is the base statement plus a
//! part, never an edit of its text). Parameters are `$n`; where a part
//! takes its parameter positions from the statement using it, they are
//! given as numbers ([`Param`]). A template writes [`SCHEMA`] before each
//! table, sequence and function of pgbroker's schema, and
//! [`Schema::qualify`] puts the quoted schema name there: the result runs
//! on pgbroker's pool and on a caller's own connection alike, whatever its
//! search_path.
//!
//! Only two kinds of names ever enter SQL text: the schema, validated
//! before a [`Schema`] exists, and segment and queue partition names, built
//! from integers. Everything else is a bound parameter.

use std::fmt;

use crate::error::Result;
use crate::migrate::quote_ident;
use crate::types::validate_schema;

/// The mark a template puts where the schema and a dot go.
pub(crate) const SCHEMA: &str = "{s}";

/// A validated schema name, ready to qualify templates.
#[derive(Debug, Clone)]
pub(crate) struct Schema {
    /// The quoted name and a dot.
    prefix: String,
}

impl Schema {
    /// Validates `name` (see [`validate_schema`]).
    pub(crate) fn new(name: &str) -> Result<Schema> {
        validate_schema(name)?;
        Ok(Schema {
            prefix: format!("{}.", quote_ident(name)),
        })
    }

    /// The template with every [`SCHEMA`] mark replaced by the schema.
    pub(crate) fn qualify(&self, template: &str) -> String {
        template.replace(SCHEMA, &self.prefix)
    }
}

/// The statement parameter `$n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Param(pub u8);

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${}", self.0)
    }
}

/// A select-list item that turns off waiting for the WAL to reach disk at
/// commit, for the statement's own transaction only (`synchronous_commit`
/// off, local). Statements that may lose their effect to a Postgres crash
/// without breaking a promise use it: a lost claim is a lease that ended
/// at once, a lost acknowledgement a message delivered again, both of which
/// at-least-once delivery already allows.
pub(crate) const NO_FLUSH_WAIT: &str = "set_config('synchronous_commit', 'off', true)";

/// Whether a statement's commit waits for the WAL flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Commit {
    /// The default: the commit is durable when it returns.
    Flush,
    /// [`NO_FLUSH_WAIT`] is added as the last item of the final select.
    NoFlushWait,
}

impl Commit {
    /// The parts ending the final select list.
    pub(crate) fn last_items(self) -> &'static [&'static str] {
        match self {
            Commit::Flush => &[],
            Commit::NoFlushWait => &[",\n       ", NO_FLUSH_WAIT],
        }
    }
}

/// Checks a finished statement: no mark of a template part is left
/// (`{word}`), and each of `relations` appears only qualified with
/// `schema_prefix` (string literals aside). Returns what is wrong.
#[cfg(test)]
pub(crate) fn check_statement(sql: &str, schema_prefix: &str, relations: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut rest = sql;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let word = after
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
            .count();
        if word > 0 && after[word..].starts_with('}') {
            problems.push(format!("placeholder {{{}}} left", &after[..word]));
        }
        rest = after;
    }
    // String literals ('pgbroker.segments', say) name nothing.
    let mut quoted = false;
    let sql: String = sql
        .chars()
        .map(|c| {
            if c == '\'' {
                quoted = !quoted;
            }
            if quoted && c != '\'' {
                ' '
            } else {
                c
            }
        })
        .collect();
    let sql = sql.as_str();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    for rel in relations {
        for (at, _) in sql.match_indices(rel) {
            let before = sql.as_bytes()[..at].last().copied();
            let after = sql.as_bytes().get(at + rel.len()).copied();
            if before.is_some_and(ident) || after.is_some_and(ident) {
                continue; // part of a longer name
            }
            if !sql[..at].ends_with(schema_prefix) {
                problems.push(format!("{rel} is not qualified at byte {at}"));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualifies_every_mark_with_the_quoted_schema() {
        let s = Schema::new("my_schema").expect("valid");
        assert_eq!(
            s.qualify("SELECT {s}f() FROM {s}t"),
            "SELECT \"my_schema\".f() FROM \"my_schema\".t"
        );
        for bad in ["", "A", "x\"y", "x; drop", "pg_x", "1a"] {
            assert!(Schema::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parameters_and_commit_parts() {
        assert_eq!(Param(7).to_string(), "$7");
        assert!(Commit::Flush.last_items().is_empty());
        assert_eq!(Commit::NoFlushWait.last_items().last(), Some(&NO_FLUSH_WAIT));
    }

    #[test]
    fn the_check_finds_placeholders_and_unqualified_relations() {
        let p = "\"s\".";
        assert!(check_statement("SELECT '{}', 'x.t' FROM \"s\".t, \"s\".t_x", p, &["t"]).is_empty());
        assert_eq!(check_statement("SELECT {locked} FROM t_x", p, &["t"]).len(), 1);
        assert_eq!(
            check_statement("SELECT 1 FROM \"s\".t JOIN t ON true", p, &["t"]).len(),
            1
        );
        assert_eq!(check_statement("SELECT {s}f()", p, &["f"]).len(), 2);
    }
}
