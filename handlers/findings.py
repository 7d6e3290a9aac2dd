"""Falco alert -> ASFF finding: mapping, filtering and coalescing. Pure: no AWS client, no
environment, no clock.

Decisions a reader needs (the tests pin each one):

* ``Id`` = ``falco/alert/<sha256>`` of the alert's identity: rule, priority, source, hostname, the
  event time (normalised to UTC), ``output``, the output fields and every other key of the alert,
  and the record's cluster. Re-delivery of the same log event gives the same Id, so Security Hub
  updates the finding instead of adding one; any other alert, including the same rule a
  nanosecond later or with other output fields, gets another. Without a usable event time the
  CloudWatch log event id stands in for it.
* ``GeneratorId`` = ``falco/rule/<slug of the rule name>``, stable per rule.
* Times: when the alert happened (``alerts.observed_time``), normalised to UTC.
* Severity: Emergency/Alert/Critical -> CRITICAL, Error -> HIGH, Warning -> MEDIUM, Notice -> LOW,
  Informational/Debug -> INFORMATIONAL; ``Original`` is Falco's priority.
* Types: MITRE tags -> ASFF types (``classification``); technique tags become classifiers under
  each tactic (``TTPs/Execution/T1059``). Without a MITRE tag: ``Unusual Behaviors/Container`` for a
  container, ``/Process`` for a host or unknown process, ``/User`` for audit-log sources
  (k8s_audit, cloud audit logs), ``/Application`` for other plugin sources.
* Resources, primary first: the container (``k8s/<cluster>/<ns>/pods/<pod>/<container>``) or the
  Kubernetes object of an audit event (``k8s/<cluster>/<ns>/<resource>/<name>``, ``-`` where a part
  is unknown); for syscall alerts the node (``AwsEc2Instance`` when the instance id is known, else
  ``Other`` ``k8s/<cluster>/-/nodes/<node>``); the EKS cluster when its name is known.
* ProductFields: ``falco/rule``, ``falco/priority``, ``falco/source``, ``falco/tags``,
  ``falco/hostname``, ``falco/log_group`` and ``falco/log_stream`` (in the Lambda),
  ``falco/log_event_id``, and each non-null output field as
  ``falco/output_fields/<key>``; at most ``asff.OWN_PRODUCT_FIELDS`` (45) pairs so the
  ``aws/securityhub/*`` keys Security Hub adds still fit in 50. When output fields do not fit,
  container/k8s/proc/user/fd/ka fields go first and ``falco/output_fields_dropped`` counts the rest.
* Coalescing (one invocation; ``coalescing.groups`` says which alerts are one): one finding per
  group, the earliest alert's, observed until the latest, with ``falco/occurrences``,
  ``falco/first_seen`` and ``falco/last_seen``. No two findings of one batch share an Id.
* Every ASFF limit holds, whatever the input (``asff``: limits, UTF-16 lengths, cut text and
  identifiers, escaped control characters); a finding over 240 KB is shrunk (``_within_size``).
* Findings are plain data (``asff.Finding``), serialized once (``asff.finding_json``).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple, TypedDict, TypeVar

from handlers import asff, coalescing
from handlers.alerts import AlertRecord, ObservedTime, Skip, falco_time_from_ns, observed_time
from handlers.asff import (
    Finding,
    FindingProcess,
    FindingResource,
    FindingSeverity,
    ProviderFields,
    escaped,
    finding_json,
    identifier,
    sha256,
    short_hash,
    truncate,
)
from handlers.audit import AuditPieces, audit_pieces
from handlers.caching import bounded_cache
from handlers.classification import (
    APPLICATION_BEHAVIOR,
    AUDIT_LOG_SOURCES,
    CONTAINER_BEHAVIOR,
    PROCESS_BEHAVIOR,
    SEVERITY_LABELS,
    USER_BEHAVIOR,
    mitre_types,
)
from handlers.names import (
    COMPANY_NAME,
    FALCO_PRIORITIES,
    FINDING_ID_PREFIX,
    GENERATOR_PREFIX,
    PRODUCT_NAME,
    custom_product_arn,
    eks_cluster_arn,
    parse_priority,
)

__all__ = [
    "Finding",
    "FindingBuilder",
    "FindingContext",
    "behavior_finding_text",
    "coalesce",
    "coalesce_texts",
    "filter_alert",
    "finding_json",
    "to_finding",
    "to_finding_text",
]

_PRIORITY_RANK = {name: rank for rank, name in enumerate(FALCO_PRIORITIES)}

SYSCALL_SOURCES = frozenset({"syscall", "syscalls"})

# The output fields an analyst reaches for first; they win when not all fit in ProductFields.
IMPORTANT_FIELD_PREFIXES = ("container.", "k8s.", "proc.", "user.", "fd.", "ka.")
OUTPUT_FIELD_PREFIX = "falco/output_fields/"
DROPPED_FIELDS_KEY = "falco/output_fields_dropped"

_SLUG_BREAK = re.compile(r"[^a-z0-9]+")
_NOT_AVAILABLE = "<NA>"  # how Falco renders a field it could not resolve
_NO_FIELDS: dict[str, Any] = {}
# The aws filter's keys that describe the node, and where AwsEc2Instance details keep them.
_INSTANCE_DETAIL_KEYS = ("ec2_instance_type", "ami_id", "vpc_id", "private_ip")
_INSTANCE_DETAIL_FIELDS = ("Type", "ImageId", "VpcId", "IpV4Addresses")
_CONTAINER_DETAIL_KEYS = (
    "container.image.repository",
    "container.image.tag",
    "container.image.digest",
    "container.start_ts",
    "container.privileged",
)
_MISSING = object()
_T = TypeVar("_T")
# Fewer than 1,000 digits: prints well within a ProductFields value (and within the 4,300 digits
# Python converts to text at most). Falco's nanosecond times have 19.
_SHORT_INTEGER = 10**999
_SHORT_TEXT = asff.MAX_PRODUCT_FIELD_VALUE_LENGTH // 2


@dataclass(frozen=True, slots=True)
class FindingContext:
    account_id: str
    region: str
    partition: str = "aws"
    cluster_name: str | None = None  # default when the record does not carry one (env CLUSTER_NAME)
    min_priority: str = "Debug"  # alerts below it are skipped ("below_min_priority")
    # Where the batch came from (the subscription event's logGroup/logStream), so that a finding
    # names the log group and stream to search for its raw alert; None outside the Lambda.
    log_group: str | None = None
    log_stream: str | None = None

    def __post_init__(self) -> None:
        # A bad MIN_PRIORITY fails the cold start with a message naming the allowed values,
        # instead of failing (or silently passing) every alert later.
        object.__setattr__(self, "min_priority", parse_priority(self.min_priority))


def filter_alert(record: AlertRecord, ctx: FindingContext) -> Skip | None:
    """A Skip for alerts that should not become findings, else None."""
    alert = record.alert
    rule = alert.get("rule")
    if alert.get("source") == "internal" or (
        isinstance(rule, str) and rule.startswith("Falco internal:")
    ):
        # Falco's own health (dropped syscalls, ...) belongs in metrics, not in Security Hub.
        return Skip(record.log_event_id, "internal_event", _short(f"Falco internal event: {rule}"))
    priority = _canonical_priority(alert)
    if _PRIORITY_RANK[priority] > _PRIORITY_RANK[ctx.min_priority]:
        return Skip(
            record.log_event_id,
            "below_min_priority",
            f"priority {priority} is below the minimum {ctx.min_priority}",
        )
    return None


def to_finding(record: AlertRecord, ctx: FindingContext) -> Finding:
    """One ASFF finding for one alert, within every ASFF limit."""
    observed = observed_time(record)
    return _finding(record, _Call(ctx), observed, observed, None, None)[0]


def to_finding_text(record: AlertRecord, ctx: FindingContext) -> tuple[str, str]:
    """:func:`to_finding` as its Id and its :func:`finding_json` text."""
    observed = observed_time(record)
    finding, text = _finding(record, _Call(ctx), observed, observed, None, None)
    return finding["Id"], text


def coalesce(records: Sequence[AlertRecord], ctx: FindingContext) -> list[Finding]:
    """Alerts identical but for their time -> one finding each, in order of first appearance.

    The finding is the earliest alert's (same Id as that alert alone would get), observed from
    the earliest to the latest time; ProductFields add ``falco/occurrences``, ``falco/first_seen``
    and ``falco/last_seen``. The same batch always gives the same findings, UpdatedAt included.
    """
    return [finding for finding, _ in _coalesced(records, ctx)]


def coalesce_texts(
    records: Sequence[AlertRecord], ctx: FindingContext
) -> Iterator[tuple[str, str]]:
    """:func:`coalesce` as each finding's Id and :func:`finding_json` text, one at a time: what
    the handler sends (it keeps nothing else of a finding)."""
    for finding, text in _coalesced(records, ctx):
        yield finding["Id"], text


def _coalesced(
    records: Sequence[AlertRecord], ctx: FindingContext
) -> Iterator[tuple[Finding, str]]:
    call = _Call(ctx)
    for group in coalescing.groups(records):
        yield _group_finding(group, call)


def _group_finding(group: coalescing.Group, call: _Call) -> tuple[Finding, str]:
    occurrences = group.count if group.count > 1 else None
    return _finding(group.record, call, group.first, group.last, occurrences, group.key)


class FindingBuilder:
    """The findings of one batch, one group (or alert) at a time, as Id and finding_json text:
    what the handler streams to Security Hub. The same Ids and texts as :func:`coalesce_texts`
    gives for the batch's records."""

    __slots__ = ("_call",)

    def __init__(self, ctx: FindingContext) -> None:
        self._call = _Call(ctx)

    def group_text(self, group: coalescing.Group) -> tuple[str, str]:
        finding, text = _group_finding(group, self._call)
        return finding["Id"], text

    def alert_text(self, record: AlertRecord) -> tuple[str, str]:
        """One alert alone (not coalesced)."""
        observed = observed_time(record)
        finding, text = _finding(record, self._call, observed, observed, None, None)
        return finding["Id"], text


# --- issue 12 hook: one finding per behaviour and window (handlers/occurrences.py) --------------


def behavior_finding_text(
    record: AlertRecord,
    ctx: FindingContext,
    *,
    finding_id: str,
    first: ObservedTime,
    last: ObservedTime,
    occurrences: int,
    updated_at: str,
    facts: dict[str, str],
) -> tuple[str, str]:
    """``record``'s finding as the finding of its behaviour: the behaviour's Id, count and
    observed times, and ``facts`` (namespace, workload, image, process) in the primary container
    resource's ``Details.Other`` (and the image as its ``ApplicationName``), where suppressions
    (automation rules) can match them."""
    finding, _ = _finding(record, _Call(ctx), first, last, occurrences, None)
    finding["Id"] = finding_id
    finding["UpdatedAt"] = updated_at
    primary = finding["Resources"][0]
    if primary["Type"] == "Container" and facts:
        other = {
            key: truncate(escaped(value), asff.MAX_DETAIL_LENGTH) for key, value in facts.items()
        }
        primary["Details"] = {**primary.get("Details", {}), "Other": other}
        if "Image" in other:  # suppressions match the image here (ResourceApplicationName)
            primary["ApplicationName"] = other["Image"]  # type: ignore[typeddict-unknown-key]
    return finding_id, _within_size(finding)


def generator_id(rule: str) -> str:
    """The GeneratorId of a rule's findings (suppressions match on it)."""
    return _generator_id(rule)


# --- one finding ------------------------------------------------------------------------------


class _Call:
    """What the findings of one call share: the context's parts, and the Ids made so far."""

    __slots__ = ("built", "cluster", "ctx", "ids", "log_fields", "product_arn")

    def __init__(self, ctx: FindingContext) -> None:
        self.ctx = ctx
        self.product_arn = custom_product_arn(ctx.partition, ctx.region, ctx.account_id)
        self.cluster = _clean(ctx.cluster_name)  # for records that do not name theirs
        log_fields = (("falco/log_group", ctx.log_group), ("falco/log_stream", ctx.log_stream))
        self.log_fields = {k: v for k, raw in log_fields if (v := _clean(raw))}
        self.ids: set[str] = set()
        self.built: dict[tuple[Any, ...], Any] = {}

    def once(self, build: Callable[..., _T], *args: Any) -> _T:
        """``build(ctx, *args)``, worked out once per call: a batch comes from one Falco pod on
        one node, so its findings share the node's and the cluster's resources and the images'
        details (the same objects: findings are read-only once built)."""
        key = (build, *args)
        try:
            known = self.built.get(key, _MISSING)
        except TypeError:  # a list or object where Falco sends text: not kept
            return build(self.ctx, *args)
        if known is _MISSING:
            known = self.built[key] = build(self.ctx, *args)
        return known  # type: ignore[no-any-return]

    def unique_id(self, finding_id: str, record: AlertRecord, group_key: Any) -> str:
        """The finding's Id, made distinct from the Ids of the findings made before it."""
        if finding_id in self.ids:
            # Two groups that differ only where the Id does not look (output fields next to an
            # identical output, or the record's metadata). One request must not carry one Id
            # twice: Security Hub would drop one, and failures are reported by Id.
            full_key = (
                coalescing.full_key(record)
                if group_key is None or type(group_key) is int
                else group_key
            )
            identity = f"{finding_id}\x1f{full_key!r}"
            finding_id = FINDING_ID_PREFIX + sha256(identity)
        self.ids.add(finding_id)
        return finding_id


@dataclass(slots=True)
class _Alert:
    """What the finding needs from one alert, read and checked once."""

    record: AlertRecord
    rule: str
    priority: str
    fields: dict[str, Any]
    output: str | None
    source: str | None
    hostname: str | None
    cluster: str | None
    is_audit: bool
    is_container: bool
    is_syscall: bool
    rule_facts: _RuleFacts


def _read_alert(record: AlertRecord, default_cluster: str | None) -> _Alert:
    alert = record.alert
    rule = alert.get("rule")
    if not isinstance(rule, str):
        raise ValueError("the alert has no string 'rule': it did not come from parse_log_event")
    fields = alert.get("output_fields")
    fields = fields if isinstance(fields, dict) else _NO_FIELDS
    output = alert.get("output")
    source = _clean(alert.get("source"))
    container_id = _clean(fields.get("container.id"))
    # Falco < 0.30 sends no `source`: its audit alerts still give themselves away by ka.*.
    is_audit = source == "k8s_audit" or (
        source is None and any(k.startswith("ka.") for k in fields)
    )
    return _Alert(
        record=record,
        rule=rule,
        priority=_canonical_priority(alert),
        fields=fields,
        output=output if isinstance(output, str) else None,
        source=source,
        hostname=_clean(alert.get("hostname")),
        cluster=_clean(record.cluster_name) or default_cluster,
        is_audit=is_audit,
        is_container=not is_audit and container_id not in (None, "host"),
        is_syscall=not is_audit and (source is None or source in SYSCALL_SOURCES),
        rule_facts=_rule_facts(rule),
    )


def _finding(
    record: AlertRecord,
    call: _Call,
    first: ObservedTime,
    last: ObservedTime,
    occurrences: int | None,
    group_key: Any,
) -> tuple[Finding, str]:
    """One finding and its finding_json text, within every ASFF limit."""
    ctx = call.ctx
    alert = _read_alert(record, call.cluster)
    tag_types, tags = _tag_facts(record.alert.get("tags"))
    finding_id = FINDING_ID_PREFIX + _identity_digest(alert, first)
    description, description_cut = _description(alert)
    audit = audit_pieces(alert.fields, alert.cluster) if alert.is_audit else None
    finding: Finding = {
        "SchemaVersion": asff.SCHEMA_VERSION,
        "Id": call.unique_id(finding_id, record, group_key),
        "ProductArn": call.product_arn,
        "ProductName": PRODUCT_NAME,
        "CompanyName": COMPANY_NAME,
        "AwsAccountId": ctx.account_id,
        "Region": ctx.region,
        "CreatedAt": first.text,
        "UpdatedAt": last.text,
        "FirstObservedAt": first.text,
        "LastObservedAt": last.text,
        **_classification(alert, tag_types),  # type: ignore[typeddict-item]
        "Description": description,
        "Resources": _resources(alert, call, audit),
        "ProductFields": _product_fields(
            alert, call, tags, first, last, occurrences, full_output=description_cut
        ),
    }
    process = _process(alert.fields)
    if process:
        finding["Process"] = process
    if audit and audit["network"]:
        finding["Network"] = audit["network"]  # type: ignore[typeddict-item]  # the request's source
    return finding, _within_size(finding)


class _Classification(TypedDict):
    GeneratorId: str
    Title: str
    Types: list[str]
    Severity: FindingSeverity
    FindingProviderFields: ProviderFields


def _classification(alert: _Alert, tag_types: tuple[str, ...]) -> _Classification:
    """What kind of finding it is: generator (one per rule), title, severity and types (twice,
    on purpose: see asff.Finding)."""
    types = tag_types or (_behavior_type(alert),)
    label = SEVERITY_LABELS[alert.priority]
    return {
        "GeneratorId": alert.rule_facts.generator_id,
        "Title": alert.rule_facts.title,
        "Types": list(types),
        "Severity": {"Label": label, "Original": alert.priority},
        "FindingProviderFields": {
            "Severity": {"Label": label, "Original": alert.priority},
            "Types": list(types),
        },
    }


def _within_size(finding: Finding) -> str:
    """The finding's JSON within 240 KB, shrinking the finding if needed: ProductFields values
    ever shorter, then the output fields dropped (and counted), then the Description cut
    to a title's length. Only ProductFields and Description can approach the limit: the caps
    keep everything else small (tests/handlers/test_findings.py builds the largest such alert)."""
    text = finding_json(finding)
    product_fields = finding["ProductFields"]
    cap = asff.MAX_PRODUCT_FIELD_VALUE_LENGTH
    while len(text) > asff.MAX_FINDING_BYTES:
        if cap > 64:
            cap //= 2
            for key, value in product_fields.items():
                product_fields[key] = truncate(value, cap)
        elif any(key.startswith(OUTPUT_FIELD_PREFIX) for key in product_fields):
            dropped = [key for key in product_fields if key.startswith(OUTPUT_FIELD_PREFIX)]
            for key in dropped:
                del product_fields[key]
            earlier = int(product_fields.get(DROPPED_FIELDS_KEY, "0"))
            product_fields[DROPPED_FIELDS_KEY] = str(earlier + len(dropped))
        else:
            finding["Description"] = truncate(finding["Description"], asff.MAX_TITLE_LENGTH)
            return finding_json(finding)
        text = finding_json(finding)
    return text


class _RuleFacts(NamedTuple):
    generator_id: str
    title: str
    field_text: str  # the falco/rule product field


@bounded_cache(maxsize=1024, max_chars=1024)
def _rule_facts(rule: str) -> _RuleFacts:
    """What a finding says of its rule, worked out once per rule name (names up to 1,024
    characters are cached)."""
    text = escaped(rule)
    return _RuleFacts(
        _generator_id(rule),
        truncate(text, asff.MAX_TITLE_LENGTH),
        truncate(text, asff.MAX_PRODUCT_FIELD_VALUE_LENGTH),
    )


def _tag_facts(tags: Any) -> tuple[tuple[str, ...], str | None]:
    """The Types the MITRE tags give (maybe none) and the falco/tags product field, if any."""
    if type(tags) is not list:
        return (), None
    return _string_tag_facts(tuple(tag for tag in tags if isinstance(tag, str)))


@bounded_cache(maxsize=2048, max_chars=2048)
def _string_tag_facts(tags: tuple[str, ...]) -> tuple[tuple[str, ...], str | None]:
    text = escaped(",".join(tags))
    shown = truncate(text, asff.MAX_PRODUCT_FIELD_VALUE_LENGTH) if text.strip() else None
    return mitre_types(tags), shown


def _product_fields(
    alert: _Alert,
    call: _Call,
    tags: str | None,
    first: ObservedTime,
    last: ObservedTime,
    occurrences: int | None,
    *,
    full_output: bool,
) -> dict[str, str]:
    """falco/* facts first, then as many output fields as fit in asff.OWN_PRODUCT_FIELDS pairs."""
    product: dict[str, str] = {
        "falco/rule": alert.rule_facts.field_text,
        "falco/priority": alert.priority,
    }
    facts = (
        ("falco/source", alert.source),
        ("falco/tags", tags),
        ("falco/hostname", alert.hostname),
        *call.log_fields.items(),
        ("falco/log_event_id", _clean(alert.record.log_event_id)),
    )
    product.update((key, value) for key, value in facts if value)
    if occurrences is not None:
        product["falco/occurrences"] = str(occurrences)
        product["falco/first_seen"] = first.text
        product["falco/last_seen"] = last.text
    if full_output and alert.output is not None:
        # The description had to be cut: keep more of Falco's output here.
        output = truncate(escaped(alert.output), asff.MAX_PRODUCT_FIELD_VALUE_LENGTH)
        product["falco/output"] = output

    fields = alert.fields
    room = asff.OWN_PRODUCT_FIELDS - len(product)
    if len(fields) > room:
        fields, dropped = _fields_that_fit(fields, room - 1)  # one pair goes to the count
        if dropped:
            product[DROPPED_FIELDS_KEY] = str(dropped)
    # Two names can make one key once escaped and cut: as in any dict, the key stays where it
    # came first and keeps the last value (Security Hub takes no object with a key twice).
    for name, value in fields.items():
        kind = type(value)
        if kind is str:
            # The usual value: printable (no control characters or lone surrogates), and within
            # the limit in UTF-16 code units because within half of it in characters.
            if value.isprintable() and 0 < len(value) <= _SHORT_TEXT and not value.isspace():
                if value != _NOT_AVAILABLE:
                    product[
                        _cached_field_key(name)
                        if len(name) <= _MAX_CACHED_FIELD_NAME
                        else _field_key(name)
                    ] = value
                continue
        elif kind is int and -_SHORT_INTEGER < value < _SHORT_INTEGER:
            product[
                _cached_field_key(name) if len(name) <= _MAX_CACHED_FIELD_NAME else _field_key(name)
            ] = str(value)
            continue
        elif value is None:
            continue  # "not known": leaving it out keeps room for the fields that are known
        product[_output_field_key(name)] = _render_value(value)
    return product


def _fields_that_fit(fields: dict[str, Any], room: int) -> tuple[dict[str, Any], int]:
    """At most ``room`` known fields, the ones an analyst reaches for first, and how many of the
    known fields did not fit."""
    known = [(key, value) for key, value in fields.items() if _is_known(value)]
    if len(known) <= room + 1:
        return dict(known), 0
    important = [item for item in known if item[0].startswith(IMPORTANT_FIELD_PREFIXES)]
    others = [item for item in known if not item[0].startswith(IMPORTANT_FIELD_PREFIXES)]
    kept = (important + others)[:room]
    return dict(kept), len(known) - len(kept)


def _is_known(value: Any) -> bool:
    return value is not None and value != _NOT_AVAILABLE


def _field_key(key: str) -> str:
    room = asff.MAX_PRODUCT_FIELD_KEY_LENGTH - len(OUTPUT_FIELD_PREFIX)
    return OUTPUT_FIELD_PREFIX + identifier(escaped(key) or "-", room)


# Called for every output field of every alert: lru_cache itself (C), with the key's size checked
# by the caller (_output_field_key) instead of by a bounded_cache wrapper (a Python call each).
_cached_field_key = lru_cache(maxsize=4096)(_field_key)
_MAX_CACHED_FIELD_NAME = 256


def _output_field_key(key: str) -> str:
    """The ProductFields key of an output field; names over 256 characters are not cached."""
    if len(key) <= _MAX_CACHED_FIELD_NAME:
        return _cached_field_key(key)
    return _field_key(key)


def _render_value(value: Any) -> str:
    if isinstance(value, str):
        text = escaped(value)
    elif isinstance(value, bool):
        return "true" if value else "false"
    elif isinstance(value, int | float):
        try:
            text = repr(value)
        except ValueError:  # an integer too long to print
            return "<integer too large to show>"
    else:
        # JSON escapes control characters but not DEL or lone surrogates.
        text = escaped(_canonical_json(value))
    if not text.strip():
        # ASFF values need a non-blank character: show the blank value quoted instead.
        text = json.dumps(text)
    return truncate(text, asff.MAX_PRODUCT_FIELD_VALUE_LENGTH)


def _behavior_type(alert: _Alert) -> str:
    if alert.is_audit or alert.source in AUDIT_LOG_SOURCES:
        return USER_BEHAVIOR
    if not alert.is_syscall:
        return APPLICATION_BEHAVIOR
    return CONTAINER_BEHAVIOR if alert.is_container else PROCESS_BEHAVIOR


def _description(alert: _Alert) -> tuple[str, bool]:
    """The Description, and whether Falco's output had to be cut to fit it."""
    if alert.output is not None:
        # The time prefix repeats FirstObservedAt, and would be wrong for a coalesced finding.
        text = escaped(coalescing.strip_time_prefix(alert.output))
        if text.strip():
            description = truncate(text, asff.MAX_DESCRIPTION_LENGTH)
            return description, description is not text
    # Falco's `output` is off or blank: say what is known instead of leaving a placeholder.
    facts = [
        f"{key}={_render_value(value)}"
        for key, value in alert.fields.items()
        if key.startswith(IMPORTANT_FIELD_PREFIXES) and _is_known(value)
    ]
    where = f" on {alert.hostname}" if alert.hostname else ""
    text = f"Falco rule '{escaped(alert.rule)}' ({alert.priority}) matched{where}"
    if facts:
        text += ": " + " ".join(facts)
    return truncate(text, asff.MAX_DESCRIPTION_LENGTH), False


def _resources(alert: _Alert, call: _Call, audit: AuditPieces | None) -> list[FindingResource]:
    """Primary first: the container, or the audit target and the IAM principal who acted; the
    node; the cluster."""
    record, fields, ctx = alert.record, alert.fields, call.ctx
    cluster = alert.cluster or "-"
    resources: list[FindingResource] = []
    if alert.is_container:
        name = _clean(fields.get("container.name")) or _clean(fields.get("container.id")) or "-"
        namespace = _clean(fields.get("k8s.ns.name"))
        pod = _clean(fields.get("k8s.pod.name"))
        if namespace or pod:
            ref = f"k8s/{cluster}/{namespace or '-'}/pods/{pod or '-'}/{name}"
        else:
            ref = f"container/{_clean(record.node_name) or alert.hostname or '-'}/{name}"
        image = tuple(fields.get(key) for key in _CONTAINER_DETAIL_KEYS)
        details = call.once(_container_details, name, image, tuple(map(type, image)))
        resources.append(_resource("Container", ref, ctx, details))
    elif audit is not None:
        # The Kubernetes object, and the IAM principal who acted (handlers/audit.py).
        for piece in (audit["resource"], audit["actor_resource"]):
            if piece is not None:
                details = piece.get("Details")
                resources.append(_resource(piece["Type"], piece["Id"], ctx, details))  # type: ignore[arg-type]

    if alert.is_syscall:
        # The node the event happened on: for host alerts the subject, for containers the place
        # to cordon. Audit and cloud events happen in an API, not on Falco's node.
        described = tuple(map((record.aws or _NO_FIELDS).get, _INSTANCE_DETAIL_KEYS))
        node = call.once(_node, cluster, record.instance_id, record.node_name, described)
        if node is not None:
            resources.append(node)
    if alert.cluster:
        resources.append(call.once(_cluster, alert.cluster))
    if not resources:
        # ASFF wants at least one resource: name where the alert came from.
        ref = f"falco/{alert.source or 'syscall'}/{alert.hostname or '-'}"
        resources.append(_resource("Other", ref, ctx, None))
    return resources[: asff.MAX_RESOURCES]


def _node(
    ctx: FindingContext,
    cluster: str,
    instance_id: str | None,
    node_name: str | None,
    described: tuple[Any, ...],
) -> FindingResource | None:
    """The EC2 instance, with what the aws filter says of it; else the Kubernetes node."""
    instance_id, node = _clean(instance_id), _clean(node_name)
    if instance_id:
        arn = f"arn:{ctx.partition}:ec2:{ctx.region}:{ctx.account_id}:instance/{instance_id}"
        instance: dict[str, Any] = {}
        for field, value in zip(_INSTANCE_DETAIL_FIELDS, described, strict=True):
            if cleaned := _clean(value):
                instance[field] = [cleaned] if field == "IpV4Addresses" else cleaned
        details = {"AwsEc2Instance": instance} if instance else None
        return _resource("AwsEc2Instance", arn, ctx, details)
    if node:
        ref = f"k8s/{cluster}/-/nodes/{node}"
        return _resource("Other", ref, ctx, {"Other": {"Node": node}})
    return None


def _cluster(ctx: FindingContext, cluster: str) -> FindingResource:
    arn = identifier(
        eks_cluster_arn(ctx.partition, ctx.region, ctx.account_id, cluster),
        asff.MAX_RESOURCE_ID_LENGTH,
    )
    return _resource("AwsEksCluster", arn, ctx, {"AwsEksCluster": {"Name": cluster, "Arn": arn}})


def _resource(
    kind: str, resource_id: str, ctx: FindingContext, details: dict[str, Any] | None
) -> FindingResource:
    resource: FindingResource = {
        "Type": kind,
        "Id": identifier(resource_id, asff.MAX_RESOURCE_ID_LENGTH),
        "Partition": ctx.partition,
        "Region": ctx.region,
    }
    if details:
        resource["Details"] = details
    return resource


def _container_details(
    ctx: FindingContext, name: str, image: tuple[Any, ...], _types: tuple[type, ...]
) -> dict[str, Any]:
    """The Container's details: they say nothing of the pod, so a Deployment's replicas share
    them. ``_types`` keeps 1, 1.0 and true apart as keys of Call.once."""
    repository, tag, digest = (_clean(value) for value in image[:3])
    started, privileged = image[3:]
    details: dict[str, Any] = {"Name": name}
    if repository:
        image = f"{repository}:{tag}" if tag else repository
        details["ImageName"] = truncate(image, asff.MAX_DETAIL_LENGTH)
    if digest:
        # ASFF's ImageId is the image's identifier: Falco's image digest (sha256:...), when the
        # rule outputs it. The container's own id stays in ProductFields (container.full_id).
        details["ImageId"] = truncate(digest, asff.MAX_DETAIL_LENGTH)
    if type(started) is int and started > 0:
        with contextlib.suppress(OverflowError, ValueError):
            details["LaunchedAt"] = falco_time_from_ns(started)
    if type(privileged) is bool:
        details["Privileged"] = privileged
    return {"Container": details}


def _process(fields: dict[str, Any]) -> FindingProcess:
    """What Falco says of the process (empty when nothing)."""
    process: FindingProcess = {}
    name = _clean(fields.get("proc.name"), asff.MAX_PROCESS_NAME_LENGTH)
    if name:
        process["Name"] = name
    path = _clean(fields.get("proc.exepath"), asff.MAX_PROCESS_PATH_LENGTH)
    if path:
        process["Path"] = path
    pid = fields.get("proc.pid")
    if type(pid) is int and 0 <= pid <= asff.MAX_INTEGER:
        process["Pid"] = pid
    parent = fields.get("proc.ppid")
    if type(parent) is int and 0 <= parent <= asff.MAX_INTEGER:
        process["ParentPid"] = parent
    return process


# --- identity, classification, time -----------------------------------------------------------


def _canonical_priority(alert: dict[str, Any]) -> str:
    return parse_priority(alert.get("priority"))  # type: ignore[arg-type]


# The alert's keys the identity names one by one; every other key goes in as JSON.
_IDENTITY_KEYS = frozenset({"rule", "priority", "source", "hostname", "time", "output"})
_FALCO_KEYS = _IDENTITY_KEYS | {"output_fields", "tags"}


def _identity_digest(alert: _Alert, observed: ObservedTime) -> str:
    """Everything that tells two alerts apart: rule, priority, source, hostname, the event time,
    ``output``, the output fields and any other key of the alert (as JSON, in the order Falco
    wrote them, which a re-delivery repeats), and the cluster the record names. Two alerts that
    differ only in ``output_fields`` get different Ids; re-delivery gives the same Id."""
    raw = alert.record.alert
    if _FALCO_KEYS.issuperset(raw):  # Falco's own keys only: the usual alert, encoded cheaper
        rest: Any = [raw.get("output_fields"), raw.get("tags")]
    else:
        rest = {key: value for key, value in raw.items() if key not in _IDENTITY_KEYS}
    if observed.from_alert:
        when: tuple[str, ...] = (observed.text,)
    else:
        # Without the event's own time, the log event id is what tells two alerts apart.
        when = ("", alert.record.log_event_id)
    parts = (
        alert.rule,
        alert.priority,
        alert.source or "",
        alert.hostname or "",
        alert.record.cluster_name or "",
        *when,
        alert.output if alert.output is not None else "",
        _identity_json(rest),
    )
    return sha256("\x1f".join(parts))


def _identity_json(value: Any) -> str:
    try:
        return _IDENTITY_ENCODER.encode(value)
    except (TypeError, ValueError, RecursionError):
        return _canonical_json(value)


_IDENTITY_ENCODER = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, check_circular=False
)


def _generator_id(rule: str) -> str:
    slug = _SLUG_BREAK.sub("-", rule.lower()).strip("-")
    if not slug:
        # A rule named without ASCII letters or digits: name it by hash.
        slug = "rule-" + short_hash(rule)
    return GENERATOR_PREFIX + identifier(slug, asff.MAX_GENERATOR_ID_LENGTH - len(GENERATOR_PREFIX))


# --- text within ASFF's limits ----------------------------------------------------------------


def _canonical_json(value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        return repr(type(value))


def _clean(value: Any, limit: int = asff.MAX_DETAIL_LENGTH) -> str | None:
    """A usable string within ``limit``: not blank, not Falco's "<NA>", control characters
    escaped; None otherwise."""
    if type(value) is not str or value == _NOT_AVAILABLE:
        return None
    # The usual value, printable ASCII: " " is the only whitespace it could start or end with.
    if (
        0 < len(value) <= limit
        and value.isascii()
        and value.isprintable()
        and value[0] != " "
        and value[-1] != " "
    ):
        return value
    value = escaped(value.strip())
    return truncate(value, limit) if value else None


def _short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
