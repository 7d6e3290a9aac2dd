"""The sensor-coverage part of ``make demo``: a node that stopped reporting becomes a finding.

Called by handlers/demo.py inside its emulated AWS (moto), after the alert findings are in:

1. creates the cluster's heartbeat table and four running EC2 instances tagged as a managed node
   group of the cluster (``eks:cluster-name``);
2. feeds Falco metrics snapshots through the ingest path (Fluent Bit record -> alerts.parse ->
   heartbeat.from_record -> the table) for three nodes; the fourth sent its last one 50 minutes
   before the check, more than two 15-minute heartbeat intervals;
3. runs the real coverage check (clock: two hours after the nodes launched) and prints the
   region's active findings, the coverage finding next to the alert findings;
4. runs it again (nothing new, no duplicates), lets the node report again, and shows the
   finding archived.

Not shipped in any Lambda (moto is a development dependency).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from handlers import alerts, coverage, heartbeat, securityhub
from handlers.names import heartbeat_table_name

ACCOUNT_ID = "123456789012"
NODE_GROUP = "workers"
INTERVAL = timedelta(minutes=15)


def _snapshot_record(cluster: str, node: str, at: datetime) -> str:
    """A Fluent Bit record carrying Falco's metrics snapshot, as the ingest Lambda receives it."""
    snapshot = {
        "hostname": node,
        "output": "Falco metrics snapshot",
        "output_fields": {
            "evt.source": "syscall",
            "falco.version": "0.44.1",
            "falco.num_evts": 1_234_567,
            "scap.n_drops_perc": 0.0,
        },
        "priority": "Informational",
        "rule": "Falco internal: metrics snapshot",
        "source": "internal",
        "time": at.strftime("%Y-%m-%dT%H:%M:%S.%f000Z"),
    }
    return json.dumps({"log": json.dumps(snapshot), "cluster_name": cluster})


def _ingest(dynamodb: Any, cluster: str, node: str, at: datetime) -> None:
    event = alerts.LogEvent("demo", int(at.timestamp() * 1000), _snapshot_record(cluster, node, at))
    parsed = alerts.parse_log_event(event)
    assert isinstance(parsed, alerts.AlertRecord)
    beat = heartbeat.from_record(parsed, cluster)
    assert beat is not None
    heartbeat.record_heartbeats(dynamodb, heartbeat_table_name(cluster), [beat], cluster=cluster)


def _create_table(dynamodb: Any, cluster: str) -> None:
    dynamodb.create_table(
        TableName=heartbeat_table_name(cluster),
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[
            {"AttributeName": heartbeat.CLUSTER, "KeyType": "HASH"},
            {"AttributeName": heartbeat.NODE, "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": heartbeat.CLUSTER, "AttributeType": "S"},
            {"AttributeName": heartbeat.NODE, "AttributeType": "S"},
        ],
    )


def _active(region: str) -> list[dict[str, Any]]:
    import boto3

    client = boto3.client("securityhub", region_name=region)
    found = [
        f for page in client.get_paginator("get_findings").paginate() for f in page["Findings"]
    ]
    return [f for f in found if f.get("RecordState", "ACTIVE") == "ACTIVE"]


_ORDER = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "INFORMATIONAL")


def _print_active(region: str, out: TextIO) -> None:
    found = sorted(_active(region), key=lambda f: _ORDER.index(f["Severity"]["Label"]))
    out.write(f"\nActive findings in {region} ({len(found)}), coverage next to alerts:\n")
    for finding in found:
        kind = "coverage" if finding["Id"].startswith("falco/coverage/") else "alert"
        out.write(f"  {finding['Severity']['Label']:<13} {kind:<8} {finding['Title'][:140]}\n")


def run(region: str, cluster: str, out: TextIO) -> int:
    """The coverage demo inside an active moto; 0 when everything behaved as documented."""
    import boto3

    ec2 = boto3.client("ec2", region_name=region)
    dynamodb = boto3.client("dynamodb", region_name=region)
    clients = coverage.Clients(ec2, dynamodb, securityhub.new_client(region))
    _create_table(dynamodb, cluster)
    tags = [
        {"Key": "eks:cluster-name", "Value": cluster},
        {"Key": "eks:nodegroup-name", "Value": NODE_GROUP},
    ]
    instances = ec2.run_instances(
        ImageId="ami-12c6146b",
        MinCount=4,
        MaxCount=4,
        InstanceType="m6i.large",
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )["Instances"]
    launched = max(i["LaunchTime"] for i in instances).astimezone(UTC)
    now = launched + timedelta(hours=2)
    nodes = [i["PrivateDnsName"] for i in instances]
    silent = nodes[-1]
    for node in nodes[:-1]:
        _ingest(dynamodb, cluster, node, now - timedelta(minutes=4))
    _ingest(dynamodb, cluster, silent, now - timedelta(minutes=50))

    ctx = coverage.Context(ACCOUNT_ID, region, "aws")
    policy = coverage.Policy(cluster, INTERVAL, timedelta(minutes=30), 1.0)
    out.write(
        f"\nSensor coverage of {cluster}: 4 EC2 nodes (managed node group {NODE_GROUP}); Falco "
        f"heartbeats every 15 minutes; {silent} sent its last one 50 minutes before the check\n"
    )
    first = coverage.check(clients, ctx, policy, now)
    cov = first.coverage
    out.write(
        f"  check: {len(cov.reporting)}/{cov.expected} nodes reporting ({cov.percent:.0f}%), "
        f"opened {len(first.opened)} finding(s)\n"
    )
    _print_active(region, out)

    again = coverage.check(clients, ctx, policy, now + timedelta(minutes=5))
    count = len([f for f in _active(region) if f["Id"].startswith("falco/coverage/")])
    out.write(
        f"\n  check again 5 minutes later: opened {len(again.opened)}, active coverage findings "
        f"{count} (no duplicate coverage findings)\n"
    )
    _ingest(dynamodb, cluster, silent, now + timedelta(minutes=7))
    back = coverage.check(clients, ctx, policy, now + timedelta(minutes=10))
    out.write(
        f"  {silent} reports again: archived {len(back.closed)} finding(s), coverage "
        f"{back.coverage.percent:.0f}%\n"
    )
    ok = (
        len(first.opened) == 1
        and not again.opened
        and count == 1
        and back.closed == first.opened
        and not (first.failed or again.failed or back.failed)
    )
    if not ok:
        out.write("  UNEXPECTED: the coverage check did not behave as documented\n")
    return 0 if ok else 1
