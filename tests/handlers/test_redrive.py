"""``python -m handlers redrive``: Lambda's on-failure records (moto SQS) back through the
handler into Security Hub (moto). Asserts the exact findings stored and what stays queued."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from aws_fakes import (
    ACCOUNT_ID,
    FUNCTION_NAME,
    REGION,
    HttpFaults,
    falco_alert,
    fast_botocore_retries,
    fluent_bit_log_record,
    http_faults,
    reset_security_hub,
    stored_findings,
    subscription_event,
)

from handlers import alerts, ingest
from handlers.__main__ import main

FUNCTION_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{FUNCTION_NAME}"


pytestmark = pytest.mark.usefixtures("ingest_environment")


@pytest.fixture
def queue(moto: None) -> Iterator[str]:
    reset_security_hub(REGION)
    with fast_botocore_retries():
        yield boto3.client("sqs", region_name=REGION).create_queue(QueueName="falco-failed")[
            "QueueUrl"
        ]
    ingest.securityhub_client.cache_clear()


def on_failure_record(event: dict[str, Any], request_id: str = "req-1") -> str:
    """What Lambda sends to an SQS on-failure destination (asynchronous invocation)."""
    return json.dumps(
        {
            "version": "1.0",
            "timestamp": "2026-11-29T17:00:00.000Z",
            "requestContext": {
                "requestId": request_id,
                "functionArn": f"{FUNCTION_ARN}:$LATEST",
                "condition": "RetriesExhausted",
                "approximateInvokeCount": 3,
            },
            "requestPayload": event,
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST"},
            "responsePayload": {"errorMessage": "2 of 50 findings failed", "errorType": "Error"},
        }
    )


def events(count: int, per_event: int) -> list[dict[str, Any]]:
    return [
        subscription_event(
            [fluent_bit_log_record(falco_alert(n)) for n in range(i * 1000, i * 1000 + per_event)]
        )
        for i in range(count)
    ]


def send(queue_url: str, bodies: list[str]) -> None:
    sqs = boto3.client("sqs", region_name=REGION)
    for body in bodies:
        sqs.send_message(QueueUrl=queue_url, MessageBody=body)


def queued(queue_url: str) -> list[str]:
    """The bodies still in the queue (received, then made visible again)."""
    sqs = boto3.client("sqs", region_name=REGION)
    bodies: list[str] = []
    handles: list[str] = []
    while True:
        got = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=30
        ).get("Messages", [])
        if not got:
            break
        bodies += [m["Body"] for m in got]
        handles += [m["ReceiptHandle"] for m in got]
    for handle in handles:
        sqs.change_message_visibility(QueueUrl=queue_url, ReceiptHandle=handle, VisibilityTimeout=0)
    return bodies


def redrive(queue_url: str, *extra: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        status = main(["redrive", "--queue-url", queue_url, "--region", REGION, *extra])
    finally:
        sys.stdout, sys.stderr = saved
    return status, out.getvalue()


def test_redrive_imports_every_event_deletes_it_and_leaves_what_cannot_be_read(
    queue: str,
) -> None:
    good = [on_failure_record(e, f"req-{i}") for i, e in enumerate(events(3, 50))]
    garbage = "this is not an on-failure record"
    broken = on_failure_record({"awslogs": {"data": "H4sI-not-gzip"}})
    send(queue, [*good, garbage, broken])

    status, out = redrive(queue)

    assert status == 1
    assert len(stored_findings(REGION)) == 150
    assert sorted(queued(queue)) == sorted([garbage, broken])
    assert out.splitlines()[-1] == (
        "redrive: 5 messages, 3 redriven and deleted, 150 of 150 findings imported, "
        "2 still failing (left in the queue)"
    )
    assert "not a Lambda on-failure record" in out
    assert "InvalidEvent: awslogs.data is not base64" in out or "not gzip" in out

    # Twice is harmless: nothing duplicated, the unreadable ones stay.
    status, out = redrive(queue)
    assert status == 1
    assert len(stored_findings(REGION)) == 150
    assert len(queued(queue)) == 2
    assert "0 redriven and deleted" in out.splitlines()[-1]


def test_a_message_stays_until_all_its_findings_are_in(queue: str) -> None:
    first, second = events(2, 40)
    send(queue, [on_failure_record(first, "a"), on_failure_record(second, "b")])
    refused = alerts.decode_subscription_event(second).events[3].id
    client = ingest.securityhub_client(REGION)
    with http_faults(client) as wire:
        wire.reject(
            lambda finding_id: _log_event_of(wire, finding_id) == refused,
            "InvalidInput",
        )
        status, out = redrive(queue)
    assert status == 1
    assert "ImportFailed: 1 of 40 findings failed" in out
    assert len(stored_findings(REGION)) == 79
    assert queued(queue) == [on_failure_record(second, "b")]

    status, out = redrive(queue)  # Security Hub takes it now
    assert status == 0
    assert len(stored_findings(REGION)) == 80
    assert queued(queue) == []
    assert out.splitlines()[-1] == (
        "redrive: 1 messages, 1 redriven and deleted, 40 of 40 findings imported, "
        "0 still failing (left in the queue)"
    )


def _log_event_of(wire: HttpFaults, finding_id: str) -> str | None:
    body = json.loads(wire.bodies[-1])
    for finding in body["Findings"]:
        if finding["Id"] == finding_id:
            return str(finding["ProductFields"].get("falco/log_event_id"))
    return None


def test_dry_run_imports_and_deletes_nothing(queue: str) -> None:
    send(queue, [on_failure_record(e) for e in events(2, 10)])
    status, out = redrive(queue, "--dry-run")
    assert status == 0
    assert stored_findings(REGION) == []
    assert len(queued(queue)) == 2
    assert out.splitlines()[-1] == (
        "dry run: 2 messages, 2 readable on-failure records (20 log events); "
        "nothing imported or deleted"
    )
