"""Prints SigV4-signed SQS requests made by botocore, as JSON test vectors.

The clock is fixed and the request is captured before it is sent, so the
output is the same on every run. The vectors are pasted into the unit
tests of crates/pgbroker-sqs/src/sigv4.rs; run this again after a botocore
upgrade to check that nothing changed:

    python3 compat/sigv4_vector.py
"""

import datetime
import json
from urllib.parse import urlsplit
from unittest import mock

import botocore.auth
import botocore.session
import botocore.credentials
from botocore.awsrequest import AWSRequest, AWSResponse

ACCESS_KEY = "PGBKEXAMPLE000000001"
SECRET_KEY = "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY00"
NOW = datetime.datetime(2024, 5, 17, 12, 34, 56)
ENDPOINT = "http://127.0.0.1:9324"


class _Captured(Exception):
    pass


def capture(call):
    """Runs `call` on a client and returns the request botocore signed."""
    session = botocore.session.get_session()
    client = session.create_client(
        "sqs",
        region_name="eu-west-1",
        endpoint_url=ENDPOINT,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )
    seen = {}

    def before_send(request, **_):
        seen["method"] = request.method
        seen["url"] = request.url
        headers = {k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
        # What urllib3 adds on the wire; botocore signs it from the URL.
        headers["Host"] = urlsplit(request.url).netloc
        # Unsigned and different on every run or machine.
        for name in ("User-Agent", "amz-sdk-invocation-id", "amz-sdk-request"):
            headers.pop(name, None)
        seen["headers"] = headers
        body = request.body or b""
        seen["body"] = body.decode() if isinstance(body, bytes) else body
        return AWSResponse(request.url, 200, {}, None)

    client.meta.events.register("before-send", before_send)
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=NOW):
        try:
            call(client)
        except Exception:  # the empty fake response does not parse; the request is what matters
            pass
    return seen


def sign_directly(method, url, body):
    """Signs a hand-made request with botocore's SigV4Auth: a path and a
    query string that need encoding, which the JSON protocol never sends."""
    request = AWSRequest(method=method, url=url, data=body, headers={"Content-Type": "text/plain"})
    credentials = botocore.credentials.Credentials(ACCESS_KEY, SECRET_KEY)
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=NOW):
        botocore.auth.SigV4Auth(credentials, "sqs", "us-east-1").add_auth(request)
    headers = dict(request.headers.items())
    headers["Host"] = urlsplit(url).netloc
    return {"method": method, "url": url, "headers": headers, "body": body}


def main():
    vectors = {
        "send_message": capture(
            lambda c: c.send_message(
                QueueUrl=ENDPOINT + "/000000000000/jobs",
                MessageBody="hello \u00e9 world",
                MessageAttributes={"k": {"DataType": "String", "StringValue": "v"}},
            )
        ),
        "list_queues": capture(lambda c: c.list_queues(QueueNamePrefix="jo")),
        "query_and_path": sign_directly(
            "GET", ENDPOINT + "/000000000000/my%20queue%2Fx?b=2&a=1&a=0&Action=Get%20Me&e=", ""
        ),
    }
    print(json.dumps({"access_key": ACCESS_KEY, "secret_key": SECRET_KEY, "vectors": vectors}, indent=2))


if __name__ == "__main__":
    main()
