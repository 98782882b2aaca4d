#!/usr/bin/env python3
"""A consumer-protocol member (KIP-848, `group.protocol=consumer`) logged
in as a user held to its grants subscribes by regular expression: the
broker must assign it only topics the user may see.

    regex_acl.py BOOTSTRAP USER PASSWORD GROUP PATTERN SECONDS

Reads for SECONDS after its first record and prints one JSON line: the
topics of its final assignment and the topics of the records it read.
"""

import json
import sys
import time

import confluent_kafka as ck


def main():
    bootstrap, user, password, group, pattern, seconds = sys.argv[1:7]
    consumer = ck.Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "group.protocol": "consumer",
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "PLAIN",
        "sasl.username": user,
        "sasl.password": password,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([pattern])
    read = set()
    deadline = time.time() + 60
    first = None
    while time.time() < deadline:
        if first is not None and time.time() > first + float(seconds):
            break
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            print(json.dumps({"error": str(msg.error())}), file=sys.stderr)
            continue
        read.add(msg.topic())
        first = first or time.time()
    assigned = sorted({tp.topic for tp in consumer.assignment()})
    consumer.close()
    print(json.dumps({"assigned": assigned, "read": sorted(read)}))


if __name__ == "__main__":
    main()
