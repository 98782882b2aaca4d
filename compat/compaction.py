#!/usr/bin/env python3
"""Compacted topics through real clients, against a live `pgbroker serve`.

    compaction.py BOOTSTRAP PREFIX --client confluent|kafka-python [--label L] [--debug]

Scenarios:
  connect-check  the admin client creates a compacted topic, and
                 DescribeConfigs reads `cleanup.policy` as Kafka Connect's
                 check wants it (split at commas, exactly {"compact"});
                 AlterConfigs / IncrementalAlterConfigs change it; bad values
                 are refused with INVALID_CONFIG and change nothing.
  compacted-read 50 keys written 20 times, 5 of them deleted; after
                 `pgbroker maintain --force-compaction` (twice, the tombstone
                 horizon being 0) a consumer from offset 0 reads exactly the
                 latest value of each live key, offsets ascending with holes;
                 a consumer placed in a removed range starts at the next
                 survivor; the consumer's position reaches the high watermark
                 across the removed tail; a record without a key is refused.

Needs PGBROKER_BIN, PGBROKER_DATABASE_URL and PGBROKER_SCHEMA (the CLI runs
the cleaner). Prints `PASS|FAIL <label> <scenario>` lines; exits 1 on failure.
"""

import argparse
import logging
import os
import sys
import time
import traceback
import warnings

# confluent-kafka 2 marks the legacy AlterConfigs deprecated; it is tested
# on purpose.
warnings.filterwarnings("ignore", category=DeprecationWarning)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from python_clients import check, pgbroker  # noqa: E402

KEYS = 50
ROUNDS = 20
DELETED = 5
SEGMENT = 100
HOUR_MS = 3_600_000
INVALID_CONFIG = 40
INVALID_RECORD = 87


def connect_policy(value):
    """Kafka Connect's reading of cleanup.policy: a set of trimmed,
    lower-cased items."""
    return {p.strip().lower() for p in value.split(",")}


def expected_state(prefix):
    """Writes the scenario's records with `produce(key, value)`; returns the
    latest value of each live key."""
    latest = {}
    batches = []
    for r in range(ROUNDS):
        for k in range(KEYS):
            key = f"k{k:02}".encode()
            if r == ROUNDS - 1 and k >= KEYS - DELETED:
                batches.append((key, None))
                latest.pop(key, None)
            else:
                value = f"{prefix}{k}@{r}".encode()
                batches.append((key, value))
                latest[key] = value
    return batches, latest


# ---------------------------------------------------------------------------
# confluent-kafka
# ---------------------------------------------------------------------------


class Confluent:
    def __init__(self, bootstrap, debug):
        import confluent_kafka
        self.ck = confluent_kafka
        self.conf = {"bootstrap.servers": bootstrap}
        if debug:
            self.conf["debug"] = "protocol,fetch"
        self.version = f"confluent-kafka {confluent_kafka.version()[0]} / librdkafka {confluent_kafka.libversion()[0]}"

    def admin(self):
        # Kept: a destroyed client fails its pending futures (_DESTROY).
        if not hasattr(self, "_admin"):
            from confluent_kafka.admin import AdminClient
            self._admin = AdminClient(self.conf)
        return self._admin

    def create(self, name, configs):
        from confluent_kafka.admin import NewTopic
        f = self.admin().create_topics([NewTopic(name, 1, 1, config=configs)], request_timeout=15)
        try:
            f[name].result(15)
            return 0
        except self.ck.KafkaException as e:
            return e.args[0].code()

    def policy(self, name):
        from confluent_kafka.admin import ConfigResource
        res = ConfigResource(ConfigResource.Type.TOPIC, name)
        configs = self.admin().describe_configs([res])[res].result(15)
        return {k: v.value for k, v in configs.items()}

    def alter(self, name, configs):
        """The legacy AlterConfigs: the whole set of the topic's configs."""
        from confluent_kafka.admin import ConfigResource
        res = ConfigResource(ConfigResource.Type.TOPIC, name, set_config=configs)
        try:
            list(self.admin().alter_configs([res]).values())[0].result(15)
            return 0
        except self.ck.KafkaException as e:
            return e.args[0].code()

    def has_incremental(self):
        import confluent_kafka.admin as admin
        return hasattr(admin, "AlterConfigOpType")

    def incremental(self, name, key, op, value):
        from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource
        ops = {"set": AlterConfigOpType.SET, "append": AlterConfigOpType.APPEND,
               "subtract": AlterConfigOpType.SUBTRACT, "delete": AlterConfigOpType.DELETE}
        res = ConfigResource(ConfigResource.Type.TOPIC, name,
                             incremental_configs=[ConfigEntry(key, value, incremental_operation=ops[op])])
        try:
            self.admin().incremental_alter_configs([res])[res].result(15)
            return 0
        except self.ck.KafkaException as e:
            return e.args[0].code()

    def produce(self, topic, records):
        errors = []
        p = self.ck.Producer({**self.conf, "linger.ms": 5, "enable.idempotence": False})

        def done(err, _msg):
            if err is not None:
                errors.append(err.code())

        for key, value in records:
            p.produce(topic, key=key, value=value, partition=0, on_delivery=done)
        p.flush(20)
        return errors

    def read(self, topic, offset, hw):
        """Records from `offset` until the consumer fetches at `hw`; returns
        them and the offset it last fetched at. librdkafka's position() is
        the last delivered record's offset + 1, so where the fetcher went
        past a removed tail is read from its fetch log lines."""
        fetched_at = [offset]
        marker = f"Fetch topic {topic} [0] at offset "

        class Log(logging.Handler):
            def emit(self, record):
                msg = record.getMessage()
                if marker in msg:
                    fetched_at.append(int(msg.split(marker, 1)[1].split()[0]))

        logger = logging.getLogger(f"rdkafka.{topic}.{offset}")
        logger.propagate = False
        logger.addHandler(Log())
        logger.setLevel(logging.DEBUG)
        c = self.ck.Consumer({**self.conf, "group.id": f"{topic}-reader-{offset}", "enable.auto.commit": False,
                              "debug": "fetch"}, logger=logger)
        c.assign([self.ck.TopicPartition(topic, 0, offset)])
        out = []
        deadline = time.monotonic() + 20
        try:
            while time.monotonic() < deadline:
                m = c.poll(0.2)
                if m is not None and m.error() is None:
                    out.append((m.offset(), m.key(), m.value()))
                elif m is None and max(fetched_at) >= hw:
                    break
        finally:
            c.close()
        return out, max(fetched_at)


# ---------------------------------------------------------------------------
# kafka-python
# ---------------------------------------------------------------------------


class KafkaPython:
    def __init__(self, bootstrap, debug):
        import kafka
        self.kafka = kafka
        self.bootstrap = bootstrap
        self.version = f"kafka-python {kafka.__version__}"

    def admin(self):
        return self.kafka.KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=15000)

    def create(self, name, configs):
        from kafka.admin import NewTopic
        from kafka.errors import KafkaError
        a = self.admin()
        try:
            resp = a.create_topics([NewTopic(name, 1, 1, topic_configs=configs)])
            codes = [t[1] for t in getattr(resp, "topic_errors", getattr(resp, "topics", []))]
            return codes[0] if codes else 0
        except KafkaError as e:
            return getattr(e, "errno", -1)
        finally:
            a.close()

    def policy(self, name):
        from kafka.admin import ConfigResource, ConfigResourceType
        a = self.admin()
        try:
            resp = a.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)], config_filter="all")
            entries = resp["topic"][name]
            return {k: (v["value"] if isinstance(v, dict) else v) for k, v in entries.items()}
        finally:
            a.close()

    def has_incremental(self):
        return True

    def _alter(self, name, configs, incremental):
        from kafka.admin import ConfigResource, ConfigResourceType
        a = self.admin()
        try:
            resp = a.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name, configs=configs)],
                                   incremental=incremental, raise_on_unknown=False)
            result = resp["topic"][name]
            if result == "OK":
                return 0
            return INVALID_CONFIG if "InvalidConfiguration" in str(result) else str(result)
        finally:
            a.close()

    def alter(self, name, configs):
        """The legacy AlterConfigs (kafka-python adds the topic's other
        modified configs, so that they are not reset)."""
        return self._alter(name, configs, False)

    def incremental(self, name, key, op, value):
        return self._alter(name, {key: (op.upper(), value)}, True)

    def produce(self, topic, records):
        p = self.kafka.KafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5, retries=0)
        errors = []
        futures = [p.send(topic, key=k, value=v, partition=0) for k, v in records]
        p.flush(20)
        for f in futures:
            try:
                f.get(20)
            except Exception as e:  # the refusal is what is checked
                errors.append(getattr(e, "errno", -1))
        p.close()
        return errors

    def read(self, topic, offset, hw):
        c = self.kafka.KafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                     consumer_timeout_ms=1000)
        tp = self.kafka.TopicPartition(topic, 0)
        c.assign([tp])
        c.seek(tp, offset)
        out = []
        deadline = time.monotonic() + 20
        position = offset
        try:
            while time.monotonic() < deadline:
                for recs in c.poll(timeout_ms=500).values():
                    out.extend((m.offset, m.key, m.value) for m in recs)
                position = c.position(tp)
                if position >= hw:
                    break
        finally:
            c.close()
        return out, position


# ---------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------


def scenario_connect_check(c, prefix):
    name = f"{prefix}connect_configs"
    code = c.create(name, {"cleanup.policy": "compact"})
    check(code == 0, f"creating a compacted topic failed with {code}")
    configs = c.policy(name)
    check(configs.get("cleanup.policy") == "compact", f"cleanup.policy reads {configs.get('cleanup.policy')!r}")
    check(connect_policy(configs["cleanup.policy"]) == {"compact"}, "Connect would refuse this topic")
    check(configs.get("delete.retention.ms") == "86400000", f"delete.retention.ms {configs.get('delete.retention.ms')}")
    check(configs.get("min.cleanable.dirty.ratio") == "0.5", f"ratio {configs.get('min.cleanable.dirty.ratio')}")
    bad = f"{prefix}bad_policy"
    code = c.create(bad, {"cleanup.policy": "compacted"})
    check(code == INVALID_CONFIG, f"a bad cleanup.policy got {code}, want INVALID_CONFIG")
    code = c.create(bad, {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "2"})
    check(code == INVALID_CONFIG, f"a ratio of 2 got {code}, want INVALID_CONFIG")
    check(bad not in pgbroker("topic", "list", "--format", "json"), "a refused topic was created")
    plain = f"{prefix}plain"
    check(c.create(plain, {}) == 0, "creating a plain topic failed")
    check(connect_policy(c.policy(plain)["cleanup.policy"]) == {"delete"}, "a plain topic is not delete")
    if c.has_incremental():
        check(c.incremental(name, "cleanup.policy", "append", "delete") == 0, "APPEND delete refused")
        check(c.policy(name)["cleanup.policy"] == "compact,delete", f"after APPEND: {c.policy(name)}")
        check(connect_policy(c.policy(name)["cleanup.policy"]) != {"compact"}, "Connect must now refuse it")
        check(c.incremental(name, "cleanup.policy", "subtract", "delete") == 0, "SUBTRACT delete refused")
        check(c.policy(name)["cleanup.policy"] == "compact", f"after SUBTRACT: {c.policy(name)}")
        code = c.incremental(name, "min.cleanable.dirty.ratio", "set", "1.5")
        check(code == INVALID_CONFIG, f"a ratio of 1.5 got {code}")
        check(c.policy(name)["min.cleanable.dirty.ratio"] == "0.5", "a refused change changed the ratio")
        code = c.incremental(name, "delete.retention.ms", "append", "5")
        check(code == INVALID_CONFIG, f"APPEND to a number got {code}")
        check(c.incremental(name, "delete.retention.ms", "set", "1000") == 0, "SET delete.retention.ms refused")
        check(c.policy(name)["delete.retention.ms"] == "1000", "delete.retention.ms not stored")
        check(c.incremental(name, "delete.retention.ms", "delete", None) == 0, "DELETE refused")
        check(c.policy(name)["delete.retention.ms"] == "86400000", "DELETE did not restore the default")
    code = c.alter(name, {"cleanup.policy": "compact,delete", "min.compaction.lag.ms": "60000"})
    check(code == 0, f"AlterConfigs refused: {code}")
    got = c.policy(name)
    check(got["cleanup.policy"] == "compact,delete" and got["min.compaction.lag.ms"] == "60000", f"{got}")
    code = c.alter(name, {"cleanup.policy": "compact", "max.compaction.lag.ms": "0"})
    check(code == INVALID_CONFIG, f"max.compaction.lag.ms 0 got {code}")
    got = c.policy(name)
    check(got["cleanup.policy"] == "compact,delete" and got["max.compaction.lag.ms"] == str(2**63 - 1),
          f"a refused AlterConfigs changed something: {got}")
    check(c.alter(name, {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}) == 0,
          "AlterConfigs back to compact refused")
    check(c.policy(name)["cleanup.policy"] == "compact", "AlterConfigs did not store compact")
    if isinstance(c, Confluent):
        check(c.alter(name, {"delete.retention.ms": "5"}) == 0, "AlterConfigs refused")
        check(c.policy(name)["cleanup.policy"] == "delete", "AlterConfigs replaces the whole set, as Kafka")


def scenario_compacted_read(c, prefix):
    topic = f"{prefix}state"
    # The server's own cleaner runs every few seconds: a compaction lag of an
    # hour keeps it off the topic until the full read before compaction is
    # done, and setting the lag to 0 then lets the forced passes run.
    pgbroker("topic", "create", topic, "--segment-records", str(SEGMENT), "--cleanup-policy", "compact",
             "--delete-retention-ms", "0", "--min-compaction-lag-ms", str(HOUR_MS))
    records, latest = expected_state(prefix)
    errors = c.produce(topic, records)
    check(not errors, f"produce errors {errors}")
    hw = len(records)
    check(hw % SEGMENT == 0, "the scenario closes every segment")
    refused = c.produce(topic, [(None, b"no key")])
    check(refused == [INVALID_RECORD], f"a record without a key got {refused}, want INVALID_RECORD")
    before, _ = c.read(topic, 0, hw)
    check(len(before) == hw, f"read {len(before)} of {hw} records before compaction")
    pgbroker("topic", "alter", topic, "--min-compaction-lag-ms", "0")
    # Two whole passes: the second is past the tombstones' horizon (0 ms). A
    # pass that met the server's cleaner on the partition skipped it (busy).
    whole = 0
    for _ in range(10):
        out = pgbroker("maintain", "--force-compaction")
        check("compaction:" in out, out)
        whole += "(0 busy)" in out
        if whole == 2:
            break
    check(whole == 2, f"the cleaner found the partition busy in 9 of 10 passes: {out}")
    after, position = c.read(topic, 0, hw)
    got = {k: v for _, k, v in after}
    check(got == latest, f"{len(got)} keys read, {len(latest)} expected; "
                         f"differing: {[k for k in latest if got.get(k) != latest[k]][:5]}")
    offsets = [o for o, _, _ in after]
    check(offsets == sorted(set(offsets)), "offsets not strictly ascending")
    check(len(offsets) == KEYS - DELETED, f"{len(offsets)} records survive, want {KEYS - DELETED}")
    check(offsets[-1] < hw - DELETED, f"the deleted keys' tombstones are gone: last offset {offsets[-1]}")
    check(position == hw, f"the position stopped at {position}, not the high watermark {hw} (removed tail)")
    # A consumer placed inside a removed range starts at the next survivor.
    inside = 3
    check(inside not in offsets, "offset 3 should be removed")
    later, _ = c.read(topic, inside, hw)
    check(later and later[0][0] == offsets[0], f"from offset {inside}: first {later[:1]}, want {offsets[0]}")


SCENARIOS = {"connect-check": scenario_connect_check, "compacted-read": scenario_compacted_read}
CLIENTS = {"confluent": Confluent, "kafka-python": KafkaPython}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bootstrap")
    ap.add_argument("prefix")
    ap.add_argument("--client", required=True, choices=sorted(CLIENTS))
    ap.add_argument("--label")
    ap.add_argument("--debug", action="store_true")
    args = ap.parse_args()
    client = CLIENTS[args.client](args.bootstrap, args.debug)
    label = args.label or args.client
    print(f"# {label} compaction: {client.version}", flush=True)
    failures = 0
    for name, fn in SCENARIOS.items():
        started = time.monotonic()
        try:
            fn(client, f"{args.prefix}{name.replace('-', '_')}_")
            print(f"PASS {label} compaction-{name} ({time.monotonic() - started:.1f}s)", flush=True)
        except Exception as e:
            failures += 1
            print(f"FAIL {label} compaction-{name}: {type(e).__name__}: {e}", flush=True)
            traceback.print_exc(file=sys.stderr)
    sys.stdout.flush()
    os._exit(1 if failures else 0)


if __name__ == "__main__":
    main()
