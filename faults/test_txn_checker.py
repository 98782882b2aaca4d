"""The transactional checker must catch each anomaly in a hand-made
history, and pass a clean one. Run: python3 -m unittest faults/test_txn_checker.py"""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from txn_checker import check_txn, txn_failures  # noqa: E402

READERS = ("rc", "ru", "final")


def txn(t, inputs, outcome="committed", deliberate=False):
    outs = [f"{t}:{i}:{j}" for i in inputs for j in (0, 1)]
    h = [{"op": "txn_begin", "worker": "w", "txn": t, "inputs": inputs, "outputs": outs}]
    if outcome is not None:
        h.append({"op": "txn_end", "txn": t, "outcome": outcome, "deliberate": deliberate})
    return h


def read(reader, v, p, o, iso=None, session=None):
    iso = iso or ("read_uncommitted" if reader == "ru" else "read_committed")
    return {"op": "read", "reader": reader, "session": session or reader, "isolation": iso, "value": v,
            "partition": p, "offset": o}


def assign(reader, session=None):
    iso = "read_uncommitted" if reader == "ru" else "read_committed"
    return {"op": "assign", "reader": reader, "session": session or reader, "isolation": iso, "partitions": [0, 1]}


def end(reader):
    iso = "read_uncommitted" if reader == "ru" else "read_committed"
    return {"op": "reader_end", "reader": reader, "isolation": iso, "ends": {}}


# The log of the output topic in the clean history: partition 0 and 1.
# A aborted on purpose (its records are in the log, filtered by read_committed),
# then B retried the same inputs and committed, C committed.
LOG = [
    ("A:i-0:0", 0, 0), ("A:i-0:1", 1, 0), ("A:i-1:0", 0, 1), ("A:i-1:1", 1, 1),
    ("B:i-0:0", 0, 3), ("B:i-0:1", 1, 3), ("B:i-1:0", 0, 4), ("B:i-1:1", 1, 4),
    ("C:i-2:0", 1, 6), ("C:i-2:1", 0, 6),
]


def clean():
    h = [{"op": "input", "value": f"i-{n}", "partition": 0, "offset": n} for n in range(3)]
    h += txn("A", ["i-0", "i-1"], "aborted", deliberate=True) + txn("B", ["i-0", "i-1"]) + txn("C", ["i-2"])
    for r in READERS:
        h.append(assign(r))
        for v, p, o in LOG:
            if r == "ru" or not v.startswith("A"):
                h.append(read(r, v, p, o))
        h.append(end(r))
    return h


class TxnChecks(unittest.TestCase):
    def check(self, h):
        report = check_txn(h)
        return report, txn_failures(report, READERS)

    def assertOnly(self, h, key, n=1):
        report, failures = self.check(h)
        self.assertEqual(report[f"{key}_count"], n, report)
        self.assertTrue(any(f.split(" ")[1] == key + ":" for f in failures), failures)
        return report

    def test_clean_history_passes(self):
        report, failures = self.check(clean())
        self.assertEqual(failures, [])
        self.assertEqual((report["committed"], report["aborted"], report["aborted_deliberately"]), (2, 1, 1))
        self.assertEqual(report["exactly_once"], report["inputs"])

    def test_aborted_read(self):
        h = clean()
        h += [assign("late"), read("late", "A:i-0:1", 1, 0)]
        report = self.assertOnly(h, "aborted_read")
        self.assertEqual(report["aborted_read"], ["A:i-0:1"])

    def test_aborted_read_is_no_anomaly_for_read_uncommitted(self):
        report, _ = self.check(clean())
        self.assertEqual(report["aborted_read_count"], 0)
        self.assertEqual(report["readers"]["ru"], len(LOG))

    def test_unexpected(self):
        h = clean() + [read("rc", "Z:i-9:0", 1, 9)]
        self.assertOnly(h, "unexpected")

    def test_lost_committed_write(self):
        h = [e for e in clean() if not (e.get("reader") == "final" and e.get("value") == "C:i-2:1")]
        report = self.assertOnly(h, "lost")
        self.assertEqual(report["lost"], {"final": ["C:i-2:1"]})
        self.assertEqual(report["torn_count"], 1)  # C is partly visible to a reader that read to the end

    def test_lost_applies_to_read_uncommitted(self):
        h = [e for e in clean() if not (e.get("reader") == "ru" and e.get("value") == "B:i-1:0")]
        report, _ = self.check(h)
        self.assertEqual(report["lost"], {"ru": ["B:i-1:0"]})

    def test_unknown_outcome_may_be_missing(self):
        h = clean() + txn("D", ["i-2"], outcome=None)
        report, failures = self.check(h)
        self.assertEqual(failures, [])
        self.assertEqual(report["unknown_outcome"], 1)

    def test_torn_transaction_of_unknown_outcome(self):
        # D's commit was never acknowledged, yet half of it is visible.
        h = clean() + txn("D", ["i-9"], outcome=None) + [read("rc", "D:i-9:0", 0, 8)]
        report = self.assertOnly(h, "torn")
        self.assertEqual(report["torn"][0]["txn"], "D")

    def test_torn_needs_the_reader_past_the_missing_record(self):
        # A reader that stopped early (no reader_end) saw half of C; the
        # other half is at an offset it never reached: not torn.
        h = clean() + [assign("early"), read("early", "C:i-2:0", 1, 6)]
        report, _ = self.check(h)
        self.assertEqual(report["torn_count"], 0)
        # Once it has read past the missing record's offset, it is.
        h += txn("G", ["i-8"], outcome=None) + [read("early", "G:i-8:0", 0, 7)]
        report, _ = self.check(h)
        self.assertEqual(report["torn_count"], 1)

    def test_duplicate_effect(self):
        # E wrote i-2's effect again and committed: the input was processed twice.
        h = clean() + txn("E", ["i-2"])
        for r in READERS:
            h += [read(r, "E:i-2:0", 0, 9), read(r, "E:i-2:1", 1, 9)]
        report = self.assertOnly(h, "duplicate", n=2)  # seen by both complete read_committed readers
        self.assertEqual({d["reader"] for d in report["duplicate"]}, {"rc", "final"})
        self.assertTrue(all(d["txns"] == ["C", "E"] for d in report["duplicate"]))
        self.assertEqual(report["exactly_once"], 2)

    def test_duplicate_storage(self):
        h = clean() + [read("final", "C:i-2:0", 1, 8, session="again"), assign("final", "again")]
        report = self.assertOnly(h, "duplicate")
        self.assertEqual(report["duplicate"][0], {"value": "C:i-2:0", "positions": [[1, 6], [1, 8]]})

    def test_inconsistent_offset(self):
        # The two readers disagree about what is at partition 0, offset 6.
        h = [e for e in clean() if not (e.get("reader") == "rc" and e.get("value") == "C:i-2:1")]
        h.append(read("rc", "C:i-2:1", 0, 4))
        report = self.assertOnly(h, "inconsistent_offset")
        self.assertEqual(report["inconsistent_offset"][0], {"partition": 0, "offset": 4,
                                                            "values": ["B:i-1:0", "C:i-2:1"]})

    def test_nonmonotonic(self):
        h = clean()
        i = max(k for k, e in enumerate(h) if e.get("reader") == "rc" and e["op"] == "read")
        h.insert(i + 1, read("rc", "B:i-0:0", 0, 3))
        report = self.assertOnly(h, "nonmonotonic")
        self.assertEqual(report["nonmonotonic"][0]["offset"], 3)

    def test_new_assignment_may_go_back(self):
        h = clean() + [assign("rc"), read("rc", "B:i-0:0", 0, 3)]
        report, failures = self.check(h)
        self.assertEqual(report["nonmonotonic_count"], 0)
        self.assertEqual(failures, [])

    def test_unprocessed_input(self):
        h = clean() + [{"op": "input", "value": "i-3", "partition": 0, "offset": 3}]
        report = self.assertOnly(h, "unprocessed", n=2)  # by both complete read_committed readers
        self.assertEqual(report["unprocessed"], {"final": ["i-3"], "rc": ["i-3"]})
        self.assertEqual((report["inputs"], report["exactly_once"]), (4, 3))

    def test_input_processed_only_by_aborted_transaction_is_unprocessed(self):
        h = clean() + [{"op": "input", "value": "i-5", "partition": 0, "offset": 5}] + txn("F", ["i-5"], "aborted")
        h += [read("ru", "F:i-5:0", 0, 10), read("ru", "F:i-5:1", 1, 10)]
        report, _ = self.check(h)
        self.assertEqual(report["unprocessed"]["final"], ["i-5"])
        self.assertEqual(report["aborted_read_count"], 0)

    def test_reader_that_did_not_finish(self):
        h = [e for e in clean() if not (e["op"] == "reader_end" and e["reader"] == "final")]
        _, failures = self.check(h)
        self.assertIn("reader final did not read to the end", failures)


if __name__ == "__main__":
    unittest.main()
