//! SQL functions in pgbroker's schema, for applications that reach the
//! broker through any Postgres driver: queue `send`, `send_batch`,
//! `receive`, `take`, `ack`, `nack`, `extend` and `stats`, and stream `produce`
//! and `produce_batch` inside the caller's transaction.
//!
//! One implementation of the rules: the function bodies run the library's
//! own queue and produce statements. They are generated here from the
//! same statement texts the library prepares, with each `$n` bound to a
//! PL/pgSQL variable and `now()` to the clock at the statement (a long
//! poll inside one transaction must see time pass). The limits are the
//! library's constants. What the library does in Rust between statements
//! (the settlement that moves group heads, keys and dead letters, the
//! checks of arguments, and Kafka's key partitioner) is written once more
//! in PL/pgSQL; tests run the same scenarios through both and compare.
//!
//! The functions are (re)created by [`crate::Broker::migrate`] whenever
//! this build's text differs from the installed one, unless a newer build
//! installed its own.

use tokio_postgres::GenericClient;

use crate::error::Result;
use crate::migrate::quote_ident;
use crate::queues::{Statements, MAX_DELAY, MAX_KEY_BYTES, MAX_PRIORITY, MAX_RECEIVE, MAX_VISIBILITY_TIMEOUT};
use crate::sql::Schema;
use crate::streams::produce::{OUTBOX_LOCK, PRODUCE};

pub(crate) mod ahead;
pub mod sqlstate;

/// Bumped when the functions change in a way an older build must not undo.
const API_VERSION: i32 = 1;

/// Longest wait of one `receive` call. The call holds a connection and a
/// transaction open while it waits, so it is kept short.
pub const MAX_SQL_WAIT: std::time::Duration = std::time::Duration::from_secs(60);
/// How often a waiting `receive` tries to claim again.
const POLL_MS: u64 = 50;
/// `stats` reports maintenance as overdue after this long without a pass.
pub const MAINTENANCE_OVERDUE: std::time::Duration = std::time::Duration::from_secs(300);

/// The functions a role needs to use the SQL interface.
pub const API_FUNCTIONS: &[&str] = &[
    "send",
    "send_batch",
    "receive",
    "take",
    "ack",
    "nack",
    "extend",
    "stats",
    "produce",
    "produce_batch",
    "partition_for_key",
];

/// Binds a statement's `$n` to the variables `{prefix}_n` and `now()` to
/// `pb_now`, so that PL/pgSQL runs it as a prepared statement of its own.
pub(crate) fn inline(sql: &str, prefix: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 64);
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push_str(prefix);
            out.push('_');
            while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                out.push(d);
                chars.next();
            }
        } else {
            out.push(c);
        }
    }
    out.replace("now()", "pb_now")
}

/// A SQL string literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn ms(d: std::time::Duration) -> String {
    d.as_millis().to_string()
}

/// A receipt's token, a UUID in any case, at the end of the receipt.
const RECEIPT_TOKEN: &str = "[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$";

/// The script that creates every function in `schema`.
pub(crate) fn script(schema: &str) -> Result<String> {
    let quoted = quote_ident(schema);
    let qualified = Schema::new(schema)?;
    let sql = &Statements::new(&qualified);
    let notify = inline(&sql.notify, "nt");
    let notify = notify.replacen("SELECT", "PERFORM", 1);
    let api = format!(
        "ARRAY[{}]::name[]",
        API_FUNCTIONS.iter().map(|f| literal(f)).collect::<Vec<_>>().join(", ")
    );
    let stmts: Vec<(&str, String)> = vec![
        ("@SEND_PLAIN@", inline(&sql.send_plain, "sd")),
        ("@SEND@", inline(&sql.send, "sd")),
        ("@SEND_ONE@", inline(&sql.send_one, "so")),
        ("@CLAIM@", inline(&sql.claim, "cl")),
        ("@CLAIM_ONE@", inline(&sql.claim_one, "cl")),
        ("@TAKE_ONE_PICK@", inline(&sql.take_one_pick, "to")),
        ("@TAKE_ONE_FROM_0@", inline(&sql.take_one_from_0, "to")),
        ("@TAKE_ONE_FROM_1@", inline(&sql.take_one_from_1, "to")),
        ("@TAKE@", inline(&sql.take, "tk")),
        ("@ACK@", inline(&sql.ack, "ak")),
        ("@ACK_ONE_PLAIN@", inline(&sql.ack_one_plain, "ao")),
        ("@ACK_ONE@", inline(&sql.ack_one, "ao")),
        ("@NACK@", inline(&sql.nack, "nk")),
        ("@EXTEND@", inline(&sql.extend, "ex")),
        ("@LOCK@", inline(&sql.lock, "lk")),
        ("@DELETE@", inline(&sql.delete, "dl")),
        ("@RELEASE@", inline(&sql.release, "rl")),
        ("@BURY@", inline(&sql.bury, "br")),
        ("@DEDUP_LEAVE@", inline(&sql.dedup_leave, "dv")),
        ("@DEDUP_ENTER@", inline(&sql.dedup_enter, "de")),
        ("@GROUP_DELTAS@", inline(&sql.group_deltas, "gd")),
        ("@GROUP_HEADS@", inline(&sql.group_heads, "gh")),
        ("@NOTIFY@", notify),
        ("@STATS@", inline(&sql.queue_stats, "st")),
        ("@OUTBOX_LOCK@", inline(&qualified.qualify(OUTBOX_LOCK), "ol")),
        ("@PRODUCE@", inline(&qualified.qualify(PRODUCE), "pr")),
    ];
    let values: Vec<(&str, String)> = vec![
        ("@PINNED_LEAN@", PINNED_LEAN.to_string()),
        ("@PINNED@", PINNED.to_string()),
        ("@CHANNEL@", literal(&format!("pgbroker_{schema}"))),
        ("@SCHEMA_LITERAL@", literal(schema)),
        ("@API@", api),
        ("@MAX_PRIORITY@", MAX_PRIORITY.to_string()),
        ("@MAX_DELAY_MS@", ms(MAX_DELAY)),
        ("@MAX_VISIBILITY_TIMEOUT_MS@", ms(MAX_VISIBILITY_TIMEOUT)),
        ("@MAX_RECEIVE@", MAX_RECEIVE.to_string()),
        ("@MAX_KEY_BYTES@", MAX_KEY_BYTES.to_string()),
        ("@MAX_ERROR_BYTES@", crate::queues::MAX_ERROR_BYTES.to_string()),
        ("@REAP_LEASE_MS@", ms(crate::queues::REAP_LEASE)),
        ("@MAX_WAIT_MS@", ms(MAX_SQL_WAIT)),
        ("@POLL_MS@", POLL_MS.to_string()),
        ("@MAINTENANCE_OVERDUE_MS@", ms(MAINTENANCE_OVERDUE)),
        ("@KEY_CONTROL@", literal(r"[\u0001-\u001f\u007f-\u009f]")),
        ("@RECEIPT_TOKEN@", literal(RECEIPT_TOKEN)),
        // One receipt whose id needs no range check: at most 18 digits.
        (
            "@ONE_RECEIPT@",
            literal(&format!("^[1-9][0-9]{{0,17}}:{RECEIPT_TOKEN}")),
        ),
        ("@INVALID@", sqlstate::INVALID_ARGUMENT.to_string()),
        ("@INVALID_NAME@", sqlstate::INVALID_NAME.to_string()),
        ("@TOO_LARGE@", sqlstate::TOO_LARGE.to_string()),
        ("@UNKNOWN_QUEUE@", sqlstate::UNKNOWN_QUEUE.to_string()),
        ("@UNKNOWN_TOPIC@", sqlstate::UNKNOWN_TOPIC.to_string()),
        ("@UNKNOWN_PARTITION@", sqlstate::UNKNOWN_PARTITION.to_string()),
        ("@STALE_RECEIPT@", sqlstate::STALE_RECEIPT.to_string()),
    ];
    let mut text = [
        include_str!("common.sql"),
        include_str!("settle.sql"),
        include_str!("queues.sql"),
        include_str!("streams.sql"),
        REVOKE_PUBLIC,
    ]
    .join("\n");
    // Statements first: their texts contain no placeholders, and the
    // values below fill in what they leave (the schema).
    for (k, v) in stmts.iter().chain(values.iter()) {
        text = text.replace(k, v);
    }
    Ok(text.replace("@S@", &quoted))
}

/// The settings of every `SECURITY DEFINER` function. The `search_path`
/// is pinned so that a caller's cannot redirect a name the function uses.
/// Generic plans: the library's statements are planned once per session
/// and kept. Under the default, Postgres compares a generic plan's cost
/// with that of plans made for the arguments at hand and may keep
/// planning anew on every call (it did so for the acknowledgement, whose
/// archive branch a custom plan folds away). No JIT: a generic plan
/// costs `LIMIT $n` as a tenth of the rows, so on a deep queue the claim's
/// estimate passes `jit_above_cost` and each call would compile for tens
/// of milliseconds, as the library's pooled sessions did.
const PINNED: &str = "SET search_path = @S@, pg_temp SET plan_cache_mode = force_generic_plan SET jit = off";

/// [`PINNED`] without the JIT setting, for the per-message functions whose
/// statements have no `LIMIT $n` and so a small estimate (`send` of one
/// message, `take`'s lean way). Each setting of a function is applied and
/// undone on every call, and these are called once per message.
const PINNED_LEAN: &str = "SET search_path = @S@, pg_temp SET plan_cache_mode = force_generic_plan";

/// Only roles given the API (see `grant_api`) may call the functions.
const REVOKE_PUBLIC: &str = "
DO $r$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid FROM pg_proc p WHERE p.pronamespace = @SCHEMA_LITERAL@::regnamespace
                                          AND (p.proname = ANY(@API@) OR p.proname LIKE '\\_pb\\_%'
                                               OR p.proname IN ('grant_api', 'revoke_api')) LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END
$r$;";

/// Installs the functions inside the migration's transaction when the
/// installed ones are older, or of this version with another text.
pub(crate) async fn install(tx: &impl GenericClient, schema: &str) -> Result<()> {
    let script = script(schema)?;
    let row = tx
        .query_one(
            "SELECT coalesce((SELECT version FROM sql_functions), 0),
                    coalesce((SELECT digest = md5($1) FROM sql_functions), false)",
            &[&script],
        )
        .await?;
    let (installed, same): (i32, bool) = (row.get(0), row.get(1));
    if installed > API_VERSION || (installed == API_VERSION && same) {
        return Ok(());
    }
    tracing::info!(schema, version = API_VERSION, "installing the SQL functions");
    tx.batch_execute(&script).await?;
    tx.execute(
        "INSERT INTO sql_functions (version, digest) VALUES ($1, md5($2))
         ON CONFLICT (only_row) DO UPDATE SET version = EXCLUDED.version, digest = EXCLUDED.digest,
                                             installed_at = now()",
        &[&API_VERSION, &script],
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_become_variables() {
        assert_eq!(
            inline("SELECT $1, $10::int8[], now() FROM t WHERE a = $2", "x"),
            "SELECT x_1, x_10::int8[], pb_now FROM t WHERE a = x_2"
        );
    }

    #[test]
    fn every_placeholder_is_filled() {
        let s = script("pgbroker").expect("valid schema");
        let left: Vec<&str> = s
            .match_indices('@')
            .map(|(i, _)| &s[i..(i + 20).min(s.len())])
            .collect();
        assert!(left.is_empty(), "{left:?}");
        assert!(!s.contains("$1") && !s.contains("{s}"));
    }
}
