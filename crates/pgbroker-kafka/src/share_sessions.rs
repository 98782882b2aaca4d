//! Share sessions (KIP-932): what a share consumer fetches from this
//! broker, and the epoch its next ShareFetch or ShareAcknowledge must
//! carry. Kafka keeps them in each broker's memory and so does this one:
//! a client that reaches another broker opens a session there. The
//! records' states are in Postgres, not here.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

/// The epoch that opens a session.
pub(crate) const OPEN_EPOCH: i32 = 0;
/// The epoch that closes one.
pub(crate) const CLOSE_EPOCH: i32 = -1;

/// Most sessions held; past it a new one is refused
/// (`SHARE_SESSION_LIMIT_REACHED`) unless idle ones can be dropped.
const MAX_SESSIONS: usize = 10_000;
/// A session unused for this long may be dropped to make room.
const IDLE: Duration = Duration::from_secs(300);

/// A topic partition as share requests name it.
pub(crate) type SharePartition = (Uuid, i32);

/// Why a session could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionError {
    /// No session for this member (`SHARE_SESSION_NOT_FOUND`).
    NotFound,
    /// The epoch is not the one expected (`INVALID_SHARE_SESSION_EPOCH`).
    InvalidEpoch,
    /// Too many sessions (`SHARE_SESSION_LIMIT_REACHED`).
    LimitReached,
}

struct Session {
    next_epoch: i32,
    partitions: BTreeSet<SharePartition>,
    used: Instant,
}

/// Every share session of this broker, by group and member.
#[derive(Default)]
pub(crate) struct ShareSessions {
    sessions: Mutex<HashMap<(String, String), Session>>,
}

fn next(epoch: i32) -> i32 {
    if epoch == i32::MAX {
        1
    } else {
        epoch + 1
    }
}

impl ShareSessions {
    /// Applies a request's epoch and its partition changes, returning the
    /// session's partitions afterwards. `OPEN_EPOCH` starts the session
    /// over with `added`; `CLOSE_EPOCH` ends it (returning what it held);
    /// any other epoch must be the one expected, and moves it on.
    pub(crate) fn update(
        &self,
        group: &str,
        member: &str,
        epoch: i32,
        added: &[SharePartition],
        forgotten: &[SharePartition],
    ) -> Result<BTreeSet<SharePartition>, SessionError> {
        let Ok(mut all) = self.sessions.lock() else {
            return Err(SessionError::NotFound);
        };
        let key = (group.to_string(), member.to_string());
        let now = Instant::now();
        if epoch == OPEN_EPOCH {
            if !all.contains_key(&key) && all.len() >= MAX_SESSIONS {
                all.retain(|_, s| now.duration_since(s.used) < IDLE);
                if all.len() >= MAX_SESSIONS {
                    return Err(SessionError::LimitReached);
                }
            }
            let partitions: BTreeSet<SharePartition> = added.iter().copied().collect();
            all.insert(
                key,
                Session {
                    next_epoch: 1,
                    partitions: partitions.clone(),
                    used: now,
                },
            );
            return Ok(partitions);
        }
        let Some(s) = all.get_mut(&key) else {
            return Err(SessionError::NotFound);
        };
        if epoch == CLOSE_EPOCH {
            let partitions = std::mem::take(&mut s.partitions);
            all.remove(&key);
            return Ok(partitions);
        }
        if epoch != s.next_epoch {
            return Err(SessionError::InvalidEpoch);
        }
        s.next_epoch = next(epoch);
        s.used = now;
        s.partitions.extend(added.iter().copied());
        for f in forgotten {
            s.partitions.remove(f);
        }
        Ok(s.partitions.clone())
    }

    /// Checks an acknowledgement's epoch without changing the partitions:
    /// it may not open a session.
    pub(crate) fn acknowledge(&self, group: &str, member: &str, epoch: i32) -> Result<(), SessionError> {
        if epoch == OPEN_EPOCH {
            return Err(SessionError::InvalidEpoch);
        }
        self.update(group, member, epoch, &[], &[]).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_follow_kafkas_rules() {
        let s = ShareSessions::default();
        let t = Uuid::from_u128(7);
        assert_eq!(s.update("g", "m", 1, &[], &[]), Err(SessionError::NotFound));
        let opened = s.update("g", "m", OPEN_EPOCH, &[(t, 0)], &[]).expect("open");
        assert_eq!(opened.len(), 1);
        assert_eq!(s.update("g", "m", 2, &[], &[]), Err(SessionError::InvalidEpoch));
        let added = s.update("g", "m", 1, &[(t, 1)], &[]).expect("epoch 1");
        assert_eq!(added.len(), 2);
        assert_eq!(
            s.update("g", "m", 1, &[], &[]),
            Err(SessionError::InvalidEpoch),
            "used twice"
        );
        let forgot = s.update("g", "m", 2, &[], &[(t, 0)]).expect("epoch 2");
        assert_eq!(forgot.into_iter().collect::<Vec<_>>(), vec![(t, 1)]);
        assert_eq!(s.acknowledge("g", "m", OPEN_EPOCH), Err(SessionError::InvalidEpoch));
        assert_eq!(s.acknowledge("g", "m", 3), Ok(()));
        assert_eq!(s.update("g", "m", CLOSE_EPOCH, &[], &[]).map(|p| p.len()), Ok(1));
        assert_eq!(s.update("g", "m", 4, &[], &[]), Err(SessionError::NotFound), "closed");
        assert_eq!(next(i32::MAX), 1);
    }
}
