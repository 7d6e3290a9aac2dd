"""Storm benchmark (issue 12, docs/storms.md): one alert repeated 10,000 times over an hour.

Run with ``make bench`` (after the handler benchmark) or ``.venv/bin/python bench/storm_bench.py``.
The storm: the same shell in the same Deployment pod, 10,000 alerts evenly spread over one hour
(03:00:00 to 03:59:59 UTC, one window), shipped in 600 CloudWatch Logs deliveries; then 10% of
the deliveries (60, picked at random, fixed seed) are delivered again, as Lambda retries and
redrives do. Everything runs through the real handler (``handlers.ingest.handler``) into
in-process moto Security Hub and DynamoDB, and is counted from the clients' own request events.

It prints, for three ways of importing the same deliveries:

1. this handler with the occurrence table (cross-invocation counting),
2. this handler without it (coalescing within one invocation only),
3. one finding per alert, as the AWS guidance's Lambda does (a fresh uuid1 Id per alert, one
   BatchImportFindings per delivery; its STS and EC2 calls, two per alert, are counted from its
   code, not run),

the findings created, the count on the finding, BatchImportFindings calls and DynamoDB calls; and
what DynamoDB's on-demand requests for (1) cost per million alerts (prices below, us-east-1).
Exits 1 when (1) does not give one finding per window carrying exactly 10,000.
"""

from __future__ import annotations

import io
import json
import os
import random
import sys
import time
import uuid
from collections import Counter
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "falco-securityhub")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "FalcoSecurityHub")

import aws_fakes  # noqa: E402 - after sys.path
import boto3  # noqa: E402
import moto_transactions  # noqa: E402

from handlers import alerts, findings, heartbeat, ingest, occurrences  # noqa: E402
from handlers.names import occurrences_table_name  # noqa: E402

ALERTS = 10_000
DELIVERIES = 600
REDELIVERED_SHARE = 0.10
START_NS = 1_773_457_200 * 1_000_000_000  # 2026-03-14T03:00:00Z, the start of a window
HOUR_NS = 3600 * 1_000_000_000
CLUSTER = "shop-prod-use1"
REGION = aws_fakes.REGION
# DynamoDB on-demand, us-east-1 (aws.amazon.com/dynamodb/pricing/on-demand, since Nov 2024):
# $0.625 per million write request units, $0.125 per million read request units. A standard write
# of an item up to 1 KB is 1 WRU; a transactional write is 2 WRU per item per KB.
PRICE_PER_MILLION_WRU = 0.625
PRICE_PER_MILLION_RRU = 0.125


def storm_deliveries() -> list[dict[str, Any]]:
    """600 subscription events, in order, carrying the 10,000 alerts between them."""
    events = []
    bounds = [round(ALERTS * d / DELIVERIES) for d in range(DELIVERIES + 1)]
    for number in range(DELIVERIES):
        messages, ids = [], []
        for n in range(bounds[number], bounds[number + 1]):
            at = START_NS + n * HOUR_NS // ALERTS
            alert = aws_fakes.falco_alert(
                0, pod="checkout-7d9f8b6c5d-x7k2p", time=alerts.falco_time_from_ns(at)
            )
            messages.append(json.dumps({"log": json.dumps(alert), "cluster_name": CLUSTER}))
            ids.append(f"{n:056d}")
        events.append(aws_fakes.subscription_event(messages, ids=ids))
    return events


def with_redeliveries(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The deliveries with 10% of them delivered again, each some time after the first."""
    rng = random.Random(12)
    again = rng.sample(range(len(events)), int(len(events) * REDELIVERED_SHARE))
    schedule = list(events)
    for index in sorted(again, reverse=True):
        schedule.insert(min(len(schedule), index + rng.randint(1, 30)), events[index])
    return schedule


class Calls:
    """Requests a client sent, by operation (botocore's before-call event)."""

    def __init__(self, *clients: Any) -> None:
        self.by_operation: Counter[str] = Counter()
        self.transaction_items = 0  # items written by TransactWriteItems calls
        for client in clients:
            client.meta.events.register("before-call.*.*", self._count)
            client.meta.events.register(
                "before-parameter-build.dynamodb.TransactWriteItems", self._items
            )

    def _count(self, model: Any, **_: Any) -> None:
        self.by_operation[model.name] += 1

    def _items(self, params: dict[str, Any], **_: Any) -> None:
        self.transaction_items += len(params.get("TransactItems", []))


def create_table(region: str) -> None:
    boto3.client("dynamodb", region_name=region).create_table(
        TableName=occurrences_table_name(CLUSTER),
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": occurrences.ID, "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": occurrences.ID, "AttributeType": "S"}],
    )


def run_handler(schedule: list[dict[str, Any]], *, with_table: bool) -> dict[str, Any]:
    os.environ["CLUSTER_NAME"] = CLUSTER
    if with_table:
        os.environ["OCCURRENCES_TABLE"] = occurrences_table_name(CLUSTER)
    else:
        os.environ.pop("OCCURRENCES_TABLE", None)
    with aws_fakes.moto_security_hub(REGION):
        for cache in (ingest.securityhub_client, heartbeat.dynamodb_client, occurrences._store):
            cache.cache_clear()
        heartbeat.directory_for.cache_clear()
        create_table(REGION)
        calls = Calls(ingest.securityhub_client(REGION), heartbeat.dynamodb_client(REGION))
        context = aws_fakes.FakeLambdaContext()
        started = time.perf_counter()
        with redirect_stdout(io.StringIO()):  # Powertools' logs and EMF
            for event in schedule:
                ingest.handler(event, context)
        elapsed = time.perf_counter() - started
        stored = aws_fakes.stored_findings(REGION)
    counts = [int(f["ProductFields"].get("falco/occurrences", "1")) for f in stored]
    # The storm's own requests (the handler's one heartbeat-directory Query is not one of them).
    dynamodb = {op: calls.by_operation[op] for op in ("TransactWriteItems", "UpdateItem")}
    dynamodb["transaction items"] = calls.transaction_items
    return {
        "findings": len(stored),
        "count": max(counts, default=0),
        "imports": calls.by_operation["BatchImportFindings"],
        "dynamodb": dynamodb,
        "seconds": elapsed,
        "windows": len({f["FirstObservedAt"][:13] for f in stored}),
    }


def run_guidance(schedule: list[dict[str, Any]]) -> dict[str, Any]:
    """One finding per alert with a uuid1 Id, one BatchImportFindings per delivery."""
    ctx = findings.FindingContext(account_id=aws_fakes.ACCOUNT_ID, region=REGION)
    with aws_fakes.moto_security_hub(REGION):
        client = boto3.client("securityhub", region_name=REGION)
        calls = Calls(client)
        alerts_seen = 0
        for event in schedule:
            batch = alerts.decode_subscription_event(event)
            found = []
            for log_event in batch.events:
                record = alerts.parse_log_event(log_event)
                assert isinstance(record, alerts.AlertRecord)
                finding = dict(findings.to_finding(record, ctx))
                finding["Id"] = str(uuid.uuid1())
                found.append(finding)
            alerts_seen += len(found)
            client.batch_import_findings(Findings=found)
        stored = aws_fakes.stored_findings(REGION)
    return {
        "findings": len(stored),
        "count": 1,
        "imports": calls.by_operation["BatchImportFindings"],
        "other_calls": 2 * alerts_seen,
    }


def cost_per_million(dynamodb: dict[str, int]) -> tuple[float, str]:
    """On-demand cost of the requests, scaled to a million alerts; and the arithmetic."""
    # Every item stays under 1 KB: each item a transaction writes is 2 WRU (the counter and one
    # item per log event); an UpdateItem is 1 WRU whether or not its condition holds. Items of
    # cancelled transactions (re-deliveries, which are retried without the events already
    # counted) are counted as if billed in full: the upper bound.
    items, updates = dynamodb["transaction items"], dynamodb["UpdateItem"]
    wru = 2 * items + updates
    scale = 1_000_000 / ALERTS
    dollars = wru * scale * PRICE_PER_MILLION_WRU / 1_000_000
    arithmetic = (
        f"(2 WRU x {items:,} transaction items + 1 WRU x {updates:,} updates) = {wru:,} WRU per "
        f"{ALERTS:,} alerts; x {scale:.0f} = {wru * scale:,.0f} WRU per million alerts x "
        f"${PRICE_PER_MILLION_WRU}/million WRU = ${dollars:.2f} (no reads: the update returns "
        "the item)"
    )
    return dollars, arithmetic


def main() -> int:
    schedule = with_redeliveries(storm_deliveries())
    print(
        f"storm: {ALERTS:,} repeats of one alert over one hour in {DELIVERIES} deliveries, "
        f"{len(schedule) - DELIVERIES} of them delivered again ({len(schedule)} invocations)"
    )
    with moto_transactions.cheap_rollback():  # see tests/moto_transactions.py
        counted = run_handler(schedule, with_table=True)
    per_batch = run_handler(schedule, with_table=False)
    guidance = run_guidance(schedule)
    rows = [
        (
            "this handler, occurrence table",
            counted,
            counted["dynamodb"]["TransactWriteItems"] + counted["dynamodb"]["UpdateItem"],
        ),
        ("this handler, one invocation at a time", per_batch, 0),
        ("one finding per alert (AWS guidance)", guidance, 0),
    ]
    print(f"{'':42} {'findings':>9} {'count on finding':>17} {'imports':>8} {'DynamoDB':>9}")
    for label, row, dynamodb in rows:
        print(
            f"{label:42} {row['findings']:>9,} {row['count']:>17,} {row['imports']:>8,} "
            f"{dynamodb:>9,}"
        )
    print(f"  occurrence table: DynamoDB calls by operation {counted['dynamodb']}")
    print(
        f"  one finding per alert also makes {guidance['other_calls']:,} STS + EC2 calls "
        "(two per alert, per its code; not run)"
    )
    print(
        f"  handler time under moto: {counted['seconds']:.1f} s with the table, "
        f"{per_batch['seconds']:.1f} s without ({len(schedule)} invocations)"
    )
    dollars, arithmetic = cost_per_million(counted["dynamodb"])
    print(f"DynamoDB on demand per million alerts of such storms: ${dollars:.2f}")
    print(f"  {arithmetic}")
    worst = 5 * PRICE_PER_MILLION_WRU
    print(
        f"  worst case, every alert alone in its invocation: 2 x 2 WRU (counter, event item) + "
        f"1 WRU (update) = 5 WRU per alert = ${worst:.2f} per million alerts"
    )
    ok = counted["findings"] == counted["windows"] == 1 and counted["count"] == ALERTS
    print("one finding per window with the exact count:", "yes" if ok else "NO")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
