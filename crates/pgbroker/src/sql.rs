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

/// Declares a struct of statements: one `String` field per statement,
/// each built from its template by [`Schema::qualify`] once, when the
/// struct is built, and (in tests) the list of them all.
macro_rules! statements {
    (
        $(#[$sdoc:meta])* $name:ident { $($(#[$doc:meta])* $field:ident = $template:expr;)* }
        $(segment { $($(#[$pdoc:meta])* $pfield:ident = [$($part:expr),+ $(,)?];)* })?
    ) => {
        $(#[$sdoc])*
        pub(crate) struct $name {
            $($(#[$doc])* pub $field: String,)*
            $($($(#[$pdoc])* pub $pfield: $crate::sql::AroundSegment,)*)?
        }

        impl $name {
            /// Builds every statement for `schema`.
            pub(crate) fn new(schema: &$crate::sql::Schema) -> $name {
                $name {
                    $($field: schema.qualify(&$template),)*
                    $($($pfield: $crate::sql::AroundSegment::new(schema, &[$($part),+]),)*)?
                }
            }

            /// Every statement, by name (those around a segment name with
            /// one in place).
            #[cfg(test)]
            pub(crate) fn all(&self) -> Vec<(&'static str, String)> {
                vec![
                    $((stringify!($field), self.$field.clone()),)*
                    $($((stringify!($pfield), self.$pfield.with($crate::sql::TEST_SEGMENT)),)*)?
                ]
            }
        }
    };
}
pub(crate) use statements;

/// A statement about one segment table, held as the qualified parts
/// that go around each place its name is written. Segment names are the
/// only names built at run time (from two integers, see
/// `streams::segments::segment_table`), so these are joined per call.
#[derive(Debug, Clone)]
pub(crate) struct AroundSegment {
    parts: Vec<String>,
}

impl AroundSegment {
    /// Qualifies each part for `schema`.
    pub(crate) fn new(schema: &Schema, parts: &[&str]) -> AroundSegment {
        AroundSegment {
            parts: parts.iter().map(|p| schema.qualify(p)).collect(),
        }
    }

    /// The statement about `segment`, a name from `segment_table`.
    pub(crate) fn with(&self, segment: &str) -> String {
        self.parts.join(segment)
    }
}

/// A segment name that statements are checked with in tests.
#[cfg(test)]
pub(crate) const TEST_SEGMENT: &str = "seg_1_0";

/// The statements of every area but the queue path's (see
/// `queues::QueueState`), qualified with one broker's schema.
pub(crate) struct Registry {
    /// The group coordinators'.
    pub groups: crate::groups::statements::Statements,
    /// Topics, segments, retention, fetches and producers'.
    pub streams: crate::streams::statements::Statements,
    /// Users', access keys' and ACLs'.
    pub auth: crate::auth::statements::Statements,
    /// The cluster's and the broker's own.
    pub broker: crate::broker::statements::Statements,
    /// The transaction coordinator's.
    pub txn: crate::txn::statements::Statements,
    /// The share groups'.
    pub share: crate::groups::share::statements::Statements,
}

impl Registry {
    /// Builds every statement for `schema`.
    pub(crate) fn new(schema: &Schema) -> Registry {
        Registry {
            groups: crate::groups::statements::Statements::new(schema),
            streams: crate::streams::statements::Statements::new(schema),
            auth: crate::auth::statements::Statements::new(schema),
            broker: crate::broker::statements::Statements::new(schema),
            txn: crate::txn::statements::Statements::new(schema),
            share: crate::groups::share::statements::Statements::new(schema),
        }
    }

    /// Every statement, by area and name.
    #[cfg(test)]
    pub(crate) fn all(&self) -> Vec<(String, String)> {
        let areas = [
            ("groups", self.groups.all()),
            ("streams", self.streams.all()),
            ("auth", self.auth.all()),
            ("broker", self.broker.all()),
            ("txn", self.txn.all()),
            ("share", self.share.all()),
        ];
        areas
            .into_iter()
            .flat_map(|(area, list)| list.into_iter().map(move |(n, s)| (format!("{area}.{n}"), s)))
            .collect()
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
    // A relation is named after one of these words, or called; other
    // occurrences are columns of the same name (`group_members.topics`).
    const BEFORE_RELATION: &[&str] = &[
        "FROM",
        "JOIN",
        "INTO",
        "UPDATE",
        "TABLE",
        "USING",
        "LIKE",
        "ONLY",
        "TRUNCATE",
        "ANALYZE",
        "VACUUM",
        "PARTITION",
    ];
    for rel in relations {
        for (at, _) in sql.match_indices(rel) {
            let before = sql.as_bytes()[..at].last().copied();
            let after = sql.as_bytes().get(at + rel.len()).copied();
            if before.is_some_and(ident) || after.is_some_and(ident) {
                continue; // part of a longer name
            }
            if sql[..at].ends_with(schema_prefix) {
                continue;
            }
            let word = sql[..at].split_whitespace().next_back().unwrap_or("");
            let named = BEFORE_RELATION.iter().any(|k| word.eq_ignore_ascii_case(k));
            if named || sql[at + rel.len()..].starts_with('(') {
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

    /// Every table, view, sequence and function of pgbroker's schema, and
    /// the run-time names statements are built around.
    const RELATIONS: &[&str] = &[
        "access_keys",
        "cleaner_checkpoints",
        "acls",
        "group_configs",
        "group_members",
        "group_offsets",
        "groups",
        "kafka_aborted_txns",
        "kafka_nodes",
        "kafka_producer_ids",
        "kafka_producer_state",
        "kafka_transactions",
        "kafka_txn_groups",
        "kafka_txn_offsets",
        "kafka_txn_partitions",
        "messages",
        "orphan_segments",
        "partitions",
        "queue_archive",
        "queue_archived",
        "queue_contents",
        "queue_dedup",
        "queue_groups",
        "queue_message_ids",
        "queue_messages",
        "queue_messages_0",
        "queue_messages_1",
        "queue_rotation",
        "queues",
        "records",
        "schema_migrations",
        "segments",
        "settle_refused",
        "share_partitions",
        "share_records",
        "sqs_dedup",
        "sqs_first_receive",
        "sqs_queues",
        "topics",
        "users",
        "waiters",
        TEST_SEGMENT,
    ];

    #[test]
    fn every_registry_statement_is_complete_and_qualified() {
        let schema = Schema::new("my_schema").expect("valid");
        let registry = Registry::new(&schema);
        let queues = crate::queues::statements::Statements::new(&schema);
        let mut all = registry.all();
        all.extend(queues.all().into_iter().map(|(n, s)| (format!("queues.{n}"), s)));
        assert!(all.len() > 100, "{}", all.len());
        let mut texts = std::collections::BTreeSet::new();
        for (name, sql) in &all {
            let problems = check_statement(sql, "\"my_schema\".", RELATIONS);
            assert!(problems.is_empty(), "{name}: {problems:?}\n{sql}");
            assert!(sql.contains("\"my_schema\"."), "{name} names nothing of the schema");
            // Names given as text (regclass arguments) are qualified too.
            for quoted in ["'queue_messages", "to_regclass(s.", "'kafka_producer_ids'"] {
                assert!(!sql.contains(quoted), "{name}: {quoted}");
            }
            assert!(texts.insert(sql.as_str()), "{name} repeats another statement");
        }
    }

    #[test]
    fn variants_differ_only_in_their_parts() {
        let schema = Schema::new("my_schema").expect("valid");
        let r = Registry::new(&schema);
        let q = crate::queues::statements::Statements::new(&schema);
        // One expiry condition, in every statement that removes or skips
        // expired members.
        let expired = "m.last_heartbeat + m.session_timeout_ms * interval '1 millisecond' < now()";
        let g = &r.groups;
        for sql in [
            &g.expire,
            &g.expire_classic,
            &g.live_count,
            &g.join_probe,
            &g.sync_probe,
            &g.list_detailed,
            &g.describe_library_members,
        ] {
            assert_eq!(sql.matches(expired).count(), 1, "{sql}");
        }
        assert!(g.expire_classic.starts_with(g.expire.as_str()));
        assert_eq!(&g.expire_classic[g.expire.len()..], " RETURNING m.pending");
        // Lists and lookups share their columns.
        let s = &r.streams;
        let one = s.topic_info.strip_suffix(" WHERE t.name = $1");
        assert!(one.is_some() && one == s.list_topics.strip_suffix(" ORDER BY t.name"));
        let one = q.queue_info.strip_suffix(" WHERE q.name = $1");
        assert!(one.is_some() && one == q.list_queues.strip_suffix(" ORDER BY q.name"));
        // A rotation moves from the other partition into the current one.
        for (sql, into, from) in [(&q.move_into_0, 0, 1), (&q.move_into_1, 1, 0)] {
            assert!(
                sql.starts_with(&format!("INSERT INTO \"my_schema\".queue_messages_{into} (")),
                "{sql}"
            );
            assert!(
                sql.contains(&format!("FROM \"my_schema\".queue_messages_{from} o")),
                "{sql}"
            );
        }
        // Segment statements take the segment's name wherever it goes.
        let drop = s.segment_drop.with("seg_7_100");
        assert_eq!(drop.matches("\"my_schema\".seg_7_100").count(), 2, "{drop}");
        let fetch = s.segment_fetch.with("seg_7_100");
        assert!(fetch.contains(" FROM \"my_schema\".seg_7_100\n"), "{fetch}");
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
