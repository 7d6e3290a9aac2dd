"""Heartbeats: Falco's metrics snapshot, one per node and interval, kept in a DynamoDB table.

With ``metrics.outputRule`` on, Falco writes the rule ``Falco internal: metrics snapshot``
(source ``internal``, priority Informational) every ``metrics.interval``; it reaches the ingest
Lambda like any alert. Such a record never becomes a finding (findings.filter_alert skips Falco's
internal events); instead :func:`from_record` turns it into a :class:`Heartbeat` and
:func:`record_heartbeats` keeps the latest one per node in the cluster's heartbeat table, which
the coverage checker (handlers/coverage.py) compares with the cluster's EC2 instances.

The table (``names.heartbeat_table_name``): partition key ``cluster``, sort key ``node`` (the
Kubernetes node name, which Falco reports as its hostname; on EKS the instance's private DNS
name). Attributes: ``seen_at`` (UTC, fixed-width RFC 3339, so strings sort like times),
``falco_version``, ``drop_pct``, ``events``, ``expires_at`` (the TTL attribute: nodes that are gone
age out after ``RETENTION``), and ``instance_id``, which the checker writes and
:class:`InstanceDirectory` reads so alert findings can name the node's EC2 instance.

Pure functions except the two thin shells at the end (:func:`record_heartbeats`,
:class:`InstanceDirectory`), which take a boto3 DynamoDB client.
"""

from __future__ import annotations

import functools
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from handlers.alerts import AlertRecord
from handlers.names import METRICS_SNAPSHOT_RULE, heartbeat_table_name

# Item attributes (one place; the checker and the component's IAM conditions read them).
CLUSTER = "cluster"
NODE = "node"
SEEN_AT = "seen_at"
FALCO_VERSION = "falco_version"
DROP_PCT = "drop_pct"
EVENTS = "events"
EXPIRES_AT = "expires_at"
INSTANCE_ID = "instance_id"

# A node that has been gone (no heartbeat, not in the inventory) this long is deleted by
# DynamoDB's TTL; a week leaves "last seen" readable for the week after an incident.
RETENTION = timedelta(days=7)

# Output fields of the snapshot used here. [falco userspace/falco/stats_writer.cpp, 0.44]
VERSION_FIELD = "falco.version"
DROP_PERCENT_FIELD = "scap.n_drops_perc"  # drops in % of kernel events since the last snapshot
EVENTS_FIELD = "falco.num_evts"
SOURCE_FIELD = "evt.source"
HOSTNAME_FIELD = "evt.hostname"

# Kubernetes node names are DNS subdomains (lower case, digits, '-', '.'; at most 253).
_NODE_NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
_CLUSTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")
_RFC3339 = re.compile(
    r"^(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?([Zz]|[+-]\d\d:\d\d)$"
)
_MAX_VERSION = 64


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """One node's metrics snapshot: the node was watched at ``seen_at``."""

    cluster: str
    node: str
    seen_at: datetime  # UTC
    falco_version: str | None
    drop_pct: float | None  # kernel event drops in % since the previous snapshot
    events: int | None  # events Falco processed since it started


def format_time(moment: datetime) -> str:
    """UTC, always with microseconds: equal-width strings sort like the times they name."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime | None:
    """RFC 3339 as Falco writes it (up to 9 fractional digits) -> aware UTC datetime, or None."""
    match = _RFC3339.fullmatch(text) if isinstance(text, str) else None
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    micros = int((fraction or "0")[:6].ljust(6, "0"))
    try:
        moment = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micros, UTC
        )
    except ValueError:
        return None
    if zone not in ("Z", "z"):
        sign = 1 if zone[0] == "+" else -1
        moment -= sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    return moment


def is_metrics_snapshot(alert: Mapping[str, Any]) -> bool:
    """Falco's metrics snapshot: the internal rule (Falco >= 0.30 also says source internal)."""
    source = alert.get("source")
    return alert.get("rule") == METRICS_SNAPSHOT_RULE and source in (None, "internal")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def from_record(record: AlertRecord, default_cluster: str | None) -> Heartbeat | None:
    """The heartbeat in a record, or None (not a snapshot, or no usable node/cluster/time).

    The node is Falco's ``hostname`` (FALCO_HOSTNAME = spec.nodeName), else the node Fluent Bit
    names; the cluster is the record's ``cluster_name``, else the function's CLUSTER_NAME.
    """
    alert = record.alert
    if not is_metrics_snapshot(alert):
        return None
    fields = alert.get("output_fields")
    fields = fields if isinstance(fields, dict) else {}
    node = alert.get("hostname") or record.node_name
    cluster = record.cluster_name or default_cluster
    if not (isinstance(node, str) and _NODE_NAME.fullmatch(node)):
        return None
    if not (isinstance(cluster, str) and _CLUSTER_NAME.fullmatch(cluster)):
        return None
    seen_at = parse_time(alert.get("time"))  # type: ignore[arg-type]
    if seen_at is None:
        seen_at = datetime.fromtimestamp(record.timestamp_ms / 1000, UTC)
    version = fields.get(VERSION_FIELD)
    version = version[:_MAX_VERSION] if isinstance(version, str) and version.isprintable() else None
    drop_pct = _number(fields.get(DROP_PERCENT_FIELD))
    if drop_pct is not None and not 0.0 <= drop_pct <= 100.0:
        drop_pct = None
    events = fields.get(EVENTS_FIELD)
    events = events if isinstance(events, int) and not isinstance(events, bool) else None
    return Heartbeat(cluster, node, seen_at, version, drop_pct, events)


def latest_per_node(beats: Iterable[Heartbeat]) -> list[Heartbeat]:
    """One heartbeat per (cluster, node): the latest. A batch can carry several per node."""
    latest: dict[tuple[str, str], Heartbeat] = {}
    for beat in beats:
        key = (beat.cluster, beat.node)
        if key not in latest or beat.seen_at > latest[key].seen_at:
            latest[key] = beat
    return list(latest.values())


def update_request(table: str, beat: Heartbeat) -> dict[str, Any]:
    """The UpdateItem request for one heartbeat.

    Only the heartbeat's own attributes are set (the checker's ``instance_id`` stays), and only
    if the item holds no later heartbeat: a re-delivered or late event never moves a node back
    in time, so writing is idempotent.
    """
    names = {"#seen": SEEN_AT, "#expires": EXPIRES_AT}
    values: dict[str, Any] = {
        ":seen": {"S": format_time(beat.seen_at)},
        ":expires": {"N": str(int((beat.seen_at + RETENTION).timestamp()))},
    }
    sets = ["#seen = :seen", "#expires = :expires"]
    optional = (
        (FALCO_VERSION, "version", {"S": beat.falco_version} if beat.falco_version else None),
        (DROP_PCT, "drops", {"N": f"{beat.drop_pct:.4f}"} if beat.drop_pct is not None else None),
        (EVENTS, "events", {"N": str(beat.events)} if beat.events is not None else None),
    )
    for attribute, alias, value in optional:
        if value is not None:
            names[f"#{alias}"] = attribute
            values[f":{alias}"] = value
            sets.append(f"#{alias} = :{alias}")
    return {
        "TableName": table,
        "Key": {CLUSTER: {"S": beat.cluster}, NODE: {"S": beat.node}},
        "UpdateExpression": "SET " + ", ".join(sets),
        "ConditionExpression": "attribute_not_exists(#seen) OR #seen < :seen",
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
    }


@dataclass
class HeartbeatWrite:
    written: int = 0
    stale: int = 0  # the table already held a later heartbeat for the node (not an error)
    foreign: int = 0  # heartbeats naming another cluster than the function's: not written
    failed: list[tuple[str, str]] = field(default_factory=list)  # (node, error code)


class HeartbeatsNotRecorded(RuntimeError):
    """Some heartbeats could not be written after botocore's retries (the findings were
    imported). Raised by the ingest handler so Lambda retries the event: writing is idempotent,
    and a node must not look silent because its heartbeat was lost."""

    def __init__(self, failed: list[tuple[str, str]]) -> None:
        self.failed = failed
        shown = ", ".join(f"{node} ({code})" for node, code in failed[:10])
        super().__init__(f"{len(failed)} heartbeats not recorded: {shown}")


def record_heartbeats(
    client: Any, table: str, beats: Iterable[Heartbeat], *, cluster: str | None = None
) -> HeartbeatWrite:
    """Write the latest heartbeat of each node; never raises for AWS errors (see ``failed``).

    With ``cluster``, heartbeats of other clusters are counted as ``foreign`` and not written
    (the function may write only its own cluster's items). botocore retries throttling itself
    (the client's retry config); what fails after that is reported, and the ingest handler then
    fails the invocation so Lambda retries the event.
    """
    result = HeartbeatWrite()
    for beat in latest_per_node(beats):
        if cluster is not None and beat.cluster != cluster:
            result.foreign += 1
            continue
        try:
            client.update_item(**update_request(table, beat))
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", "ClientError"))
            if code == "ConditionalCheckFailedException":
                result.stale += 1
            else:
                result.failed.append((beat.node, code))
        except BotoCoreError as exc:
            result.failed.append((beat.node, type(exc).__name__))
        else:
            result.written += 1
    return result


# -- enrichment: node name -> EC2 instance id ---------------------------------------------------
def directory_from_items(items: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Node name -> instance id, from table items in DynamoDB's typed JSON."""
    directory: dict[str, str] = {}
    for item in items:
        node = item.get(NODE, {}).get("S")
        instance = item.get(INSTANCE_ID, {}).get("S")
        if isinstance(node, str) and isinstance(instance, str) and instance.startswith("i-"):
            directory[node] = instance
    return directory


def directory_query(table: str, cluster: str) -> dict[str, Any]:
    """The Query the ingest Lambda may make: two attributes of one cluster's items, nothing more
    (its IAM policy pins ``dynamodb:Select`` and ``dynamodb:Attributes`` to exactly this)."""
    return {
        "TableName": table,
        "KeyConditionExpression": "#cluster = :cluster",
        "ProjectionExpression": "#node, #instance",
        "Select": "SPECIFIC_ATTRIBUTES",
        "ExpressionAttributeNames": {"#cluster": CLUSTER, "#node": NODE, "#instance": INSTANCE_ID},
        "ExpressionAttributeValues": {":cluster": {"S": cluster}},
    }


class InstanceDirectory:
    """Which EC2 instance a node is, as the coverage checker last saw it; refreshed at most every
    ``max_age`` seconds per Lambda container (one Query returns the whole cluster).

    Best effort by design: when the table cannot be read the alert still becomes a finding, just
    without the AwsEc2Instance resource. Pods keep no access to the instance metadata service.
    """

    def __init__(
        self,
        client: Any,
        table: str,
        cluster: str,
        *,
        max_age: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client, self._table, self._cluster = client, table, cluster
        self._max_age, self._clock = max_age, clock
        self._nodes: dict[str, str] = {}
        self._loaded_at: float | None = None
        self.errors = 0

    def instance_of(self, node: str | None) -> str | None:
        if not node:
            return None
        now = self._clock()
        if self._loaded_at is None or now - self._loaded_at >= self._max_age:
            self._refresh(now)
        return self._nodes.get(node)

    def _refresh(self, now: float) -> None:
        self._loaded_at = now  # also after a failure: one try per max_age, not one per alert
        try:
            items: list[Mapping[str, Any]] = []
            request = directory_query(self._table, self._cluster)
            for page in self._client.get_paginator("query").paginate(**request):
                items.extend(page.get("Items", []))
        except (ClientError, BotoCoreError):
            self.errors += 1
            return
        self._nodes = directory_from_items(items)


# -- for the ingest handler: one client and one directory per container ---------------------------
@functools.cache
def dynamodb_client(region: str) -> Any:  # pragma: no cover - created inside moto in tests
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"mode": "standard", "total_max_attempts": 5}, connect_timeout=3, read_timeout=5
    )
    return boto3.client("dynamodb", region_name=region, config=config)


@functools.cache
def directory_for(region: str, cluster: str) -> InstanceDirectory:
    return InstanceDirectory(dynamodb_client(region), heartbeat_table_name(cluster), cluster)


def enrich(records: Iterable[AlertRecord], directory: InstanceDirectory) -> int:
    """Name each record's EC2 instance from the directory where Fluent Bit could not (no aws
    filter: pods get no instance metadata). Returns how many records gained one."""
    named = 0
    for record in records:
        if record.instance_id is None and record.node_name:
            instance = directory.instance_of(record.node_name)
            if instance is not None:
                record.instance_id = instance
                named += 1
    return named
