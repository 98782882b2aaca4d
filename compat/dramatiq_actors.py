"""The Dramatiq actors of the Dramatiq scenario (dramatiq_scenario.py),
on dramatiq-sqs's SQSBroker pointed at pgbroker. Every run of an actor
appends one line to an execution log, so that the scenario can count how
often each message ran.

Environment (set by dramatiq_scenario.py for itself and for its worker):
    DRAMATIQ_COMPAT_ENDPOINT   http://HOST:PORT of the SQS API
    DRAMATIQ_COMPAT_DIR        directory for the execution log
    SQS_ACCESS_KEY_ID, SQS_SECRET_ACCESS_KEY   the access key to sign with
"""

import os

import dramatiq
from dramatiq_sqs import SQSBroker

DIR = os.environ["DRAMATIQ_COMPAT_DIR"]
LOG = os.path.join(DIR, "executions.log")
NAMESPACE = "dramatiq-compat"

broker = SQSBroker(
    namespace=NAMESPACE,
    dead_letter=True,
    visibility_timeout=60,
    endpoint_url=os.environ["DRAMATIQ_COMPAT_ENDPOINT"],
    region_name="us-east-1",
    aws_access_key_id=os.environ["SQS_ACCESS_KEY_ID"],
    aws_secret_access_key=os.environ["SQS_SECRET_ACCESS_KEY"],
)
dramatiq.set_broker(broker)


def record(event, n):
    """One line per run; an O_APPEND write of a short line is atomic, so
    the worker's threads and processes never interleave their lines."""
    line = f"{event} {n} {os.getpid()}\n".encode()
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@dramatiq.actor(max_retries=0)
def square(n):
    record("square", n)


@dramatiq.actor(max_retries=0)
def greet(n):
    record("greet", n)


@dramatiq.actor(max_retries=3, min_backoff=100, max_backoff=500)
def flaky(n):
    """Fails on its first run, succeeds on the second."""
    first = not any(line.split()[:2] == ["flaky", str(n)] for line in _lines())
    record("flaky", n)
    if first:
        raise RuntimeError(f"flaky {n}: first run fails")


@dramatiq.actor(max_retries=2, min_backoff=100, max_backoff=500)
def poison(n):
    """Always fails: retried twice, then dead-lettered."""
    record("poison", n)
    raise RuntimeError(f"poison {n} always fails")


def _lines():
    try:
        with open(LOG) as f:
            return f.readlines()
    except FileNotFoundError:
        return []
