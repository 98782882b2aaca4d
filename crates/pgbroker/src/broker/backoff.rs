//! Bounded backoff for opening connections while Postgres is unreachable.
//!
//! Without it, every request a client retries during an outage becomes one
//! connection attempt: a few clients retrying every 100 ms make Postgres
//! see hundreds of connection attempts a second, and a restarted server
//! meets a storm. After a failed attempt, the pool's callers fail at once
//! until the backoff is over; the first caller after that tries again.

use std::sync::Mutex;
use std::time::{Duration, Instant};

const FIRST: Duration = Duration::from_millis(100);
/// Longest wait between two attempts, and so the longest a recovered
/// Postgres waits to be noticed.
pub(crate) const MAX: Duration = Duration::from_secs(2);

#[derive(Default)]
pub(crate) struct ConnectBackoff {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// No attempt before this instant.
    closed_until: Option<Instant>,
    /// The current wait; doubles with each failure, up to [`MAX`].
    wait: Option<Duration>,
}

impl ConnectBackoff {
    /// How long callers must still wait, or None when they may try. A
    /// caller let through closes the gate for the current wait, so that
    /// concurrent callers do not all try at once.
    pub(crate) fn check(&self, now: Instant) -> Option<Duration> {
        let Ok(mut s) = self.state.lock() else { return None };
        match (s.closed_until, s.wait) {
            (Some(until), _) if until > now => Some(until - now),
            (Some(_), Some(wait)) => {
                s.closed_until = Some(now + wait);
                None
            }
            _ => None,
        }
    }

    /// A connection attempt failed: wait longer before the next.
    pub(crate) fn failed(&self, now: Instant) {
        if let Ok(mut s) = self.state.lock() {
            let wait = s.wait.map_or(FIRST, |w| (w * 2).min(MAX));
            s.wait = Some(wait);
            s.closed_until = Some(now + wait);
        }
    }

    /// A connection was had: no more waiting.
    pub(crate) fn succeeded(&self) {
        if let Ok(mut s) = self.state.lock() {
            if s.wait.is_some() {
                *s = State::default();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_bound_and_reset_on_success() {
        let b = ConnectBackoff::default();
        let t = Instant::now();
        assert_eq!(b.check(t), None);
        b.failed(t);
        assert_eq!(b.check(t), Some(FIRST));
        let mut now = t;
        let mut waits = vec![];
        for _ in 0..8 {
            let wait = b.check(now).unwrap_or_default();
            waits.push(wait);
            now += wait;
            assert_eq!(b.check(now), None, "one caller may try");
            assert!(b.check(now).is_some(), "the others wait");
            b.failed(now);
        }
        assert_eq!(waits[0], FIRST);
        assert_eq!(waits[1], FIRST * 2);
        assert_eq!(*waits.last().unwrap_or(&Duration::ZERO), MAX);
        b.succeeded();
        assert_eq!(b.check(now), None);
        assert_eq!(b.check(now), None);
    }
}
