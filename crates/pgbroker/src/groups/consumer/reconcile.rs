//! How one member moves from what it owns toward its target assignment,
//! revoking before assigning (KIP-848's per-member reconciliation). Pure:
//! the coordinator passes the member's stored state, its target, what the
//! other members still hold and what the member reported owning.

use std::collections::BTreeSet;

use crate::types::TopicPartition;

/// A set of partitions.
pub(crate) type Parts = BTreeSet<TopicPartition>;

/// A member's reconciliation state as stored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct MemberView {
    /// Its member epoch.
    pub epoch: i32,
    /// What it was given at that epoch.
    pub assigned: Parts,
    /// What it was asked to give up and has not confirmed yet.
    pub revoking: Parts,
}

/// Where a member is, as ConsumerGroupDescribe and the tests see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// It owns exactly its target at the group's epoch.
    Stable,
    /// It must give partitions up before it gets any new ones.
    Revoking,
    /// It waits for partitions other members still hold.
    Unreleased,
}

impl MemberView {
    /// Where the member is relative to its target at `target_epoch`.
    pub(crate) fn phase(&self, target_epoch: i32, target: &Parts) -> Phase {
        if !self.revoking.is_empty() {
            Phase::Revoking
        } else if self.epoch == target_epoch && &self.assigned == target {
            Phase::Stable
        } else {
            Phase::Unreleased
        }
    }
}

/// The member's next state. While partitions are being revoked nothing
/// changes until the member reports (`reported`, `None` when it did not
/// say) that it no longer owns any of them. Then partitions it holds
/// outside its target are revoked first, keeping its epoch; only when
/// nothing is left to revoke does it move to `target_epoch` and get the
/// target partitions that no other member holds (`held_by_others`).
pub(crate) fn reconcile(
    current: &MemberView,
    target_epoch: i32,
    target: &Parts,
    held_by_others: &Parts,
    reported: Option<&Parts>,
) -> MemberView {
    let still_owns = |parts: &Parts| reported.is_none_or(|r| !r.is_disjoint(parts));
    if !current.revoking.is_empty() && still_owns(&current.revoking) {
        return current.clone();
    }
    let keep: Parts = current.assigned.intersection(target).cloned().collect();
    let revoke: Parts = current.assigned.difference(target).cloned().collect();
    if !revoke.is_empty() && still_owns(&revoke) {
        return MemberView {
            epoch: current.epoch,
            assigned: keep,
            revoking: revoke,
        };
    }
    let mut assigned = keep;
    assigned.extend(target.iter().filter(|tp| !held_by_others.contains(*tp)).cloned());
    MemberView {
        epoch: target_epoch,
        assigned,
        revoking: Parts::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::TopicName;

    fn parts(ps: &[i32]) -> Parts {
        ps.iter()
            .map(|p| TopicPartition {
                topic: TopicName::new("t").expect("valid"),
                partition: *p,
            })
            .collect()
    }

    fn view(epoch: i32, assigned: &[i32], revoking: &[i32]) -> MemberView {
        MemberView {
            epoch,
            assigned: parts(assigned),
            revoking: parts(revoking),
        }
    }

    #[test]
    fn a_new_member_gets_its_free_target_at_the_new_epoch() {
        let next = reconcile(&view(0, &[], &[]), 3, &parts(&[0, 1]), &parts(&[1]), None);
        assert_eq!(next, view(3, &[0], &[]));
        assert_eq!(next.phase(3, &parts(&[0, 1])), Phase::Unreleased);
        let later = reconcile(&next, 3, &parts(&[0, 1]), &Parts::new(), Some(&parts(&[0])));
        assert_eq!(later, view(3, &[0, 1], &[]));
        assert_eq!(later.phase(3, &parts(&[0, 1])), Phase::Stable);
    }

    #[test]
    fn revokes_before_it_assigns_and_keeps_its_epoch_meanwhile() {
        let current = view(2, &[0, 1, 2], &[]);
        let target = parts(&[0, 3]);
        let next = reconcile(&current, 3, &target, &Parts::new(), None);
        assert_eq!(next, view(2, &[0], &[1, 2]));
        // Still reporting one of them: nothing moves.
        assert_eq!(reconcile(&next, 3, &target, &Parts::new(), Some(&parts(&[0, 2]))), next);
        assert_eq!(reconcile(&next, 3, &target, &Parts::new(), None), next);
        // Released: the new epoch with the new partition.
        let done = reconcile(&next, 3, &target, &Parts::new(), Some(&parts(&[0])));
        assert_eq!(done, view(3, &[0, 3], &[]));
    }

    #[test]
    fn a_member_that_already_dropped_what_it_loses_skips_revocation() {
        let current = view(2, &[0, 1], &[]);
        let next = reconcile(&current, 3, &parts(&[0]), &Parts::new(), Some(&parts(&[0])));
        assert_eq!(next, view(3, &[0], &[]));
    }
}
