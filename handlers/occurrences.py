"""Alert storms: repeats of one behaviour, across invocations, become one finding with an exact
count (docs/storms.md).

* **Behaviour** (:class:`Behavior`): the same rule (and priority) in the same cluster, namespace
  and workload, with the same image and process command line. The workload is the pod's owner
  when Falco reports it (k8smeta fields), else the pod name without the suffixes Kubernetes
  generates (:func:`pod_workload`). A different command line in the same pod is another behaviour.
* **Window**: fixed windows of ``window_seconds`` (default one hour) aligned to the epoch; an
  alert belongs to the window its own event time falls in, so re-delivery and replay land in the
  same window whenever they happen.
* **One finding** per (behaviour, window): its Id is derived from both
  (``names.BEHAVIOR_ID_PREFIX``), so every import updates it in place and carries the current
  ``falco/occurrences``, ``FirstObservedAt`` and ``LastObservedAt``.
* **Exact, idempotent counting** (:class:`OccurrenceStore`): per behaviour, window and invocation,
  one ``TransactWriteItems`` (per 99 log events) adds the count to the *counter item* and
  puts one *event item* per CloudWatch log event id, each on condition it does not exist. A
  re-delivered log event (Lambda retry, redrive, a batch split or merged differently) finds its
  event item: the transaction is cancelled, DynamoDB names the items whose condition failed, and
  the transaction is retried without them. So each log event is counted exactly once. A second
  call (a conditional ``UpdateItem`` that moves ``last_ns`` forward and returns the item either
  way) reads the count to import. Every item is a few hundred bytes whatever the storm's size.

Pure functions, plus :class:`OccurrenceStore`, the thin shell that takes a boto3 DynamoDB client.
"""

from __future__ import annotations

import functools
import hashlib
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from handlers import findings
from handlers.alerts import AlertRecord, ObservedTime, falco_time_from_ns, observed_time
from handlers.coalescing import strip_time_prefix
from handlers.names import BEHAVIOR_ID_PREFIX, parse_priority

DEFAULT_WINDOW_SECONDS = 3600
# How long state outlives its window: the on-failure queue keeps events 14 days, so a redrive
# within that time still finds the event items (and is not counted again).
RETENTION_SECONDS = 15 * 24 * 3600
# Tries of one transaction that DynamoDB cancels because another invocation's transaction on the
# same counter is in flight (TransactionConflict); backoff doubles from 20 ms.
CONFLICT_ATTEMPTS = 6
# TransactWriteItems takes at most 100 items: the counter and 99 log events.
EVENTS_PER_TRANSACTION = 99

# Item attributes (the component's IAM condition names exactly these).
ID = "id"
OCCURRENCES = "occurrences"
FIRST_NS = "first_ns"
LAST_NS = "last_ns"
EXPIRES_AT = "expires_at"
ATTRIBUTES = (ID, OCCURRENCES, FIRST_NS, LAST_NS, EXPIRES_AT)

_NS = 1_000_000_000
_NOT_AVAILABLE = "<NA>"
# Kubernetes' random suffixes use this alphabet (k8s.io/apimachinery/pkg/util/rand: no vowels,
# no 0, 1, 3), for the pod-template-hash too; a human-chosen name part rarely fits it.
_R = "[bcdfghjklmnpqrstvwxz2456789]"
_POD_SUFFIXES = (
    re.compile(rf"^(.+)-\d{{8,}}-{_R}{{5}}$"),  # CronJob: <cronjob>-<scheduled time>-<5>
    re.compile(rf"^(.+)-{_R}{{6,10}}-{_R}{{5}}$"),  # Deployment: <name>-<template hash>-<5>
    re.compile(rf"^(.+)-{_R}{{5}}$"),  # DaemonSet, Job, ReplicaSet: <name>-<5>
    re.compile(r"^(.+)-\d+$"),  # StatefulSet: <name>-<ordinal>
)
# Owner fields of Falco's k8smeta plugin, most specific controller first.
_OWNER_FIELDS = (
    ("deployment", "k8smeta.deployment.name"),
    ("statefulset", "k8smeta.statefulset.name"),
    ("daemonset", "k8smeta.daemonset.name"),
    ("cronjob", "k8smeta.cronjob.name"),
    ("job", "k8smeta.job.name"),
    ("replicaset", "k8smeta.rs.name"),
)


@dataclass(frozen=True)
class Behavior:
    """What makes repeats one finding (see the module doc); ``-`` where a part is unknown."""

    cluster: str
    namespace: str
    workload: str
    rule: str
    priority: str
    image: str
    process: str
    # Only when none of namespace, workload, image and process is known: Falco's output without
    # its time, so that alerts with nothing else to tell them apart are not merged blindly.
    output: str = ""

    @functools.cached_property
    def digest(self) -> str:
        parts = (self.cluster, self.namespace, self.workload, self.rule, self.priority)
        text = "\x1f".join((*parts, self.image, self.process, self.output))
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _text(value: Any) -> str | None:
    if type(value) is str and value.strip() and value != _NOT_AVAILABLE:
        return value
    return None


def pod_workload(pod: str) -> str:
    """The pod's name without the suffixes its controller generated (see _POD_SUFFIXES)."""
    for pattern in _POD_SUFFIXES:
        match = pattern.match(pod)
        if match:
            return match.group(1)
    return pod


def workload_of(fields: dict[str, Any]) -> str:
    """``<kind>/<name>`` of the pod's owner when Falco reports it, else ``pod/<name without
    generated suffixes>``, else ``-``."""
    for kind, key in _OWNER_FIELDS:
        name = _text(fields.get(key))
        if name:
            return f"{kind}/{pod_workload(name) if kind == 'replicaset' else name}"
    pod = _text(fields.get("k8s.pod.name"))
    return f"pod/{pod_workload(pod)}" if pod else "-"


def behavior_of(record: AlertRecord, default_cluster: str | None) -> Behavior:
    alert = record.alert
    fields = alert.get("output_fields")
    fields = fields if isinstance(fields, dict) else {}
    rule = alert.get("rule")
    priority = parse_priority(alert.get("priority"))  # type: ignore[arg-type]
    cluster = _text(record.cluster_name) or default_cluster or "-"
    if any(key.startswith("ka.") for key in fields):  # a Kubernetes audit event
        namespace = _text(fields.get("ka.target.namespace"))
        resource = _text(fields.get("ka.target.resource")) or "-"
        name = _text(fields.get("ka.target.name"))
        workload = f"{resource}/{name}" if name else None
        image = None
        process = " ".join(
            filter(None, (_text(fields.get("ka.user.name")), _text(fields.get("ka.verb"))))
        )
    else:
        namespace = _text(fields.get("k8s.ns.name"))
        workload = workload_of(fields)
        workload = None if workload == "-" else workload
        repository = _text(fields.get("container.image.repository"))
        tag = _text(fields.get("container.image.tag"))
        image = f"{repository}:{tag}" if repository and tag else repository
        process = (
            _text(fields.get("proc.cmdline"))
            or _text(fields.get("proc.exepath"))
            or _text(fields.get("proc.name"))
        )
    known = (namespace, workload, image, process)
    output = ""
    if not any(known):
        text = alert.get("output")
        output = strip_time_prefix(text) if isinstance(text, str) else repr(sorted(fields))
        # A host alert has no pod: its node tells it apart from the same rule on another node.
        output = f"{_text(alert.get('hostname')) or '-'}\x1f{output}"
    return Behavior(
        cluster=cluster,
        namespace=namespace or "-",
        workload=workload or "-",
        rule=str(rule),
        priority=priority,
        image=image or "-",
        process=process or "-",
        output=output,
    )


def window_start_ns(observed_ns: int, window_seconds: int) -> int:
    width = window_seconds * _NS
    return (observed_ns // width) * width


@dataclass(slots=True)
class Storm:
    """One behaviour in one window, as one invocation saw it."""

    behavior: Behavior
    window_ns: int  # the window's start
    record: AlertRecord  # the earliest alert: the finding shows it
    first: ObservedTime
    last: ObservedTime
    count: int = 0
    log_event_ids: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        """The counter item's id."""
        return f"{self.behavior.digest}#{self.window_ns}"

    def event_item_id(self, log_event_id: str) -> str:
        """The id of the item that says this log event was counted."""
        return f"{self.key}#{log_event_id}"

    @property
    def finding_id(self) -> str:
        return BEHAVIOR_ID_PREFIX + hashlib.sha256(self.key.encode("ascii")).hexdigest()


class StormCollector:
    """The invocation's alerts grouped by (behaviour, window), one record at a time: a storm keeps
    its earliest record and the log event ids it counts, nothing else (memory stays bounded)."""

    def __init__(self, default_cluster: str | None, window_seconds: int) -> None:
        self._default_cluster = default_cluster
        self._window_seconds = window_seconds
        self._found: dict[tuple[str, int], Storm] = {}

    def add(self, record: AlertRecord) -> None:
        behavior = behavior_of(record, self._default_cluster)
        observed = observed_time(record)
        window = window_start_ns(observed.ns, self._window_seconds)
        storm = self._found.get((behavior.digest, window))
        if storm is None:
            storm = self._found[behavior.digest, window] = Storm(
                behavior, window, record, observed, observed
            )
        storm.count += 1
        storm.log_event_ids.append(record.log_event_id)
        if observed.ns < storm.first.ns:
            storm.record, storm.first = record, observed
        if observed.ns > storm.last.ns:
            storm.last = observed

    def storms(self) -> list[Storm]:
        """In order of first appearance."""
        return list(self._found.values())


def storms(
    records: Iterable[AlertRecord], default_cluster: str | None, window_seconds: int
) -> list[Storm]:
    """The invocation's alerts grouped by (behaviour, window), in order of first appearance."""
    collector = StormCollector(default_cluster, window_seconds)
    for record in records:
        collector.add(record)
    return collector.storms()


@dataclass(frozen=True, slots=True)
class Tally:
    """A (behaviour, window)'s state after this invocation's update."""

    occurrences: int
    first_ns: int
    last_ns: int
    counted: int  # log events counted by this call
    recounted: int  # log events counted before (a re-delivery, however it was batched)


class StateUnavailable(RuntimeError):
    """Some storms' state could not be updated (after retries): those findings were not imported.
    The handler raises it so Lambda retries the event; the retry counts nothing twice."""

    def __init__(self, failed: list[tuple[str, str]]) -> None:
        self.failed = failed
        shown = ", ".join(f"{key[:16]}… ({code})" for key, code in failed[:10])
        super().__init__(f"{len(failed)} alert storm counters not updated: {shown}")


def transaction(
    table: str, storm: Storm, window_seconds: int, event_ids: Sequence[str]
) -> list[dict[str, Any]]:
    """The TransactWriteItems items that count ``event_ids`` (log events of ``storm``) once: the
    counter's ADD first, then one event item per log event, each on condition it is new."""
    expires = (storm.window_ns // _NS) + window_seconds + RETENTION_SECONDS
    counter = {
        "Update": {
            "TableName": table,
            "Key": {ID: {"S": storm.key}},
            "UpdateExpression": (
                "ADD #n :n SET #exp = :exp, #first = if_not_exists(#first, :first), "
                "#last = if_not_exists(#last, :last)"
            ),
            "ExpressionAttributeNames": {
                "#n": OCCURRENCES,
                "#exp": EXPIRES_AT,
                "#first": FIRST_NS,
                "#last": LAST_NS,
            },
            "ExpressionAttributeValues": {
                ":n": {"N": str(len(event_ids))},
                ":exp": {"N": str(expires)},
                ":first": {"N": str(storm.first.ns)},
                ":last": {"N": str(storm.last.ns)},
            },
        }
    }
    events = [
        {
            "Put": {
                "TableName": table,
                "Item": {ID: {"S": storm.event_item_id(event_id)}, EXPIRES_AT: {"N": str(expires)}},
                "ConditionExpression": "attribute_not_exists(#id)",
                "ExpressionAttributeNames": {"#id": ID},
            }
        }
        for event_id in event_ids
    ]
    return [counter, *events]


def move_request(table: str, storm: Storm, attribute: str, value: int) -> dict[str, Any]:
    """Move ``first_ns`` back or ``last_ns`` forward to ``value``; returns the item either way."""
    operator = "<" if attribute == LAST_NS else ">"
    return {
        "TableName": table,
        "Key": {ID: {"S": storm.key}},
        "UpdateExpression": "SET #t = :t",
        "ConditionExpression": f"#t {operator} :t",
        "ExpressionAttributeNames": {"#t": attribute},
        "ExpressionAttributeValues": {":t": {"N": str(value)}},
        "ReturnValues": "ALL_NEW",
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "ClientError"))


class OccurrenceStore:
    """The DynamoDB table of storm counters (``names.occurrences_table_name``)."""

    def __init__(
        self,
        client: Any,
        table: str,
        window_seconds: int = DEFAULT_WINDOW_SECONDS,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client, self.table, self.window_seconds = client, table, window_seconds
        self.sleep = sleep
        self.calls = 0  # DynamoDB requests made (the benchmark prints them)

    def count(self, storm: Storm) -> Tally:
        """Count ``storm``'s log events that were not counted before (ClientError/BotoCoreError
        after retries propagate), then read the counter."""
        counted = 0
        event_ids = sorted(set(storm.log_event_ids))
        for start in range(0, len(event_ids), EVENTS_PER_TRANSACTION):
            counted += self._count_once(storm, event_ids[start : start + EVENTS_PER_TRANSACTION])
        item = self._move(storm, LAST_NS, storm.last.ns)
        if int(item[FIRST_NS]["N"]) > storm.first.ns:  # alerts that arrived out of order
            item = self._move(storm, FIRST_NS, storm.first.ns)
        return Tally(
            occurrences=int(item[OCCURRENCES]["N"]),
            first_ns=int(item[FIRST_NS]["N"]),
            last_ns=int(item[LAST_NS]["N"]),
            counted=counted,
            recounted=len(event_ids) - counted,
        )

    def _count_once(self, storm: Storm, event_ids: Sequence[str]) -> int:
        """Count the events of ``event_ids`` not counted before; returns how many were new.

        A cancelled transaction names, item by item, which conditions failed: those events were
        counted before (a re-delivery, however it was batched). They are dropped and the rest is
        tried again; a conflict with another transaction is retried after a backoff.
        """
        pending = list(event_ids)
        conflicts = 0
        while pending:
            self.calls += 1
            try:
                self.client.transact_write_items(
                    TransactItems=transaction(self.table, storm, self.window_seconds, pending)
                )
            except ClientError as exc:
                if _error_code(exc) != "TransactionCanceledException":
                    raise
                reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
                seen = {
                    event_id
                    for event_id, reason in zip(pending, reasons[1:], strict=False)
                    if reason == "ConditionalCheckFailed"
                }
                if seen:
                    pending = [event_id for event_id in pending if event_id not in seen]
                    continue
                if "TransactionConflict" not in reasons or conflicts == CONFLICT_ATTEMPTS - 1:
                    raise
                self.sleep(0.02 * 2**conflicts)
                conflicts += 1
            else:
                return len(pending)
        return 0

    def _move(self, storm: Storm, attribute: str, value: int) -> dict[str, Any]:
        self.calls += 1
        try:
            response = self.client.update_item(**move_request(self.table, storm, attribute, value))
        except ClientError as exc:
            if _error_code(exc) != "ConditionalCheckFailedException":
                raise
            item = exc.response.get("Item")
            if not item:  # TTL deleted the counter between the two calls: state is gone
                raise
            return item  # type: ignore[no-any-return]
        return response["Attributes"]  # type: ignore[no-any-return]


@dataclass
class StormResult:
    """What one invocation did with its storms."""

    found: list[tuple[str, str]] = field(default_factory=list)  # (finding Id, finding JSON)
    counted: int = 0  # alerts newly counted
    recounted: int = 0  # alerts of re-delivered events (already counted, not counted again)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (counter key, error code)


def container_facts(behavior: Behavior) -> dict[str, str]:
    """What suppressions match on (ResourceDetailsOther of the finding's primary resource)."""
    facts = {
        "Namespace": behavior.namespace,
        "Workload": behavior.workload,
        "Image": behavior.image,
        "ImageRepository": behavior.image.rsplit(":", 1)[0]
        if ":" in behavior.image.rsplit("/", 1)[-1]
        else behavior.image,
        "Process": behavior.process,
    }
    return {key: value for key, value in facts.items() if value != "-"}


def count_and_map(
    storms_found: Sequence[Storm],
    store: OccurrenceStore,
    ctx: findings.FindingContext,
    now_ns: Callable[[], int] = time.time_ns,
) -> StormResult:
    """Count every storm once and build its finding with the current count. A storm whose state
    cannot be updated is reported in ``failed`` and not imported (never with a wrong count)."""
    result = StormResult()
    for storm in storms_found:
        try:
            tally = store.count(storm)
        except ClientError as exc:
            result.failed.append((storm.key, _error_code(exc)))
            continue
        except BotoCoreError as exc:
            result.failed.append((storm.key, type(exc).__name__))
            continue
        result.counted += tally.counted
        result.recounted += tally.recounted
        first = ObservedTime(tally.first_ns, falco_time_from_ns(tally.first_ns), True)
        last = ObservedTime(tally.last_ns, falco_time_from_ns(tally.last_ns), True)
        # UpdatedAt: when this count was read. Counts only grow, so a later read carries a count
        # at least as large, and Security Hub keeps the import with the latest UpdatedAt.
        updated = falco_time_from_ns(max(now_ns(), tally.last_ns))
        result.found.append(
            findings.behavior_finding_text(
                storm.record,
                ctx,
                finding_id=storm.finding_id,
                first=first,
                last=last,
                occurrences=tally.occurrences,
                updated_at=updated,
                facts=container_facts(storm.behavior),
            )
        )
    return result


# -- for the ingest handler: one store per container, from the function's environment ----------
@functools.cache
def _store(region: str, table: str, window_seconds: int) -> OccurrenceStore:
    from handlers.heartbeat import dynamodb_client  # the handler's one DynamoDB client

    return OccurrenceStore(dynamodb_client(region), table, window_seconds)


def store_from_environment(environ: Mapping[str, str], region: str) -> OccurrenceStore | None:
    """The store ``OCCURRENCES_TABLE`` names (None: unset, in-invocation coalescing only);
    ``OCCURRENCE_WINDOW_SECONDS`` is the window (ValueError names a bad value)."""
    table = environ.get("OCCURRENCES_TABLE")
    if not table:
        return None
    raw = environ.get("OCCURRENCE_WINDOW_SECONDS") or str(DEFAULT_WINDOW_SECONDS)
    if not raw.isdigit() or int(raw) < 60:
        raise ValueError(f"OCCURRENCE_WINDOW_SECONDS={raw!r} is not a whole number >= 60")
    return _store(region, table, int(raw))
