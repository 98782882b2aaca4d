//! The statements of the queue path, built once per broker from their
//! templates (see [`crate::sql`]) and qualified with its schema. Each is
//! plain text with `$n` parameters, documented where its template is
//! defined; the hot ones are prepared once per connection from this text.

use super::{membership, receive, send, settle};
use crate::sql::{Commit, Schema};

/// Declares [`Statements`]: one field per statement, with the template it
/// is built from, and the list of them all.
macro_rules! statements {
    ($($(#[$doc:meta])* $name:ident = $template:expr;)*) => {
        /// The queue path's statements, qualified with the broker's schema.
        pub(crate) struct Statements {
            $($(#[$doc])* pub $name: String,)*
        }

        impl Statements {
            /// Builds every statement for `schema`.
            pub(crate) fn new(schema: &Schema) -> Statements {
                Statements {
                    $($name: schema.qualify(&$template),)*
                }
            }

            /// Every statement, by name.
            #[cfg(test)]
            pub(crate) fn all(&self) -> Vec<(&'static str, &str)> {
                vec![$((stringify!($name), self.$name.as_str()),)*]
            }
        }
    };
}

statements! {
    /// [`send::SEND`].
    send = send::SEND;
    /// [`send::SEND_PLAIN`].
    send_plain = send::SEND_PLAIN;
    /// [`receive::claim`].
    claim = receive::claim();
    /// [`settle::ack`], inside a caller's transaction.
    ack = settle::ack(Commit::Flush);
    /// [`settle::ack`] in a transaction of its own.
    ack_relaxed = settle::ack(Commit::NoFlushWait);
    /// [`settle::ack_fast`].
    ack_fast = settle::ack_fast();
    /// [`settle::nack`].
    nack = settle::nack();
    /// [`settle::extend`].
    extend = settle::extend();
    /// [`settle::LOCKED`], on its own.
    lock = settle::LOCKED;
    /// [`membership::DELETE`].
    delete = membership::DELETE;
    /// [`membership::release`].
    release = membership::release();
    /// [`membership::BURY`].
    bury = membership::BURY;
    /// [`membership::DEDUP_LEAVE`].
    dedup_leave = membership::DEDUP_LEAVE;
    /// [`membership::DEDUP_ENTER`].
    dedup_enter = membership::DEDUP_ENTER;
    /// [`membership::GROUP_DELTAS`].
    group_deltas = membership::GROUP_DELTAS;
    /// [`membership::GROUP_HEADS`].
    group_heads = membership::GROUP_HEADS;
    /// [`membership::NOTIFY`].
    notify = membership::NOTIFY;
    /// [`membership::REDRIVE`].
    redrive = membership::REDRIVE;
    /// [`super::purge`].
    purge = super::purge();
    /// [`super::delete_all`].
    delete_all = super::delete_all();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::{check_statement, NO_FLUSH_WAIT};

    /// Every relation of pgbroker's schema the queue statements use.
    const RELATIONS: &[&str] = &[
        "queues",
        "queue_messages",
        "queue_message_ids",
        "queue_dedup",
        "queue_groups",
        "queue_archive",
        "queue_rotation",
        "waiters",
        "settle_refused",
    ];

    fn statements() -> Statements {
        Statements::new(&Schema::new("my_schema").expect("valid"))
    }

    #[test]
    fn every_statement_is_complete_and_qualified() {
        let s = statements();
        for (name, sql) in s.all() {
            let problems = check_statement(sql, "\"my_schema\".", RELATIONS);
            assert!(problems.is_empty(), "{name}: {problems:?}\n{sql}");
            assert!(sql.contains("\"my_schema\"."), "{name}");
        }
        let texts: std::collections::BTreeSet<&str> = s.all().into_iter().map(|(_, t)| t).collect();
        assert_eq!(texts.len(), s.all().len(), "two statements have the same text");
    }

    #[test]
    fn the_relaxed_ack_is_the_ack_plus_its_commit_mode() {
        let s = statements();
        assert!(!s.ack.contains("synchronous_commit"));
        let rest = s.ack_relaxed.strip_prefix(s.ack.as_str()).expect("same statement");
        assert_eq!(rest.trim_start_matches([',', ' ', '\n']), NO_FLUSH_WAIT);
        for relaxed in [&s.ack_fast, &s.claim] {
            assert_eq!(relaxed.matches(NO_FLUSH_WAIT).count(), 1, "{relaxed}");
        }
        for flushed in [&s.send, &s.send_plain, &s.nack, &s.extend, &s.release, &s.bury] {
            assert!(!flushed.contains("synchronous_commit"), "{flushed}");
        }
    }

    #[test]
    fn releases_read_their_own_parameters() {
        let s = statements();
        for (sql, delay, base, max, error) in [(&s.nack, 4, 8, 6, 7), (&s.release, 3, 5, 4, 6)] {
            for expected in [
                format!("coalesce(${delay}::int8,"),
                format!("least(${max}::int8::float8, ${base}::int8::float8 *"),
                format!("last_error = coalesce(${error}, m.last_error)"),
            ] {
                assert_eq!(sql.matches(&expected).count(), 1, "{expected} in {sql}");
            }
        }
        // The settlement statements start from the same locked rows.
        let locked = s.lock.trim();
        for sql in [&s.ack, &s.ack_relaxed, &s.nack, &s.extend] {
            assert!(sql.contains(locked), "{sql}");
        }
        assert!(s.purge.starts_with(s.delete_all.as_str()) && s.purge.contains("RETURNING"));
    }
}
