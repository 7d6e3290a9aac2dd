"""Heartbeats: which records are Falco's metrics snapshot, and what the table keeps of them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from aws_fakes import REGION, fake_aws_environment
from moto import mock_aws

from handlers import findings, heartbeat
from handlers.alerts import AlertRecord
from handlers.names import heartbeat_table_name

CLUSTER = "shop-prod-use1"
NODE = "ip-10-0-1-23.ec2.internal"
TABLE = heartbeat_table_name(CLUSTER)


def snapshot(
    node: str | None = NODE,
    time: str | None = "2026-03-14T03:00:00.123456789Z",
    drops: Any = 0.0,
    **fields: Any,
) -> dict[str, Any]:
    """Falco 0.44's metrics snapshot as its JSON output writes it (falco_outputs::handle_msg)."""
    alert: dict[str, Any] = {
        "output": "Falco metrics snapshot",
        "priority": "Informational",
        "rule": "Falco internal: metrics snapshot",
        "source": "internal",
        "output_fields": {
            "evt.source": "syscall",
            "evt.hostname": "ip-10-0-1-23",
            "falco.version": "0.44.1",
            "falco.num_evts": 123456,
            "scap.n_drops_perc": drops,
            **fields,
        },
    }
    if node is not None:
        alert["hostname"] = node
    if time is not None:
        alert["time"] = time
    return alert


def record(alert: dict[str, Any], cluster: str | None = CLUSTER, node: str | None = None) -> Any:
    return AlertRecord(alert, "evt-1", 1_773_457_200_000, cluster, None, node, None)


def test_snapshot_becomes_a_heartbeat_with_node_time_version_and_drops() -> None:
    beat = heartbeat.from_record(record(snapshot(drops=2.5)), None)
    assert beat == heartbeat.Heartbeat(
        CLUSTER, NODE, datetime(2026, 3, 14, 3, 0, 0, 123456, UTC), "0.44.1", 2.5, 123456
    )


def test_snapshot_is_still_never_a_finding() -> None:
    ctx = findings.FindingContext(account_id="123456789012", region=REGION)
    skip = findings.filter_alert(record(snapshot()), ctx)
    assert skip is not None
    assert skip.reason == "internal_event"


@pytest.mark.parametrize(
    "alert",
    [
        {**snapshot(), "rule": "Terminal shell in container", "source": "syscall"},
        {**snapshot(), "source": "syscall"},  # a rule that only borrows the name
        {**snapshot(), "rule": "Falco internal: syscall event drop"},
    ],
)
def test_other_alerts_are_not_heartbeats(alert: dict[str, Any]) -> None:
    assert heartbeat.from_record(record(alert), CLUSTER) is None


def test_node_falls_back_to_fluent_bits_node_and_cluster_to_the_function() -> None:
    beat = heartbeat.from_record(record(snapshot(node=None), cluster=None, node=NODE), CLUSTER)
    assert beat is not None
    assert (beat.cluster, beat.node) == (CLUSTER, NODE)


@pytest.mark.parametrize(
    "node", ["", "Node With Spaces", "a" * 254, "ip-10-0-1-23.ec2.internal\n", "-leading"]
)
def test_hostile_or_invalid_node_names_are_refused(node: str) -> None:
    assert heartbeat.from_record(record(snapshot(node=node)), CLUSTER) is None


def test_no_cluster_anywhere_means_no_heartbeat() -> None:
    assert heartbeat.from_record(record(snapshot(), cluster=None), None) is None


@pytest.mark.parametrize("drops", [float("nan"), -1.0, 101.0, True, "3.0", None])
def test_unusable_drop_rates_are_left_out(drops: Any) -> None:
    beat = heartbeat.from_record(record(snapshot(drops=drops)), CLUSTER)
    assert beat is not None
    assert beat.drop_pct is None


def test_time_falls_back_to_the_log_event() -> None:
    beat = heartbeat.from_record(record(snapshot(time="yesterday")), CLUSTER)
    assert beat is not None
    assert beat.seen_at == datetime.fromtimestamp(1_773_457_200, UTC)


def test_offsets_are_normalised_to_utc_and_strings_sort_as_times() -> None:
    moment = heartbeat.parse_time("2026-03-14T05:00:00.5+02:00")
    assert moment == datetime(2026, 3, 14, 3, 0, 0, 500000, UTC)
    early, late = moment, moment + timedelta(microseconds=1)
    assert heartbeat.format_time(early) < heartbeat.format_time(late)


# -- the table (moto) ----------------------------------------------------------------------------
@pytest.fixture
def table() -> Iterator[Any]:
    with fake_aws_environment(REGION), mock_aws():
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


def beat_at(minute: int, node: str = NODE, drops: float | None = 0.0) -> heartbeat.Heartbeat:
    moment = datetime(2026, 3, 14, 3, minute, tzinfo=UTC)
    return heartbeat.Heartbeat(CLUSTER, node, moment, "0.44.1", drops, 10)


def item(client: Any, node: str = NODE) -> dict[str, Any]:
    return client.get_item(TableName=TABLE, Key={"cluster": {"S": CLUSTER}, "node": {"S": node}})[
        "Item"
    ]


def test_latest_heartbeat_per_node_is_kept_with_a_ttl(table: Any) -> None:
    result = heartbeat.record_heartbeats(table, TABLE, [beat_at(0), beat_at(15), beat_at(30, "b")])
    assert (result.written, result.stale, result.failed) == (2, 0, [])
    stored = item(table)
    assert stored["seen_at"]["S"] == "2026-03-14T03:15:00.000000Z"
    expires = datetime.fromtimestamp(int(stored["expires_at"]["N"]), UTC)
    assert expires == datetime(2026, 3, 14, 3, 15, tzinfo=UTC) + heartbeat.RETENTION


def test_a_redelivered_or_late_heartbeat_never_moves_a_node_back(table: Any) -> None:
    heartbeat.record_heartbeats(table, TABLE, [beat_at(30)])
    again = heartbeat.record_heartbeats(table, TABLE, [beat_at(30), beat_at(15)])
    assert again.written == 0
    assert again.stale == 1  # the two were deduplicated first: only 03:30 was sent
    assert item(table)["seen_at"]["S"] == "2026-03-14T03:30:00.000000Z"


def test_heartbeat_keeps_the_instance_id_the_checker_wrote(table: Any) -> None:
    table.put_item(
        TableName=TABLE,
        Item={"cluster": {"S": CLUSTER}, "node": {"S": NODE}, "instance_id": {"S": "i-0abc"}},
    )
    heartbeat.record_heartbeats(table, TABLE, [beat_at(0, drops=3.25)])
    stored = item(table)
    assert stored["instance_id"]["S"] == "i-0abc"
    assert stored["drop_pct"]["N"] == "3.2500"


def test_write_failures_are_reported_not_raised(table: Any) -> None:
    result = heartbeat.record_heartbeats(table, "no-such-table", [beat_at(0)])
    assert result.written == 0
    assert result.failed == [(NODE, "ResourceNotFoundException")]


def test_directory_names_the_instance_and_refreshes_only_after_max_age(table: Any) -> None:
    table.put_item(
        TableName=TABLE,
        Item={"cluster": {"S": CLUSTER}, "node": {"S": NODE}, "instance_id": {"S": "i-0abc"}},
    )
    clock = [0.0]
    directory = heartbeat.InstanceDirectory(table, TABLE, CLUSTER, clock=lambda: clock[0])
    assert directory.instance_of(NODE) == "i-0abc"
    assert directory.instance_of("ip-10-0-9-9.ec2.internal") is None
    table.put_item(
        TableName=TABLE,
        Item={"cluster": {"S": CLUSTER}, "node": {"S": "n2"}, "instance_id": {"S": "i-0def"}},
    )
    assert directory.instance_of("n2") is None  # cached
    clock[0] = 301.0
    assert directory.instance_of("n2") == "i-0def"


def test_directory_failure_is_best_effort(table: Any) -> None:
    directory = heartbeat.InstanceDirectory(table, "no-such-table", CLUSTER)
    assert directory.instance_of(NODE) is None
    assert directory.errors == 1


def test_directory_query_asks_for_exactly_the_attributes_iam_allows() -> None:
    query = heartbeat.directory_query(TABLE, CLUSTER)
    assert query["Select"] == "SPECIFIC_ATTRIBUTES"
    assert set(query["ExpressionAttributeNames"].values()) == {"cluster", "node", "instance_id"}


def test_heartbeats_of_another_cluster_are_not_written(table: Any) -> None:
    other = heartbeat.Heartbeat("other", NODE, datetime(2026, 3, 14, tzinfo=UTC), None, None, None)
    result = heartbeat.record_heartbeats(table, TABLE, [other, beat_at(0)], cluster=CLUSTER)
    assert (result.written, result.foreign) == (1, 1)


def test_enrich_names_the_instance_only_where_fluent_bit_did_not(table: Any) -> None:
    table.put_item(
        TableName=TABLE,
        Item={"cluster": {"S": CLUSTER}, "node": {"S": NODE}, "instance_id": {"S": "i-0abc"}},
    )
    directory = heartbeat.InstanceDirectory(table, TABLE, CLUSTER)
    unknown = record({"rule": "r", "priority": "Notice"}, node=NODE)
    known = record({"rule": "r", "priority": "Notice"}, node=NODE)
    known.instance_id = "i-0fromfluentbit"
    elsewhere = record({"rule": "r", "priority": "Notice"}, node="ip-10-9-9-9.ec2.internal")
    assert heartbeat.enrich([unknown, known, elsewhere], directory) == 1
    assert (unknown.instance_id, known.instance_id, elsewhere.instance_id) == (
        "i-0abc",
        "i-0fromfluentbit",
        None,
    )
