"""SQS authentication with boto3 against a running `pgbroker serve --sqs-listen`.

Usage: sqs_auth.py ENDPOINT KEY_ID SECRET OTHER_KEY_ID OTHER_SECRET

KEY_ID belongs to a user with every right on queues prefixed "auth-";
OTHER_KEY_ID to a user without rights. Checks that boto3's signed requests
are served as far as the ACLs allow, and that a wrong secret, an unknown
key and a stale signature get the error codes SQS returns. Exits 1 on the
first failed check.
"""

import datetime
import sys
from unittest import mock

import boto3
import botocore.auth
from botocore.config import Config
from botocore.exceptions import ClientError


def client(endpoint, key_id, secret):
    return boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}),
    )


def expect_error(code, call):
    try:
        call()
    except ClientError as e:
        got = e.response["Error"]["Code"]
        if got != code:
            sys.exit(f"expected {code}, got {got}: {e}")
        return e
    sys.exit(f"expected {code}, the call succeeded")


def main():
    endpoint, key_id, secret, other_id, other_secret = sys.argv[1:6]
    alice = client(endpoint, key_id, secret)
    url = alice.create_queue(QueueName="auth-jobs")["QueueUrl"]
    alice.send_message(QueueUrl=url, MessageBody="signed")

    bob = client(endpoint, other_id, other_secret)
    expect_error("AccessDenied", lambda: bob.send_message(QueueUrl=url, MessageBody="bob"))
    expect_error("AccessDenied", lambda: bob.receive_message(QueueUrl=url))
    if bob.list_queues().get("QueueUrls"):
        sys.exit("a user without rights sees queues")

    wrong = client(endpoint, key_id, secret[:-1] + ("x" if secret[-1] != "x" else "y"))
    expect_error("SignatureDoesNotMatch", lambda: wrong.send_message(QueueUrl=url, MessageBody="x"))
    unknown = client(endpoint, "PGBKNOSUCHKEY0000000", secret)
    expect_error("InvalidClientTokenId", lambda: unknown.send_message(QueueUrl=url, MessageBody="x"))
    stale = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - datetime.timedelta(minutes=20)
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=stale):
        e = expect_error("SignatureDoesNotMatch", lambda: alice.send_message(QueueUrl=url, MessageBody="x"))
    if "expired" not in str(e):
        sys.exit(f"a stale signature is not reported as expired: {e}")

    got = alice.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    if [m["Body"] for m in got] != ["signed"]:
        sys.exit(f"refused requests changed the queue: {got}")
    alice.delete_queue(QueueUrl=url)
    print("sqs auth: all checks passed")


if __name__ == "__main__":
    main()
