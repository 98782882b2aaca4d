"""The checker must catch each anomaly in hand-made histories, and pass a
clean one. Run: python3 -m unittest faults/test_checker.py"""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from checker import check_queue, check_stream, queue_failures, stream_failures  # noqa: E402


def send(v, p, o, producer="w", seq=None):
    seq = int(v.rsplit("-", 1)[1]) if seq is None else seq
    return [
        {"op": "send", "value": v, "producer": producer, "seq": seq},
        {"op": "ack", "value": v, "ok": True, "partition": p, "offset": o},
    ]


def read(v, p, o, reader="g", session="s1"):
    return {"op": "read", "reader": reader, "session": session, "value": v, "partition": p, "offset": o}


def assign(partitions, reader="g", session="s1"):
    return {"op": "assign", "reader": reader, "session": session, "partitions": partitions}


def clean_stream():
    h = send("w-0", 0, 0) + send("w-1", 0, 1) + send("w-2", 1, 0)
    h += [assign([0, 1]), read("w-0", 0, 0), read("w-1", 0, 1), read("w-2", 1, 0)]
    return h


class StreamChecks(unittest.TestCase):
    def failures(self, h, readers=("g",)):
        report = check_stream(h)
        return report, stream_failures(report, readers)

    def test_clean_history_passes(self):
        report, failures = self.failures(clean_stream())
        self.assertEqual(failures, [])
        self.assertEqual(report["acknowledged"], 3)

    def test_order_of_files_does_not_matter(self):
        h = clean_stream()
        self.assertEqual(self.failures(h[6:] + h[:6])[1], [])

    def test_unacknowledged_send_may_be_missing(self):
        h = clean_stream() + [{"op": "send", "value": "w-3", "producer": "w", "seq": 3}]
        h.append({"op": "ack", "value": "w-3", "ok": False, "error": "timed out"})
        self.assertEqual(self.failures(h)[1], [])

    def test_lost(self):
        h = clean_stream() + send("w-3", 1, 1)
        report, failures = self.failures(h)
        self.assertEqual(report["lost"], {"g": 1})
        self.assertTrue(any("never read" in f for f in failures))

    def test_lost_per_reader(self):
        # The scan saw everything, the group did not.
        h = clean_stream() + send("w-3", 1, 1) + [read("w-3", 1, 1, reader="scan", session="x")]
        for v, p, o in (("w-0", 0, 0), ("w-1", 0, 1), ("w-2", 1, 0)):
            h.append(read(v, p, o, reader="scan", session="x"))
        report, _ = self.failures(h, ("g", "scan"))
        self.assertEqual(report["lost"], {"g": 1})

    def test_reader_that_read_nothing(self):
        _, failures = self.failures(clean_stream(), ("g", "scan"))
        self.assertTrue(any("scan read nothing" in f for f in failures))

    def test_unexpected(self):
        h = clean_stream() + [read("ghost", 1, 1)]
        report, failures = self.failures(h)
        self.assertEqual(report["unexpected_count"], 1)
        self.assertTrue(failures)

    def test_duplicated_storage(self):
        # One send stored at two offsets (a producer retry that was not deduplicated).
        h = clean_stream() + [read("w-1", 0, 2)]
        report, failures = self.failures(h)
        self.assertEqual(report["duplicated_count"], 1)
        self.assertTrue(failures)

    def test_redelivery_after_new_session_is_explained(self):
        h = clean_stream() + [assign([0], session="s2"), read("w-1", 0, 1, session="s2")]
        report, failures = self.failures(h)
        self.assertEqual(report["redelivered"], 1)
        self.assertEqual(failures, [])

    def test_redelivery_after_reassignment_is_explained(self):
        h = clean_stream() + [assign([0]), read("w-1", 0, 1)]
        report, failures = self.failures(h)
        self.assertEqual(report["redelivered"], 1)
        self.assertEqual(failures, [])

    def test_redelivery_within_one_assignment_is_not_explained(self):
        h = clean_stream() + [read("w-1", 0, 1)]
        report, failures = self.failures(h)
        self.assertEqual(report["unexplained_redelivery_count"], 1)
        self.assertTrue(failures)

    def test_reordered_reads(self):
        h = send("w-0", 0, 0) + send("w-1", 0, 1)
        h += [assign([0]), read("w-1", 0, 1), read("w-0", 0, 0)]
        report, failures = self.failures(h)
        self.assertEqual(report["reordered_count"], 1)
        self.assertTrue(failures)

    def test_reordered_acks(self):
        # The producer's later send got the earlier offset.
        h = send("w-0", 0, 1) + send("w-1", 0, 0)
        h += [assign([0]), read("w-1", 0, 0), read("w-0", 0, 1)]
        report, failures = self.failures(h)
        self.assertEqual(report["reordered_count"], 1)
        self.assertTrue(failures)

    def test_offset_conflict_between_ack_and_read(self):
        # Acknowledged at 0:1, but a reader found another value there.
        h = send("w-0", 0, 0) + send("w-1", 0, 1)
        h += [{"op": "send", "value": "w-2", "producer": "w", "seq": 2}]
        h += [assign([0]), read("w-0", 0, 0), read("w-2", 0, 1), read("w-1", 0, 2)]
        report, failures = self.failures(h)
        self.assertGreaterEqual(report["offset_conflict_count"], 1)
        self.assertTrue(failures)

    def test_offset_conflict_between_two_acks(self):
        h = send("w-0", 0, 0) + send("v-0", 0, 0, producer="v")
        h += [assign([0]), read("w-0", 0, 0)]
        report, failures = self.failures(h)
        self.assertEqual(report["offset_conflict_count"], 1)
        self.assertTrue(failures)


GROUPS = ("g0", "g1", "g2")


def multi_group_stream(skip=None):
    """Three groups of two sessions and a final scan read four records;
    `skip` = (group, value) leaves one read out."""
    records = [("w-0", 0, 0), ("w-1", 0, 1), ("w-2", 1, 0), ("w-3", 2, 0)]
    h = [e for v, p, o in records for e in send(v, p, o)]
    for g in GROUPS:
        h += [assign([0], reader=g, session=f"{g}-a"), assign([1, 2], reader=g, session=f"{g}-b")]
        h += [read(v, p, o, reader=g, session=f"{g}-a" if p == 0 else f"{g}-b")
              for v, p, o in records if (g, v) != skip]
    h += [assign([0, 1, 2], reader="scan", session="scan")]
    h += [read(v, p, o, reader="scan", session="scan") for v, p, o in records]
    return h


class MultiGroupChecks(unittest.TestCase):
    def failures(self, h):
        report = check_stream(h, final="scan")
        return report, stream_failures(report, GROUPS + ("scan",))

    def test_clean_history_passes(self):
        report, failures = self.failures(multi_group_stream())
        self.assertEqual(failures, [])
        self.assertEqual(report["readers"], {"g0": 4, "g1": 4, "g2": 4, "scan": 4})
        # Each group reading a record once is no redelivery.
        self.assertEqual(report["redelivered"], 0)
        self.assertEqual(report["unscanned_count"], 0)

    def test_one_group_missing_a_record_fails(self):
        report, failures = self.failures(multi_group_stream(skip=("g1", "w-2")))
        self.assertEqual(report["lost"], {"g1": 1})
        self.assertEqual(report["lost_examples"], {"g1": ["w-2"]})
        self.assertTrue(any("never read by g1" in f for f in failures))

    def test_one_group_that_read_nothing_fails(self):
        h = [e for e in multi_group_stream() if e.get("reader") != "g2"]
        report, failures = self.failures(h)
        self.assertTrue(any("g2 read nothing" in f for f in failures))

    def test_one_group_reading_a_record_not_in_the_final_scan_fails(self):
        # w-4 was sent but never acknowledged, and the topic does not hold
        # it: as if a standby had shown a record the primary never committed.
        h = multi_group_stream() + [{"op": "send", "value": "w-4", "producer": "w", "seq": 4}]
        h.append(read("w-4", 1, 1, reader="g2", session="g2-b"))
        report, failures = self.failures(h)
        self.assertEqual(report["unscanned_count"], 1)
        self.assertEqual(report["unscanned"], [{"reader": "g2", "partition": 1, "offset": 1, "value": "w-4"}])
        self.assertTrue(any("unscanned" in f for f in failures))
        # Without the final scan to compare with, nothing else catches it.
        self.assertEqual(stream_failures(check_stream(h), GROUPS), [])

    def test_one_group_reading_another_value_at_a_scanned_offset_fails(self):
        h = multi_group_stream() + [{"op": "send", "value": "w-4", "producer": "w", "seq": 4}]
        h.append(read("w-4", 2, 0, reader="g0", session="g0-b"))
        report, failures = self.failures(h)
        self.assertEqual(report["unscanned"][0]["reader"], "g0")
        self.assertGreaterEqual(report["offset_conflict_count"], 1)
        self.assertTrue(failures)

    def test_offsets_going_backwards_in_one_group_fail(self):
        h = multi_group_stream() + [read("w-0", 0, 0, reader="g1", session="g1-a")]
        report, failures = self.failures(h)
        self.assertEqual(report["reordered_count"], 1)
        self.assertEqual(report["reordered"][0]["reader"], "g1")
        self.assertTrue(failures)

    def test_offsets_read_again_after_a_rebalance_in_one_group_pass(self):
        h = multi_group_stream() + [assign([0], reader="g1", session="g1-b"),
                                    read("w-0", 0, 0, reader="g1", session="g1-b")]
        report, failures = self.failures(h)
        self.assertEqual(failures, [])
        self.assertEqual(report["redelivered"], 1)


VT = 1000


def qconfig():
    return {"op": "qconfig", "visibility_ms": VT, "max_attempts": 3}


def qsend(v, i):
    return {"op": "qsend", "value": v, "ok": True, "id": i}


def qrecv(v, i, attempt, lease_expires, worker="a", t=None, receipt=None):
    e = {
        "op": "qrecv",
        "worker": worker,
        "value": v,
        "id": i,
        "receipt": receipt or f"{i}:{attempt}",
        "attempt": attempt,
        "lease_expires": lease_expires,
    }
    if t is not None:
        e["t"] = t
    return e


def qack(receipts, ok=True, worker="a", t=None):
    e = {"op": "qack", "worker": worker, "receipts": receipts, "ok": ok}
    if t is not None:
        e["t"] = t
    return e


def crash(at, ready):
    return {"op": "pg_crash", "at": at, "ready": ready}


def archived(v, i, attempts=1):
    return {"op": "qarchived", "value": v, "id": i, "attempts": attempts}


def clean_queue():
    return [
        qconfig(),
        qsend("m1", 1),
        qsend("m2", 2),
        qrecv("m1", 1, 1, 10_000),
        qrecv("m2", 2, 1, 10_000),
        qack(["1:1", "2:1"]),
        archived("m1", 1),
        archived("m2", 2),
    ]


class QueueChecks(unittest.TestCase):
    def failures(self, h):
        report = check_queue(h)
        return report, queue_failures(report)

    def test_clean_history_passes(self):
        report, failures = self.failures(clean_queue())
        self.assertEqual(failures, [])
        self.assertEqual(report["archived"], 2)

    def test_lease_expiry_explains_redelivery(self):
        # Worker a died holding m3; b got it after the lease ran out.
        h = clean_queue() + [
            qsend("m3", 3),
            qrecv("m3", 3, 1, 20_000),
            qrecv("m3", 3, 2, 20_000 + VT, worker="b"),
            qack(["3:2"], worker="b"),
            archived("m3", 3, attempts=2),
        ]
        report, failures = self.failures(h)
        self.assertEqual(failures, [])
        self.assertEqual(report["redelivered"], 1)

    def test_lost(self):
        h = clean_queue() + [qsend("m3", 3)]
        report, failures = self.failures(h)
        self.assertEqual(report["lost"], 1)
        self.assertTrue(failures)

    def test_message_left_in_queue_is_not_lost(self):
        h = clean_queue() + [qsend("m3", 3), {"op": "qleft", "value": "m3", "id": 3}]
        self.assertEqual(self.failures(h)[1], [])

    def test_unexpected(self):
        h = clean_queue() + [qrecv("ghost", 9, 1, 30_000)]
        report, failures = self.failures(h)
        self.assertEqual(report["unexpected_count"], 1)
        self.assertTrue(failures)

    def test_double_held(self):
        h = clean_queue() + [
            qsend("m3", 3),
            qrecv("m3", 3, 1, 20_000),
            qrecv("m3", 3, 2, 20_500, worker="b"),  # leased from 19_500, before 20_000
            qack(["3:2"], worker="b"),
            archived("m3", 3, attempts=2),
        ]
        report, failures = self.failures(h)
        self.assertEqual(report["double_held_count"], 1)
        self.assertTrue(failures)

    def test_nack_ends_a_lease_early(self):
        h = clean_queue() + [
            qsend("m3", 3),
            qrecv("m3", 3, 1, 20_000),
            {"op": "qnack", "worker": "a", "receipts": ["3:1"], "ok": True},
            qrecv("m3", 3, 2, 20_500, worker="b"),
            qack(["3:2"], worker="b"),
            archived("m3", 3, attempts=2),
        ]
        self.assertEqual(self.failures(h)[1], [])

    def test_failed_nack_does_not_end_a_lease(self):
        h = clean_queue() + [
            qsend("m3", 3),
            qrecv("m3", 3, 1, 20_000),
            {"op": "qnack", "worker": "a", "receipts": ["3:1"], "ok": False},
            qrecv("m3", 3, 2, 20_500, worker="b"),
            qack(["3:2"], worker="b"),
            archived("m3", 3, attempts=2),
        ]
        self.assertEqual(check_queue(h)["double_held_count"], 1)

    def test_nack_of_unknown_outcome_may_end_a_lease(self):
        # The worker was killed while its nack ran: it may have been applied.
        h = clean_queue() + [
            qsend("m3", 3),
            qrecv("m3", 3, 1, 20_000),
            {"op": "qnack_start", "worker": "a", "receipts": ["3:1"]},
            qrecv("m3", 3, 2, 20_500, worker="b"),
            qack(["3:2"], worker="b"),
            archived("m3", 3, attempts=2),
        ]
        self.assertEqual(self.failures(h)[1], [])

    def test_begun_then_failed_nack_does_not_end_a_lease(self):
        h = clean_queue() + [
            qsend("m3", 3),
            qrecv("m3", 3, 1, 20_000),
            {"op": "qnack_start", "worker": "a", "receipts": ["3:1"]},
            {"op": "qnack", "worker": "a", "receipts": ["3:1"], "ok": False},
            qrecv("m3", 3, 2, 20_500, worker="b"),
            qack(["3:2"], worker="b"),
            archived("m3", 3, attempts=2),
        ]
        self.assertEqual(check_queue(h)["double_held_count"], 1)

    def test_redelivery_after_ack(self):
        h = clean_queue() + [qrecv("m1", 1, 2, 10_000 + VT, worker="b")]
        report, failures = self.failures(h)
        self.assertEqual(report["unexplained_duplicate_count"], 2)  # after an ack; more receipts than the archive's attempts
        self.assertTrue(failures)

    def test_duplicate_send(self):
        h = clean_queue() + [qsend("m1", 7), archived("m1", 7)]
        report, failures = self.failures(h)
        self.assertEqual(report["unexplained_duplicate_count"], 1)
        self.assertTrue(failures)

    def test_ack_not_applied(self):
        h = clean_queue()[:-1]  # m2's ack succeeded, but it is not archived
        h.append({"op": "qleft", "value": "m2", "id": 2})
        report, failures = self.failures(h)
        self.assertEqual(report["ack_not_applied_count"], 1)
        self.assertTrue(failures)

    def test_dead_letter_matching_attempts(self):
        h = clean_queue() + [qsend("p", 3)]
        h += [qrecv("p", 3, n, 20_000 + n * VT) for n in (1, 2, 3)]
        h.append({"op": "qdead", "value": "p", "id": 3, "attempts": 3})
        self.assertEqual(self.failures(h)[1], [])

    def test_dead_letter_too_early(self):
        h = clean_queue() + [qsend("p", 3), qrecv("p", 3, 1, 20_000)]
        h.append({"op": "qdead", "value": "p", "id": 3, "attempts": 1})
        report, failures = self.failures(h)
        self.assertEqual(report["bad_dead_letter_count"], 1)
        self.assertTrue(failures)

    def test_dead_letter_with_more_deliveries_than_attempts(self):
        h = clean_queue() + [qsend("p", 3)]
        h += [qrecv("p", 3, n, 20_000 + n * VT) for n in (1, 2, 3, 4)]
        h.append({"op": "qdead", "value": "p", "id": 3, "attempts": 3})
        report, failures = self.failures(h)
        self.assertEqual(report["bad_dead_letter_count"], 1)
        self.assertTrue(failures)

    def test_acknowledged_and_dead_lettered(self):
        h = clean_queue() + [{"op": "qdead", "value": "m1", "id": 1, "attempts": 3}]
        report, failures = self.failures(h)
        self.assertGreaterEqual(report["bad_dead_letter_count"], 1)
        self.assertTrue(failures)


    # Postgres crashes. Times: seconds; lease ends: ms (the database clock,
    # here the same one), so a lease taken at t ends at t * 1000 + VT.

    def test_ack_undone_by_crash_explains_redelivery(self):
        # m3's ack was reported 0.3 s before the crash and lost with it; the
        # message came back when its lease ran out.
        h = clean_queue() + [
            qsend("m3", 3),
            qrecv("m3", 3, 1, 97_000 + VT, t=97.0),  # a claim flushed long before the crash
            qack(["3:1"], t=100.1),
            crash(100.4, 102.0),
            qrecv("m3", 3, 2, 102_500 + VT, worker="b", t=102.5),
            qack(["3:2"], worker="b", t=102.6),
            archived("m3", 3, attempts=2),
        ]
        report, failures = self.failures(h)
        self.assertEqual(failures, [])
        self.assertEqual(report["redelivered"], 1)
        self.assertEqual(report["redelivered_after_crash"], 1)

    def test_claim_undone_by_crash_explains_early_redelivery_with_the_same_attempt(self):
        # The claim was lost: the message came back before that lease would
        # have ended, with the same attempt number, and the archive counts
        # one attempt for two deliveries.
        h = clean_queue() + [
            qsend("m3", 3),
            qrecv("m3", 3, 1, 100_000 + 30_000, t=100.0, receipt="3:lost"),
            crash(100.5, 101.5),
            qrecv("m3", 3, 1, 101_600 + VT, worker="b", t=101.6),
            qack(["3:1"], worker="b", t=101.7),
            archived("m3", 3, attempts=1),
        ]
        report, failures = self.failures(h)
        self.assertEqual(failures, [])
        self.assertEqual(report["redelivered_after_crash"], 1)

    def test_claim_undone_by_crash_before_dead_lettering(self):
        # Four deliveries of a poison message, one of them lost in a crash:
        # three attempts counted, dead-lettered at the third.
        h = clean_queue() + [qsend("p", 3)]
        h += [{"op": "pg_crash", "at": 50.2, "ready": 51.0}]
        h.append(qrecv("p", 3, 1, 50_000 + 30_000, t=50.0, receipt="3:lost"))
        h += [qrecv("p", 3, n, 60_000 + n * VT, t=60.0 + n) for n in (1, 2, 3)]
        h.append({"op": "qdead", "value": "p", "id": 3, "attempts": 3})
        report, failures = self.failures(h)
        self.assertEqual(failures, [])
        self.assertEqual(report["redelivered"], 3)
        self.assertEqual(report["redelivered_after_crash"], 1)

    def test_acknowledged_message_redelivered_without_a_crash_fails(self):
        # The same history as the undone ack, with the crash well before
        # the ack: the ack was durable, so the redelivery is a duplicate.
        h = clean_queue() + [
            qsend("m3", 3),
            crash(90.0, 92.0),
            qrecv("m3", 3, 1, 100_000 + VT, t=100.0),
            qack(["3:1"], t=100.1),
            qrecv("m3", 3, 2, 102_500 + VT, worker="b", t=102.5),
            qack(["3:2"], worker="b", t=102.6),
            archived("m3", 3, attempts=2),
        ]
        report, failures = self.failures(h)
        self.assertEqual(report["unexplained_duplicate_count"], 1)
        self.assertEqual(report["redelivered_after_crash"], 0)
        self.assertTrue(failures)

    def test_ack_long_before_a_crash_does_not_explain_redelivery(self):
        # The ack was reported 5 s before the crash: flushed long since.
        h = clean_queue() + [
            qsend("m3", 3),
            qrecv("m3", 3, 1, 100_000 + VT, t=100.0),
            qack(["3:1"], t=100.1),
            crash(105.0, 106.0),
            qrecv("m3", 3, 2, 106_500 + VT, worker="b", t=106.5),
            qack(["3:2"], worker="b", t=106.6),
            archived("m3", 3, attempts=2),
        ]
        report, failures = self.failures(h)
        self.assertEqual(report["unexplained_duplicate_count"], 1)
        self.assertTrue(failures)

    def test_redelivery_before_the_crash_is_not_explained_by_it(self):
        # Acked, delivered again, and only then a crash.
        h = clean_queue() + [
            qsend("m3", 3),
            qrecv("m3", 3, 1, 100_000 + VT, t=100.0),
            qack(["3:1"], t=100.1),
            qrecv("m3", 3, 2, 101_500 + VT, worker="b", t=101.5),
            crash(101.8, 103.0),
            archived("m3", 3, attempts=2),
        ]
        report, failures = self.failures(h)
        self.assertGreaterEqual(report["unexplained_duplicate_count"], 1)
        self.assertTrue(failures)

    def test_early_redelivery_with_a_durable_claim_is_double_held(self):
        # An undone ack does not end a lease early: the message must not
        # come back before the first lease ends (its claim was 5 s old).
        h = clean_queue() + [
            qsend("m3", 3),
            qrecv("m3", 3, 1, 95_000 + 30_000, t=95.0),
            qack(["3:1"], t=100.1),
            crash(100.4, 101.0),
            qrecv("m3", 3, 2, 101_500 + VT, worker="b", t=101.5),
            qack(["3:2"], worker="b", t=101.6),
            archived("m3", 3, attempts=2),
        ]
        report, failures = self.failures(h)
        self.assertEqual(report["double_held_count"], 1)
        self.assertTrue(failures)

    def test_same_attempt_twice_without_a_crash_fails(self):
        h = clean_queue() + [
            qsend("m3", 3),
            qrecv("m3", 3, 1, 100_000 + VT, t=100.0, receipt="3:x"),
            qrecv("m3", 3, 1, 101_500 + VT, worker="b", t=101.5),
            qack(["3:1"], worker="b", t=101.6),
            archived("m3", 3, attempts=1),
        ]
        report, failures = self.failures(h)
        self.assertGreaterEqual(report["unexplained_duplicate_count"], 1)
        self.assertTrue(failures)

    def test_undone_ack_is_not_counted_as_applied(self):
        # Acked just before a crash, then out of attempts after failed acks:
        # dead-lettered, which a durable ack would forbid.
        h = clean_queue() + [qsend("m3", 3)]
        h += [qrecv("m3", 3, 1, 97_000 + VT, t=97.0), qack(["3:1"], t=100.1), crash(100.3, 101.0)]
        h += [qrecv("m3", 3, n, 100_000 + n * 3 * VT, t=100.0 + n * 3) for n in (2, 3)]
        h.append({"op": "qdead", "value": "m3", "id": 3, "attempts": 3})
        report, failures = self.failures(h)
        self.assertEqual(failures, [])
        self.assertEqual(report["acked"], 2)

    def test_failed_nack_cut_short_by_a_crash_may_have_ended_the_lease(self):
        h = clean_queue() + [
            qsend("p", 3),
            qrecv("p", 3, 1, 95_000 + 30_000, t=95.0),  # a claim flushed long before the crash
            {"op": "qnack_start", "worker": "a", "receipts": ["3:1"], "t": 100.1},
            crash(100.2, 101.0),
            {"op": "qnack", "worker": "a", "receipts": ["3:1"], "ok": False, "t": 100.3},
            qrecv("p", 3, 2, 101_500 + VT, worker="b", t=101.5),
        ]
        h.append({"op": "qleft", "value": "p", "id": 3})
        self.assertEqual(self.failures(h)[1], [])

    def test_failed_nack_long_before_a_crash_does_not_end_the_lease(self):
        h = clean_queue() + [
            qsend("p", 3),
            qrecv("p", 3, 1, 95_000 + 30_000, t=95.0),
            {"op": "qnack_start", "worker": "a", "receipts": ["3:1"], "t": 95.1},
            {"op": "qnack", "worker": "a", "receipts": ["3:1"], "ok": False, "t": 95.2},
            crash(100.2, 101.0),
            qrecv("p", 3, 2, 101_500 + VT, worker="b", t=101.5),
        ]
        h.append({"op": "qleft", "value": "p", "id": 3})
        self.assertEqual(check_queue(h)["double_held_count"], 1)

    def test_failed_send_is_not_acknowledged(self):
        # Its outcome is unknown: it need not be anywhere, and if it was
        # stored after all, it is no stranger.
        h = clean_queue() + [
            {"op": "qsend", "value": "m3", "ok": False},
            {"op": "qsend", "value": "m4", "ok": False},
            qrecv("m4", 4, 1, 100_000 + VT),
            qack(["4:1"]),
            archived("m4", 4),
        ]
        report, failures = self.failures(h)
        self.assertEqual(failures, [])
        self.assertEqual(report["sent"], 2)
        self.assertEqual(report["send_failed"], 2)

    def test_acknowledged_send_lost_in_a_crash_fails(self):
        h = clean_queue() + [{"op": "qsend", "value": "m3", "ok": True, "id": 3, "t": 100.0}, crash(100.1, 101.0)]
        report, failures = self.failures(h)
        self.assertEqual(report["lost"], 1)
        self.assertTrue(failures)

if __name__ == "__main__":
    unittest.main()
