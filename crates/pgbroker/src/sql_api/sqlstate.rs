//! The SQLSTATEs the SQL functions raise. They are stable: applications
//! may match on them. A call that raises one changes nothing.

/// A bad argument: a priority, delay, key, receipt shape, header, count
/// or duration out of its range.
pub const INVALID_ARGUMENT: &str = "PB100";
/// A queue or topic name that breaks the naming rules.
pub const INVALID_NAME: &str = "PB101";
/// A message or record larger than its queue or topic allows.
pub const TOO_LARGE: &str = "PB102";
/// No queue of that name.
pub const UNKNOWN_QUEUE: &str = "PB200";
/// No topic of that name.
pub const UNKNOWN_TOPIC: &str = "PB201";
/// A partition number the topic does not have.
pub const UNKNOWN_PARTITION: &str = "PB202";
/// A receipt that is not the current lease of its message: acknowledged,
/// released, expired and claimed again, or never issued.
pub const STALE_RECEIPT: &str = "PB300";
