"""CloudWatch Logs subscription payload -> log events -> Falco alerts (or skips). Pure: no I/O.

What counts as a Falco alert
----------------------------
A JSON object with

* ``rule``: a string with at least one non-whitespace character, and
* ``priority``: a string naming one of Falco's eight priorities, in any letter case
  (``FALCO_PRIORITIES``).

Nothing else is required. Every other key (``time``, ``output``, ``output_fields``, ``tags``,
``source``, ``hostname``, ...) is optional and may have any type: Falco < 0.30 has no
``source``/``tags``, < 0.32 no ``hostname``, and ``output``/``output_fields`` can be switched off.
``findings.py`` checks each field's type where it uses it, so an odd value degrades one field of
the finding instead of losing the alert.

Where the alert is looked for in a log event's message, first match wins:

1. the record's ``log`` field, a JSON string (CRI parser; optionally with the ``aws`` filter's keys,
   a ``kubernetes`` object and ``cluster_name`` beside it), or already an object;
2. the message itself: a raw Falco alert, or an alert merged at the top level of a Fluent Bit
   record (``Merge_Log On`` without a key). The merge can leave the CRI ``time`` in place of
   Falco's, so the time is rebuilt from ``output_fields["evt.time"]`` when Falco sent it;
3. a merge key: ``data`` (aws-for-fluent-bit), ``log_processed``, or any key whose value is an
   object with ``rule`` and ``priority``.

Anything else is a ``Skip``: ``not_json`` when the Falco line (the message, or the record's ``log``
string) is not JSON, e.g. Falco's banner and stderr lines or alerts sent with ``json_output``
off; ``not_falco_alert`` for JSON that is not an alert object. A skip's detail says what was wrong
without quoting the payload.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import re
import sys
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, NamedTuple

from handlers.names import FALCO_PRIORITIES, PRIORITY_BY_LOWER, PRIORITY_BY_NAME

__all__ = ["FALCO_PRIORITIES"]


SKIP_REASONS = ("not_json", "not_falco_alert", "internal_event", "below_min_priority")

# A skip's detail goes to the logs for every skipped event: keep it to a line.
MAX_SKIP_DETAIL = 160


# Keys the aws-for-fluent-bit `aws` filter can add to a record.
AWS_FILTER_KEYS = (
    "ec2_instance_id",
    "ec2_instance_type",
    "az",
    "account_id",
    "private_ip",
    "vpc_id",
    "ami_id",
    "hostname",
)
MERGE_KEYS = ("data", "log_processed")

# Keys that belong to the Fluent Bit record, never to Falco's alert. `hostname` is missing on
# purpose: Falco sends one too, and in a top-level merge the two cannot be told apart.
_RECORD_ONLY_KEYS = frozenset(
    {"stream", "_p", "log", "kubernetes", "cluster_name", "date", "@timestamp"}
    | (set(AWS_FILTER_KEYS) - {"hostname"})
)

# Without the CRI parser, Fluent Bit ships the container runtime's raw line:
# "<RFC 3339 time> <stdout|stderr> <F|P> <line>".
_CRI_LINE = re.compile(r"\S+ (?:stdout|stderr) [FP] ")

# Falco sends the event time twice: `time` and, as integer nanoseconds, this output field
# (`evt.time.iso8601` when time_format_iso_8601 is on).
EVENT_TIME_FIELDS = ("evt.time", "evt.time.iso8601")

# json.loads(text) is this scanner, from a default JSONDecoder, run from the first non-space
# character, with checks around it (see _load_json_line).
_scan_json = json.JSONDecoder().scan_once

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NS_PER_S = 1_000_000_000
_DATE_TIME_PATTERN = r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}"
_RFC3339 = re.compile(rf"({_DATE_TIME_PATTERN})(?:\.(\d+))?([Zz]|[+-]\d{{2}}:?\d{{2}})", re.ASCII)


# LogEvent, AlertRecord and Skip are made once per log event and never changed afterwards. They
# are not frozen: a frozen dataclass sets each field through object.__setattr__, which made
# building them ~4x as costly (bench/handler_bench.py builds 2,000 per 1,000 alerts).


@dataclass(slots=True)
class LogEvent:
    id: str  # CloudWatch log event id (unique per event)
    timestamp_ms: int
    message: str


@dataclass(frozen=True, slots=True)
class LogBatch:
    message_type: str  # "DATA_MESSAGE" | "CONTROL_MESSAGE"
    owner: str
    log_group: str
    log_stream: str
    events: list[LogEvent]


class InvalidEvent(ValueError):
    """The subscription envelope itself is malformed (not base64/gzip/JSON, keys missing)."""


@dataclass(slots=True)
class AlertRecord:
    alert: dict[str, Any]  # the Falco alert object (rule, priority, time, output, ...)
    log_event_id: str
    timestamp_ms: int  # CloudWatch event timestamp: fallback when the alert has no usable `time`
    cluster_name: str | None  # from the record (Fluent Bit adds `cluster_name`), else None
    instance_id: str | None  # from the aws filter's `ec2_instance_id`
    node_name: str | None  # kubernetes.host, the aws filter's hostname, or the alert's hostname
    kubernetes: dict[str, Any] | None  # the kubernetes filter's object (it describes Falco's pod)
    # Addition to the contract: the aws filter's string keys (instance type, az, private_ip,
    # vpc_id, ami_id, ...), so the node's resource can carry them.
    aws: dict[str, str] | None = None
    # What was unusual but kept, for the logs (e.g. an integer too long to convert, kept as text).
    note: str | None = None


@dataclass(slots=True)
class Skip:
    log_event_id: str
    reason: str  # one of SKIP_REASONS
    detail: str  # short human text, safe to log (no whole payloads)


def decode_subscription_event(event: Mapping[str, Any]) -> LogBatch:
    """Decode ``{"awslogs": {"data": base64(gzip(JSON))}}``; InvalidEvent says what is wrong."""
    awslogs = event.get("awslogs") if isinstance(event, Mapping) else None
    if not isinstance(awslogs, Mapping):
        raise InvalidEvent("not a CloudWatch Logs subscription event: no 'awslogs' object")
    data = awslogs.get("data")
    if not isinstance(data, str | bytes):
        raise InvalidEvent("awslogs.data is missing or not a string")
    try:
        compressed = base64.b64decode(data)
    except (binascii.Error, ValueError) as exc:
        raise InvalidEvent(f"awslogs.data is not base64: {exc}") from exc
    raw = _gunzip(compressed)
    del compressed
    # json.loads(bytes) would decode them into a str and hold both while it parses: a 1 MB storm
    # payload inflates to ~40 MB. Decoded here, the bytes are freed before the parse.
    try:
        text = raw.decode(json.detect_encoding(raw), "surrogatepass")
    except UnicodeDecodeError as exc:
        raise InvalidEvent(
            f"awslogs.data is not JSON text: {exc.reason} at byte {exc.start}"
        ) from exc
    del raw
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidEvent(f"awslogs.data does not hold JSON: {_brief(exc)}") from exc
    del text
    if not isinstance(payload, dict):
        raise InvalidEvent(f"awslogs.data holds a JSON {_json_kind(payload)}, not an object")

    message_type = _required_str(payload, "messageType")
    owner = _required_str(payload, "owner")
    log_group = _required_str(payload, "logGroup")
    log_stream = _required_str(payload, "logStream")
    raw_events = payload.get("logEvents")
    if not isinstance(raw_events, list):
        raise InvalidEvent("payload key 'logEvents' is missing or not a list")
    events = [_log_event(index, item) for index, item in enumerate(raw_events)]
    return LogBatch(message_type, owner, log_group, log_stream, events)


# A 1 MB (Lambda's asynchronous limit) payload of repetitive alerts inflates to ~30 MB; a gzip
# stream that inflates beyond this is refused before it can exhaust the function's memory.
MAX_DECOMPRESSED_BYTES = 64 * 1024 * 1024


def _gunzip(compressed: bytes) -> bytes:
    """The one gzip member CloudWatch Logs sends. Anything after it (a second member, trailing
    bytes), a cut stream or one that inflates beyond MAX_DECOMPRESSED_BYTES is refused: it is
    not what CloudWatch Logs sends, and half-reading it would lose its rest silently."""
    # wbits 16 + MAX_WBITS: a gzip stream, as CloudWatch Logs sends it.
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        raw = inflater.decompress(compressed, MAX_DECOMPRESSED_BYTES)
    except zlib.error as exc:
        raise InvalidEvent(f"awslogs.data is not gzip: {exc}") from exc
    if inflater.unconsumed_tail:
        raise InvalidEvent(
            f"awslogs.data inflates to more than {MAX_DECOMPRESSED_BYTES} bytes; refused"
        )
    if not inflater.eof:
        raise InvalidEvent("awslogs.data is a cut gzip stream (it ends before its last block)")
    if inflater.unused_data:
        raise InvalidEvent(
            f"awslogs.data has {len(inflater.unused_data)} bytes after its gzip stream (a second "
            "gzip member or trailing bytes); CloudWatch Logs sends exactly one member"
        )
    return raw


def parse_log_event(event: LogEvent) -> AlertRecord | Skip:
    """One log event -> the Falco alert in it, or a Skip saying why not. Never raises."""
    try:
        return _parse(event)
    except Exception as exc:
        # One poison record must not fail the batch (Lambda would retry every other alert with
        # it). The tests assert this branch is never reached, so a bug here still shows.
        return Skip(event.id, "not_falco_alert", f"parser error: {type(exc).__name__}")


def falco_time_from_ns(ns: int) -> str:
    """Integer nanoseconds since the epoch -> RFC 3339 in UTC with 9 fractional digits, as Falco
    writes ``time``. Raises OverflowError/ValueError outside years 1-9999."""
    seconds, fraction = divmod(ns, _NS_PER_S)
    moment = _EPOCH + timedelta(seconds=seconds)
    return f"{date_time_text(moment)}.{fraction:09d}Z"


def event_time_ns(output_fields: Any) -> int | None:
    """The event time Falco put in output_fields as integer nanoseconds, if it did."""
    if not isinstance(output_fields, dict):
        return None
    for key in EVENT_TIME_FIELDS:
        value = output_fields.get(key)
        if type(value) is int:
            return value
    return None


class ObservedTime(NamedTuple):
    ns: int  # for ordering
    text: str  # RFC 3339, UTC, "Z"
    from_alert: bool  # False: only the CloudWatch timestamp was usable


def observed_time(record: AlertRecord) -> ObservedTime:
    """When the alert happened: ``time``, else ``output_fields["evt.time"]`` (integer ns), else
    the CloudWatch event timestamp (ms)."""
    alert = record.alert
    value = alert.get("time")
    if isinstance(value, str):
        parsed = _parse_rfc3339(value)
        if parsed is not None:
            return parsed
    ns = event_time_ns(alert.get("output_fields"))
    if ns is not None:
        with contextlib.suppress(OverflowError, ValueError):
            return ObservedTime(ns, falco_time_from_ns(ns), True)
    milliseconds = record.timestamp_ms
    try:
        seconds, fraction = divmod(milliseconds, 1000)
        text = f"{date_time_text(_EPOCH + timedelta(seconds=seconds))}.{fraction:03d}Z"
    except (OverflowError, ValueError, TypeError):
        milliseconds, text = 0, "1970-01-01T00:00:00.000Z"
    return ObservedTime(milliseconds * 1_000_000, text, False)


def _parse_rfc3339(value: str) -> ObservedTime | None:
    match = _RFC3339.fullmatch(value.strip())
    if match is None:
        return None
    date_time, fraction, offset = match.groups()
    utc = _utc_seconds(date_time, "Z" if offset in ("Z", "z") else offset)
    if utc is None:
        return None
    seconds, utc_text = utc
    digits = fraction[:9] if fraction else ""  # RFC 3339 allows more; ASFF takes up to 9
    ns = seconds * 1_000_000_000 + (int(digits.ljust(9, "0")) if digits else 0)
    return ObservedTime(ns, f"{utc_text}.{digits}Z" if digits else f"{utc_text}Z", True)


@lru_cache(maxsize=512)
def _utc_seconds(date_time: str, offset: str) -> tuple[int, str] | None:
    """("2024-05-25T13:44:05", "Z" | "+02:00") -> seconds since the epoch, UTC text. Cached:
    a batch's alerts share most of their seconds."""
    try:
        moment = datetime(
            int(date_time[0:4]),
            int(date_time[5:7]),
            int(date_time[8:10]),
            int(date_time[11:13]),
            int(date_time[14:16]),
            int(date_time[17:19]),
            tzinfo=UTC,
        )
        if offset != "Z":
            shift = timedelta(hours=int(offset[1:3]), minutes=int(offset[-2:]))
            moment = moment - shift if offset[0] == "+" else moment + shift
        return (moment - _EPOCH) // timedelta(seconds=1), date_time_text(moment)
    except (OverflowError, ValueError):
        return None


def date_time_text(moment: datetime) -> str:
    """``YYYY-MM-DDThh:mm:ss`` (no fraction, no zone). strftime pads years below 1000
    differently per platform, so by hand."""
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
        f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    )


def _required_str(payload: dict[str, Any], key: str) -> str:
    value = payload.get(key)
    if not isinstance(value, str):
        raise InvalidEvent(f"payload key {key!r} is missing or not a string")
    return value


def _log_event(index: int, item: Any) -> LogEvent:
    if not isinstance(item, dict):
        raise InvalidEvent(f"logEvents[{index}] is a JSON {_json_kind(item)}, not an object")
    event_id = item.get("id")
    timestamp = item.get("timestamp")
    message = item.get("message")
    if not isinstance(event_id, str):
        raise InvalidEvent(f"logEvents[{index}].id is missing or not a string")
    if isinstance(timestamp, float) and timestamp.is_integer():
        timestamp = int(timestamp)
    if type(timestamp) is not int:
        raise InvalidEvent(f"logEvents[{index}].timestamp is missing or not an integer")
    if not isinstance(message, str):
        raise InvalidEvent(f"logEvents[{index}].message is missing or not a string")
    return LogEvent(event_id, timestamp, message)


def _parse(event: LogEvent) -> AlertRecord | Skip:
    notes: list[str] = []
    outcome = _parse_noting(event, notes)
    if notes and isinstance(outcome, AlertRecord):
        outcome.note = "; ".join(notes)
    return outcome


def _parse_noting(event: LogEvent, notes: list[str]) -> AlertRecord | Skip:
    message = event.message
    try:
        outer = _load_json_line(message, notes)
    except (ValueError, RecursionError) as exc:
        return Skip(event.id, "not_json", _detail(f"message is not JSON: {_brief(exc)}"))
    if not isinstance(outer, dict):
        return Skip(event.id, "not_falco_alert", f"message is a JSON {_json_kind(outer)}")

    log_problem = None
    log = outer.get("log")
    if log is not None:
        if isinstance(log, str):
            try:
                log = _load_json_line(log, notes)
            except (ValueError, RecursionError) as exc:
                log_problem = ("not_json", f"record's log field is not JSON: {_brief(exc)}")
                log = None
        if isinstance(log, dict):
            problem = _alert_problem(log)
            if problem is None:
                return _record(event, log, outer)
            log_problem = ("not_falco_alert", f"record's log field: {problem}")
        elif log is not None:
            log_problem = ("not_falco_alert", f"record's log field is a JSON {_json_kind(log)}")

    top_problem = _alert_problem(outer)
    if top_problem is None:
        if _RECORD_ONLY_KEYS.isdisjoint(outer):
            return _record(event, outer, None)
        return _record(event, _unmerge(outer), outer)

    for key in MERGE_KEYS:
        candidate = outer.get(key)
        if isinstance(candidate, dict) and _alert_problem(candidate) is None:
            return _record(event, candidate, outer)
    for candidate in outer.values():
        if (
            isinstance(candidate, dict)
            and "rule" in candidate
            and "priority" in candidate
            and _alert_problem(candidate) is None
        ):
            return _record(event, candidate, outer)

    if log_problem is not None:
        reason, detail = log_problem
        return Skip(event.id, reason, _detail(detail))
    return Skip(event.id, "not_falco_alert", _detail(f"JSON object: {top_problem}"))


def _load_json_line(line: str, notes: list[str]) -> Any:
    if line[:1] == "{":
        # The usual line: one JSON object and nothing else. json.loads would do exactly this
        # scan after checks that cost as much as a small alert's parse; any other outcome
        # (trailing text, an error) goes the general way below, which says what is wrong.
        try:
            value, end = _scan_json(line, 0)
        except (StopIteration, ValueError, RecursionError):
            pass
        else:
            if end == len(line):
                return value
    stripped = line.lstrip()
    if stripped[:1] not in ("{", "[") and (match := _CRI_LINE.match(stripped)):
        stripped = stripped[match.end() :]
    try:
        return json.loads(stripped)
    except ValueError as exc:
        if "integer string conversion" not in str(exc):
            raise
    # Valid JSON with an integer longer than Python converts (sys.get_int_max_str_digits(),
    # 4,300 by default): such integers are kept as their digits, and the record says so.
    return _lenient_decoder(notes).decode(stripped)


def _lenient_decoder(notes: list[str]) -> json.JSONDecoder:
    limit = sys.get_int_max_str_digits()

    def integer(digits: str) -> int | str:
        length = len(digits.lstrip("-"))
        if limit and length > limit:
            notes.append(f"an integer of {length} digits (more than {limit}) was kept as text")
            return digits
        return int(digits)

    return json.JSONDecoder(parse_int=integer)


def _alert_problem(candidate: dict[str, Any]) -> str | None:
    """Why this object is not a Falco alert, or None when it is one."""
    rule = candidate.get("rule")
    if not isinstance(rule, str):
        return "no 'rule'" if rule is None else f"'rule' is a JSON {_json_kind(rule)}"
    if not rule.strip():
        return "'rule' is blank"
    priority = candidate.get("priority")
    if not isinstance(priority, str):
        if priority is None:
            return "no 'priority'"
        return f"'priority' is a JSON {_json_kind(priority)}"
    if priority not in PRIORITY_BY_NAME and priority.strip().lower() not in PRIORITY_BY_LOWER:
        return f"'priority' {_preview(priority)} is not a Falco priority"
    return None


def _unmerge(record: dict[str, Any]) -> dict[str, Any]:
    """The alert out of a record it was merged into at the top level."""
    alert = {key: value for key, value in record.items() if key not in _RECORD_ONLY_KEYS}
    ns = event_time_ns(alert.get("output_fields"))
    if ns is not None:
        # The merge may have kept the CRI `time` (when the line was written) instead of Falco's
        # (when the event happened); Falco's evt.time is the event time, so rebuild it.
        with contextlib.suppress(OverflowError, ValueError):
            alert["time"] = falco_time_from_ns(ns)
    return alert


def _record(event: LogEvent, alert: dict[str, Any], record: dict[str, Any] | None) -> AlertRecord:
    # AlertRecord's fields by position (keywords cost more than the rest of this function):
    # alert, log_event_id, timestamp_ms, cluster_name, instance_id, node_name, kubernetes, aws.
    if record is None:
        node = _nonblank(alert.get("hostname"))
        return AlertRecord(alert, event.id, event.timestamp_ms, None, None, node, None)
    kubernetes = record.get("kubernetes")
    if not isinstance(kubernetes, dict):
        kubernetes = None
    aws = {}
    if "ec2_instance_id" in record or "hostname" in record:
        for key in AWS_FILTER_KEYS:
            if key in record:
                value = record[key]
                if type(value) is str and value and not value.isspace():
                    aws[key] = value.strip()
    node_name = (
        (kubernetes is not None and _nonblank(kubernetes.get("host")))
        or aws.get("hostname")
        or _nonblank(alert.get("hostname"))
    )
    return AlertRecord(
        alert,
        event.id,
        event.timestamp_ms,
        _nonblank(record.get("cluster_name")),
        aws.get("ec2_instance_id"),
        node_name or None,
        kubernetes,
        aws or None,
    )


def _nonblank(value: Any) -> str | None:
    if isinstance(value, str):
        value = value.strip()
        if value:
            return value
    return None


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _brief(exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at char {exc.pos}"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return type(exc).__name__


def _preview(value: str, limit: int = 24) -> str:
    shown = value if len(value) <= limit else value[:limit] + "…"
    return ascii(shown)


def _detail(text: str) -> str:
    return text if len(text) <= MAX_SKIP_DETAIL else text[: MAX_SKIP_DETAIL - 1] + "…"
