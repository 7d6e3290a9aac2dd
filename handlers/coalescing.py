"""Which alerts of one batch are one finding: those identical but for their time (``time``,
``TIME_FIELDS``, the time prefix of ``output``) and shipped from the same cluster, node and
instance. Pure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from handlers.alerts import AlertRecord, ObservedTime, observed_time
from handlers.names import parse_priority

# Falco's fields that differ between otherwise identical alerts only because time passed:
# evt.time and evt.time.* (the event time), and the other renderings of time Falco has.
TIME_FIELDS = frozenset(
    {
        "evt.time",
        "evt.time.s",
        "evt.time.iso8601",
        "evt.datetime",
        "evt.datetime.s",
        "evt.rawtime",
        "evt.rawtime.s",
        "evt.rawtime.ns",
        "evt.reltime",
        "evt.reltime.s",
        "evt.reltime.ns",
        "evt.deltatime",
        "evt.deltatime.s",
        "evt.deltatime.ns",
    }
)

_KEYS_KEYED_APART = frozenset({"time", "output", "output_fields", "priority"})
# Falco starts `output` with the event time: "13:44:05.478445995: " or, with
# time_format_iso_8601, "2016-08-04T16:17:57.881785348+0000: ".
_OUTPUT_TIME_PREFIX = re.compile(
    r"(?:\d{4}-\d{2}-\d{2}T)?\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?: ",
    re.ASCII,
)
_NO_FIELDS: dict[str, Any] = {}


@dataclass(slots=True)
class Group:
    record: AlertRecord
    first: ObservedTime
    last: ObservedTime
    count: int
    key: Any  # the full key, or None for an alert no other of its batch shared


class Coalescer:
    """Groups a batch's alerts as they come, keeping one record per group (its earliest alert):
    a storm of identical alerts costs the memory of one.

    Most alerts of a batch repeat nothing, and the full key (every value of the alert) costs more
    than the rest of coalescing. So records are first sorted by a cheap key that equal full keys
    always share (_bucket_key); a full key is computed only once a second record lands in the
    same bucket (for both).
    """

    __slots__ = ("_buckets", "_order")

    def __init__(self) -> None:
        # bucket key -> the bucket's only group (full key not computed yet), or its groups by
        # full key
        self._buckets: dict[Any, Group | dict[Any, Group]] = {}
        self._order: list[Group] = []

    def add(self, record: AlertRecord) -> None:
        observed = observed_time(record)
        bucket_key = _bucket_key(record)
        bucket = self._buckets.get(bucket_key)
        if bucket is None:
            group = Group(record, observed, observed, 1, None)
            self._buckets[bucket_key] = group
            self._order.append(group)
            return
        if type(bucket) is Group:
            alone = bucket
            alone.key = full_key(alone.record)
            bucket = self._buckets[bucket_key] = {alone.key: alone}
        key = full_key(record)
        group = bucket.get(key)  # type: ignore[union-attr]
        if group is None:
            group = bucket[key] = Group(record, observed, observed, 1, key)  # type: ignore[index]
            self._order.append(group)
            return
        group.count += 1
        if observed.ns < group.first.ns:
            group.record, group.first = record, observed
        if observed.ns > group.last.ns:
            group.last = observed

    def groups(self) -> list[Group]:
        """The groups in order of first appearance, each led by its earliest alert."""
        return self._order


def groups(records: Iterable[AlertRecord]) -> list[Group]:
    """The batch's groups in order of first appearance, each led by its earliest alert."""
    coalescer = Coalescer()
    for record in records:
        coalescer.add(record)
    return coalescer.groups()


def strip_time_prefix(output: str) -> str:
    """Falco's `output` without the event time it starts with."""
    match = _OUTPUT_TIME_PREFIX.match(output)
    return output[match.end() :] if match else output


def _coalesce_key(record: AlertRecord) -> tuple[Any, ...]:
    """Everything about the alert but its time, as one hashable value (TypeError if a value is
    unhashable), each value with its type so that 1, 1.0 and true stay different."""
    alert = record.alert
    fields = alert.get("output_fields")
    if type(fields) is dict:
        moments = TIME_FIELDS.intersection(fields)
        if moments:
            fields = {k: v for k, v in fields.items() if k not in moments}
        values = tuple(fields.values())
        frozen_fields: Any = (tuple(fields), values, tuple(map(type, values)))
    else:
        frozen_fields = _frozen(fields)
    output = alert.get("output")
    frozen_output = strip_time_prefix(output) if type(output) is str else _frozen(output)
    rest = tuple((k, _frozen(v)) for k, v in alert.items() if k not in _KEYS_KEYED_APART)
    where = (record.cluster_name, record.instance_id, record.node_name)
    return (parse_priority(alert.get("priority")), frozen_output, frozen_fields, rest, *where)


def _bucket_key(record: AlertRecord) -> tuple[Any, ...]:
    """A cheap key that two records share whenever their full keys are equal: the parts that tell
    most alerts apart. Only values whose equal JSON means equal value (ASCII text, integers)
    count; any other is None here, and the full keys decide."""
    alert = record.alert
    output = alert.get("output")
    output = strip_time_prefix(output) if type(output) is str else None
    fields = alert.get("output_fields")
    if type(fields) is not dict:
        fields = _NO_FIELDS
    return (
        _plain(output),
        _plain(fields.get("proc.pid")),
        _plain(fields.get("container.id")),
        _plain(fields.get("ka.target.name")),
        record.cluster_name,
        record.instance_id,
        record.node_name,
    )


def _plain(value: Any) -> str | int | None:
    kind = type(value)
    if kind is int or (kind is str and value.isascii()):
        return value  # type: ignore[no-any-return]
    return None


def _exact_coalesce_key(record: AlertRecord) -> tuple[Any, ...]:
    """The full key of an alert with an unhashable value: its JSON without the time."""
    alert = record.alert
    probe = dict(alert)
    probe.pop("time", None)
    probe["priority"] = parse_priority(alert.get("priority"))
    output = alert.get("output")
    if isinstance(output, str):
        probe["output"] = strip_time_prefix(output)
    fields = alert.get("output_fields")
    if isinstance(fields, dict):
        probe["output_fields"] = {k: v for k, v in fields.items() if k not in TIME_FIELDS}
    try:
        content = json.dumps(probe, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        return ("uncomparable", id(record))  # never coalesced
    return ("json", content, record.cluster_name, record.instance_id, record.node_name)


def full_key(record: AlertRecord) -> tuple[Any, ...]:
    """Everything about the alert but its time, as one hashable value."""
    key = _coalesce_key(record)
    try:
        hash(key)
    except TypeError:
        return _exact_coalesce_key(record)
    return key


def _frozen(value: Any) -> Any:
    kind = type(value)
    if kind is list:
        return (kind, tuple(value), tuple(map(type, value)))
    return (kind, value)
