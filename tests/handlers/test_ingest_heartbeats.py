"""The ingest handler with the heartbeat hook: snapshots become heartbeats, never findings, and
alert findings name the node's EC2 instance.

The handler records each Falco metrics snapshot in the heartbeat table (docs/coverage.md) and
names alerts' EC2 instances from the checker's directory.
"""

from __future__ import annotations

import json
import time
from typing import Any

import boto3
import pytest
from aws_fakes import (
    REGION,
    FakeLambdaContext,
    falco_alert,
    moto_security_hub,
    stored_findings,
    subscription_event,
)

from handlers import heartbeat, ingest
from handlers.names import heartbeat_table_name

CLUSTER = "shop-prod-use1"
NODE = "ip-10-0-1-23.ec2.internal"
TABLE = heartbeat_table_name(CLUSTER)


def record(alert: dict[str, Any]) -> str:
    return json.dumps(
        {"log": json.dumps(alert), "cluster_name": CLUSTER, "kubernetes": {"host": NODE}}
    )


SNAPSHOT = {
    "hostname": NODE,
    "output": "Falco metrics snapshot",
    "priority": "Informational",
    "rule": "Falco internal: metrics snapshot",
    "source": "internal",
    "time": "2026-03-14T03:00:00.000000000Z",
    "output_fields": {"falco.version": "0.44.1", "scap.n_drops_perc": 0.5},
}


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("CLUSTER_NAME", CLUSTER)
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    with moto_security_hub(REGION):
        ingest.securityhub_client.cache_clear()
        heartbeat.dynamodb_client.cache_clear()
        heartbeat.directory_for.cache_clear()
        client = boto3.client("dynamodb", region_name=REGION)
        client.create_table(
            TableName=TABLE,
            BillingMode="PAY_PER_REQUEST",
            KeySchema=[
                {"AttributeName": "cluster", "KeyType": "HASH"},
                {"AttributeName": "node", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "cluster", "AttributeType": "S"},
                {"AttributeName": "node", "AttributeType": "S"},
            ],
        )
        yield client


def test_snapshot_is_recorded_and_alerts_name_the_instance(aws: Any) -> None:
    aws.put_item(
        TableName=TABLE,
        Item={"cluster": {"S": CLUSTER}, "node": {"S": NODE}, "instance_id": {"S": "i-0abc"}},
    )
    alert = falco_alert()
    alert["hostname"] = NODE
    event = subscription_event([record(SNAPSHOT), record(alert)])
    summary = ingest.handler(event, FakeLambdaContext())
    assert summary["skipped"] == {"internal_event": 1}
    item = aws.get_item(TableName=TABLE, Key={"cluster": {"S": CLUSTER}, "node": {"S": NODE}})
    assert item["Item"]["seen_at"]["S"] == "2026-03-14T03:00:00.000000Z"
    [finding] = stored_findings()
    types = {r["Type"]: r["Id"] for r in finding["Resources"]}
    assert types["AwsEc2Instance"].endswith("instance/i-0abc")


def test_a_heartbeat_that_cannot_be_written_fails_the_invocation(aws: Any) -> None:
    aws.delete_table(TableName=TABLE)
    with pytest.raises(heartbeat.HeartbeatsNotRecorded):
        ingest.handler(subscription_event([record(SNAPSHOT)]), FakeLambdaContext())
