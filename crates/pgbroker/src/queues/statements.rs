//! The statements of the queue path, built once per broker from their
//! templates (see [`crate::sql`]) and qualified with its schema. Each is
//! plain text with `$n` parameters, documented where its template is
//! defined; the hot ones are prepared once per connection from this text.

use super::{browse, membership, receive, send, settle, sqs_attrs, sqs_fifo, take};
use crate::sql::Commit;

/// The two partitions of `queue_messages`; a rotation's statements are
/// built around one of them.
pub(crate) const PARTITIONS: [&str; 2] = ["queue_messages_0", "queue_messages_1"];

/// A queue's settings, from `queues q` and its dead-letter queue `d`.
macro_rules! queue_info {
    () => {
        "SELECT q.name, q.visibility_timeout_ms, q.max_attempts, d.name, q.backoff_base_ms,
        q.backoff_max_ms, q.archive_retention_ms, q.max_message_bytes, q.created_at, q.id, q.dead_letter_id
 FROM {s}queues q LEFT JOIN {s}queues d ON d.id = q.dead_letter_id"
    };
}

/// The columns a rotation moves.
macro_rules! moved_columns {
    () => {
        "id, queue_id, visible_at, enqueued_at, attempts, dead_attempts, priority, head, timed, \
         dead, receipt, dead_source, group_key, dedup_key, last_error, headers, body"
    };
}

/// Moves the live rows of the other partition into partition `$n` (the
/// current one), as slot `$1`.
macro_rules! move_into {
    ($into:literal, $from:literal) => {
        concat!(
            "INSERT INTO {s}queue_messages_",
            $into,
            " (",
            moved_columns!(),
            ", slot)
             SELECT ",
            moved_columns!(),
            ", $1::int2 FROM {s}queue_messages_",
            $from,
            " o
             WHERE EXISTS (SELECT 1 FROM {s}queues q WHERE q.id = o.queue_id)"
        )
    };
}

/// Deletes the rows of a table whose queue is gone, visiting each distinct
/// queue id once through the index that starts with it.
macro_rules! orphans {
    ($table:literal) => {
        concat!(
            "WITH RECURSIVE ids AS (
                 (SELECT queue_id FROM {s}",
            $table,
            " ORDER BY queue_id LIMIT 1)
                 UNION ALL
                 SELECT (SELECT t.queue_id FROM {s}",
            $table,
            " t WHERE t.queue_id > ids.queue_id
                         ORDER BY t.queue_id LIMIT 1)
                 FROM ids WHERE ids.queue_id IS NOT NULL)
             DELETE FROM {s}",
            $table,
            " WHERE queue_id IN (
                 SELECT queue_id FROM ids
                 WHERE queue_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {s}queues q WHERE q.id = ids.queue_id))"
        )
    };
}

crate::sql::statements! {
    /// The queue path's statements, qualified with the broker's schema.
    Statements {
    /// [`send::SEND`].
    send = send::SEND;
    /// [`send::SEND_PLAIN`].
    send_plain = send::SEND_PLAIN;
    /// [`send::SEND_ONE`].
    send_one = send::SEND_ONE;
    /// [`receive::claim`].
    claim = receive::claim();
    /// [`receive::claim_one`].
    claim_one = receive::claim_one();
    /// [`take::take`].
    take = take::take();
    /// [`take::take_one_pick`].
    take_one_pick = take::take_one_pick();
    /// [`take::TAKE_ONE_FROM_0`].
    take_one_from_0 = take::TAKE_ONE_FROM_0;
    /// [`take::TAKE_ONE_FROM_1`].
    take_one_from_1 = take::TAKE_ONE_FROM_1;
    /// [`take::CALL`].
    take_call = take::CALL;
    /// [`settle::ACK_ONE`].
    ack_one = settle::ACK_ONE;
    /// [`settle::ACK_ONE_PLAIN`].
    ack_one_plain = settle::ACK_ONE_PLAIN;
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
    /// Creates a queue.
    create_queue = "INSERT INTO {s}queues (name, visibility_timeout_ms, max_attempts, dead_letter_id,
                        backoff_base_ms, backoff_max_ms, archive_retention_ms, max_message_bytes)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (name) DO NOTHING RETURNING id";
    /// Updates a queue's settings.
    update_queue = "UPDATE {s}queues SET visibility_timeout_ms = $2, max_attempts = $3, dead_letter_id = $4,
            backoff_base_ms = $5, backoff_max_ms = $6, archive_retention_ms = $7, max_message_bytes = $8
     WHERE name = $1 RETURNING id";
    /// One queue's settings.
    queue_info = concat!(queue_info!(), " WHERE q.name = $1");
    /// Every queue's settings, by name.
    list_queues = concat!(queue_info!(), " ORDER BY q.name");
    /// [`browse::BROWSE`].
    browse = browse::BROWSE;
    /// A queue's counts.
    queue_stats = "
WITH m AS (
    SELECT visible_at, receipt IS NOT NULL AS leased, enqueued_at, false AS dead
    FROM {s}queue_messages WHERE queue_id = $1 AND head AND NOT timed
    UNION ALL
    SELECT visible_at, receipt IS NOT NULL, enqueued_at, false
    FROM {s}queue_messages WHERE queue_id = $1 AND head AND timed
    UNION ALL
    SELECT visible_at, receipt IS NOT NULL, enqueued_at, false
    FROM {s}queue_messages WHERE queue_id = $1 AND group_key IS NOT NULL AND NOT head AND NOT dead
    UNION ALL
    SELECT visible_at, false, enqueued_at, true
    FROM {s}queue_messages WHERE queue_id = $1 AND dead
)
SELECT count(*) FILTER (WHERE NOT dead AND visible_at <= now()),
       count(*) FILTER (WHERE NOT dead AND leased AND visible_at > now()),
       count(*) FILTER (WHERE NOT dead AND NOT leased AND visible_at > now()),
       count(*) FILTER (WHERE dead)
         + (SELECT count(*) FROM {s}queue_messages WHERE dead_source = $1 AND queue_id <> $1),
       (extract(epoch FROM now() - min(enqueued_at) FILTER (WHERE NOT dead AND visible_at <= now()))
         * 1000)::bigint
FROM m";
    /// Every queue's counts, by name, as [`Self::queue_stats`] gives them
    /// one by one: one pass over the message table instead of a
    /// statement per queue.
    all_queue_stats = "
WITH m AS (
    SELECT queue_id, visible_at, receipt IS NOT NULL AS leased, enqueued_at, false AS dead
    FROM {s}queue_messages WHERE head
    UNION ALL
    SELECT queue_id, visible_at, receipt IS NOT NULL, enqueued_at, false
    FROM {s}queue_messages WHERE group_key IS NOT NULL AND NOT head AND NOT dead
    UNION ALL
    SELECT queue_id, visible_at, false, enqueued_at, true
    FROM {s}queue_messages WHERE dead
), c AS (
    SELECT queue_id,
           count(*) FILTER (WHERE NOT dead AND visible_at <= now()) AS ready,
           count(*) FILTER (WHERE NOT dead AND leased AND visible_at > now()) AS in_flight,
           count(*) FILTER (WHERE NOT dead AND NOT leased AND visible_at > now()) AS delayed,
           count(*) FILTER (WHERE dead) AS dead,
           min(enqueued_at) FILTER (WHERE NOT dead AND visible_at <= now()) AS oldest_ready
    FROM m GROUP BY queue_id
), d AS (
    SELECT dead_source, count(*) AS n FROM {s}queue_messages
    WHERE dead_source IS NOT NULL AND queue_id <> dead_source GROUP BY dead_source
)
SELECT q.name, coalesce(c.ready, 0), coalesce(c.in_flight, 0), coalesce(c.delayed, 0),
       coalesce(c.dead, 0) + coalesce(d.n, 0),
       (extract(epoch FROM now() - c.oldest_ready) * 1000)::bigint
FROM {s}queues q LEFT JOIN c ON c.queue_id = q.id LEFT JOIN d ON d.dead_source = q.id
ORDER BY q.name";
    /// Records that a maintenance pass ran, for the SQL functions' `stats`.
    mark_maintained = "UPDATE {s}queue_rotation SET maintained_at = now()";
    /// Deletes archived messages past their queue's retention.
    archive_expiry = "DELETE FROM {s}queue_archive WHERE ctid = ANY(ARRAY(
        SELECT a.ctid FROM {s}queues q, LATERAL (
            SELECT x.ctid FROM {s}queue_archive x
            WHERE x.queue_id = q.id
              AND x.acked_at < now() - coalesce(q.archive_retention_ms, 0) * interval '1 millisecond'
            LIMIT 10000) a))";
    /// Orphaned group counters.
    orphan_groups = orphans!("queue_groups");
    /// Orphaned deduplication keys.
    orphan_dedup = orphans!("queue_dedup");
    /// Orphaned archived messages.
    orphan_archive = orphans!("queue_archive");
    /// A rotation's move into partition 0.
    move_into_0 = move_into!("0", "1");
    /// A rotation's move into partition 1.
    move_into_1 = move_into!("1", "0");
    /// Used by `analyze_current`.
    current_partition_size = "SELECT current, extract(epoch FROM rotated_at)::float8,
                        pg_relation_size(CASE current WHEN 0 THEN '{s}queue_messages_0' ELSE '{s}queue_messages_1' END)
                 FROM {s}queue_rotation";
    /// Used by `rotate`.
    partition_sizes = "SELECT current, extract(epoch FROM now() - rotated_at)::float8,
                        pg_total_relation_size('{s}queue_messages_0'), pg_total_relation_size('{s}queue_messages_1')
                 FROM {s}queue_rotation";
    /// Used by `rotate`.
    live_estimate = "SELECT coalesce((SELECT n_live_tup FROM pg_stat_user_tables WHERE relid = ('{s}' || $1::text)::regclass), 0)";
    /// Used by `rotate`.
    lock_rotation = "SELECT current FROM {s}queue_rotation FOR UPDATE";
    /// Used by `rotate`.
    set_rotation = "UPDATE {s}queue_rotation SET current = $1, rotated_at = now()";
    /// Used by `lock_dead_letter`.
    lock_dead_letter = "SELECT id FROM {s}queues WHERE name = $1 FOR KEY SHARE";
    /// Used by `delete_queue`.
    lock_queue = "SELECT id FROM {s}queues WHERE name = $1 FOR UPDATE";
    /// Used by `delete_queue`.
    dead_letter_user = "SELECT name FROM {s}queues WHERE dead_letter_id = $1 AND id <> $1 ORDER BY name LIMIT 1";
    /// Used by `delete_queue`.
    delete_queue_groups = "DELETE FROM {s}queue_groups WHERE queue_id = $1";
    /// Used by `delete_queue`.
    delete_queue_dedup = "DELETE FROM {s}queue_dedup WHERE queue_id = $1";
    /// Used by `delete_queue`.
    delete_queue_archive = "DELETE FROM {s}queue_archive WHERE queue_id = $1";
    /// Used by `delete_queue`.
    delete_queue = "DELETE FROM {s}queues WHERE id = $1";
    /// Used by `queue_meta`.
    queue_meta = "SELECT id, visibility_timeout_ms, max_attempts, dead_letter_id, backoff_base_ms,
                        backoff_max_ms, archive_retention_ms IS NOT NULL, max_message_bytes
                 FROM {s}queues WHERE name = $1";
    /// Used by `refuse_duplicates`.
    refuse_duplicates = "SELECT id, receipt::text FROM {s}queue_messages WHERE id = ANY($1) AND queue_id = $2";
    /// Used by `sqs_settings`.
    sqs_get = sqs_attrs::GET;
    /// Used by `set_sqs_settings`.
    sqs_set = sqs_attrs::SET;
    /// Used by `sqs_send`.
    sqs_dedup_take = sqs_attrs::DEDUP_TAKE;
    /// Used by `sqs_send`.
    sqs_dedup_holder = sqs_attrs::DEDUP_HOLDER;
    /// Used by `sqs_send`.
    sqs_dedup_set = sqs_attrs::DEDUP_SET;
    /// Used by `sqs_set_visibility`.
    sqs_set_visibility = sqs_attrs::SET_VISIBILITY;
    /// Used by `sqs_sweep`.
    sqs_expire = sqs_attrs::EXPIRE;
    /// Used by `sqs_receive_group`.
    sqs_followers = sqs_fifo::FOLLOWERS;
    /// Used by `sqs_first_receives`.
    sqs_first_receive = sqs_attrs::FIRST_RECEIVE;
    /// Used by `sqs_record_first_receives`.
    sqs_first_receive_relaxed = sqs_attrs::FIRST_RECEIVE_RELAXED;
    /// Used by `sqs_sweep`.
    sqs_sweep_dedup = sqs_attrs::SWEEP_DEDUP;
    /// Used by `sqs_sweep`.
    sqs_sweep_first_receive = sqs_attrs::SWEEP_FIRST_RECEIVE;
    }
    segment {
    /// Analyzes a partition.
    analyze = ["ANALYZE {s}", ""];
    /// Vacuums a partition.
    vacuum = ["VACUUM {s}", ""];
    /// Counts a partition's rows, up to `$1`.
    count_up_to = ["SELECT count(*) FROM (SELECT 1 FROM {s}", " LIMIT $1) x"];
    /// Locks a partition for a rotation.
    lock_partition = ["LOCK TABLE {s}", " IN ACCESS EXCLUSIVE MODE"];
    /// Empties a partition.
    truncate = ["TRUNCATE {s}", ""];
    /// A partition's size in bytes.
    partition_size = ["SELECT pg_total_relation_size('{s}", "')"];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::Schema;
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
            let problems = check_statement(&sql, "\"my_schema\".", RELATIONS);
            assert!(problems.is_empty(), "{name}: {problems:?}\n{sql}");
            assert!(sql.contains("\"my_schema\"."), "{name}");
        }
        let texts: std::collections::BTreeSet<String> = s.all().into_iter().map(|(_, t)| t).collect();
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
        for flushed in [
            &s.send,
            &s.send_plain,
            &s.send_one,
            &s.claim_one,
            &s.nack,
            &s.extend,
            &s.release,
            &s.bury,
            &s.ack_one,
            &s.ack_one_plain,
        ] {
            assert!(!flushed.contains("synchronous_commit"), "{flushed}");
        }
    }

    #[test]
    fn the_claim_of_one_message_is_the_claim() {
        let s = statements();
        // The same candidates and pick, the same lease and answer per message.
        let pick = |t: &str| t.split_once("\n), claimed AS (").map(|(head, _)| head.to_string());
        assert!(pick(&s.claim).is_some_and(|p| s.claim_one.starts_with(&p)));
        // The text of `t` between `from` and `to`.
        fn between<'a>(t: &'a str, from: &str, to: &str) -> Option<&'a str> {
            t.split_once(from)?.1.split_once(to).map(|(part, _)| part)
        }
        let part = between(&s.claim, "    UPDATE ", "\n    WHERE");
        assert!(part.is_some());
        assert_eq!(part, between(&s.claim_one, "    UPDATE ", "\n    WHERE"));
        // The same answer per message, but for the claim's commit mode.
        let answer = between(&s.claim, "RETURNING", &format!(", {NO_FLUSH_WAIT} AS relaxed"));
        assert!(answer.is_some_and(|a| s.claim_one.ends_with(a)), "{answer:?}");
        assert!(s.claim_one.contains("m.id = (SELECT id FROM pick)"));
        assert!(!s.claim_one.contains("UNION ALL\nSELECT NULL"));
    }

    #[test]
    fn one_plain_send_is_the_plain_send() {
        let s = statements();
        let inserts = |t: &str| t.split_once("\n          FROM ").map(|(head, _)| head.to_string());
        assert!(inserts(&s.send_plain).is_some());
        assert_eq!(inserts(&s.send_plain), inserts(&s.send_one));
        let notify = |t: &str| t.split_once("(SELECT pg_notify(").map(|(_, tail)| tail.to_string());
        assert_eq!(
            notify(&s.send_plain),
            notify(&s.send_one).map(|t| t.replace("FROM ins i", "FROM (SELECT id FROM ins ORDER BY id) i"))
        );
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
        // Purge and delete remove the same messages.
        let deletes = |sql: &str| sql.rsplit_once("SELECT").map(|(head, _)| head.to_string());
        assert_eq!(deletes(&s.purge), deletes(&s.delete_all));
        assert_eq!(s.purge.matches("DELETE FROM").count(), 4);
    }
}
