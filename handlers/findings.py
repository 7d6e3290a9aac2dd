"""Falco alert -> ASFF finding: mapping, filtering, coalescing and every ASFF limit. Pure: no AWS
client, no environment, no clock.

Decisions a reader needs (the tests pin each one):

* ``Id`` = ``falco/alert/<sha256>`` of the alert's identity: rule, priority, source, hostname, the
  event time (normalised to UTC) and ``output``. Re-delivery of the same log event gives the same
  Id, so Security Hub updates the finding instead of adding one; any other alert, including the
  same rule a nanosecond later, gets another. Without ``output`` the output fields stand in;
  without a usable event time the CloudWatch log event id does.
* ``GeneratorId`` = ``falco/rule/<slug of the rule name>``, stable per rule.
* Times: ``time`` (RFC 3339, up to 9 fractional digits, normalised to ``Z``), else
  ``output_fields["evt.time"]`` (integer ns), else the CloudWatch event timestamp (ms).
* Severity: Emergency/Alert/Critical -> CRITICAL, Error -> HIGH, Warning -> MEDIUM, Notice -> LOW,
  Informational/Debug -> INFORMATIONAL; ``Original`` is Falco's priority.
* Types: MITRE tags -> ASFF types (``TACTIC_TYPES``); technique tags become classifiers under each
  tactic (``TTPs/Execution/T1059``). Without a MITRE tag: ``Unusual Behaviors/Container`` for a
  container, ``/Process`` for a host or unknown process, ``/User`` for audit-log sources
  (k8s_audit, cloud audit logs), ``/Application`` for other plugin sources.
* Resources, primary first: the container (``k8s/<cluster>/<ns>/pods/<pod>/<container>``) or the
  Kubernetes object of an audit event (``k8s/<cluster>/<ns>/<resource>/<name>``, ``-`` where a part
  is unknown); for syscall alerts the node (``AwsEc2Instance`` when the instance id is known, else
  ``Other`` ``k8s/<cluster>/-/nodes/<node>``); the EKS cluster when its name is known.
* ProductFields: ``falco/rule``, ``falco/priority``, ``falco/source``, ``falco/tags``,
  ``falco/hostname``, ``falco/log_group`` and ``falco/log_stream`` (in the Lambda),
  ``falco/log_event_id``, and each non-null output field as
  ``falco/output_fields/<key>``; at most ``OWN_PRODUCT_FIELDS`` (45) pairs so the
  ``aws/securityhub/*`` keys Security Hub adds still fit in 50. When output fields do not fit,
  container/k8s/proc/user/fd/ka fields go first and ``falco/output_fields_dropped`` counts the rest.
* Coalescing (one invocation): alerts identical but for their time (``time``, ``TIME_FIELDS``,
  the time prefix of ``output``) and shipped from the same cluster, node and instance become one
  finding: the earliest alert's, observed until the latest, with ``falco/occurrences``,
  ``falco/first_seen`` and ``falco/last_seen``. No two findings of one batch share an Id.
* Text over a limit is cut with ``TRUNCATION_MARKER``; identifiers over a limit are cut with the
  marker and a hash of the full value, so they stay distinct. Lengths are counted in UTF-16 code
  units, the stricter of the two ways a Java-based API can count them. Control characters are
  escaped (``\\n``) so a hostile command line cannot forge lines in a console.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, NamedTuple

from handlers.alerts import (
    AlertRecord,
    Skip,
    event_time_ns,
    falco_time_from_ns,
)
from handlers.names import (
    COMPANY_NAME,
    FALCO_PRIORITIES,
    FINDING_ID_PREFIX,
    GENERATOR_PREFIX,
    PRIORITY_BY_LOWER,
    PRIORITY_BY_NAME,
    PRODUCT_NAME,
    custom_product_arn,
    eks_cluster_arn,
)

__all__ = [
    "FALCO_PRIORITIES",
    "FindingContext",
    "coalesce",
    "coalesce_texts",
    "compact_json",
    "filter_alert",
    "parse_priority",
    "to_finding",
    "to_finding_text",
]

SCHEMA_VERSION = "2018-10-08"

# ASFF limits: AwsSecurityFinding in the Security Hub API reference, and BatchImportFindings.
MAX_ID_LENGTH = 512
MAX_GENERATOR_ID_LENGTH = 512
MAX_TITLE_LENGTH = 256
MAX_DESCRIPTION_LENGTH = 1024
MAX_TYPES = 50
MAX_RESOURCES = 32
MAX_PRODUCT_FIELDS = 50
MAX_PRODUCT_FIELD_KEY_LENGTH = 128
MAX_PRODUCT_FIELD_VALUE_LENGTH = 2048
MAX_SEVERITY_ORIGINAL_LENGTH = 64
MAX_PROCESS_NAME_LENGTH = 64
MAX_PROCESS_PATH_LENGTH = 512
MAX_DETAILS_OTHER = 50
# "240 KB per finding": read as 240,000 bytes of JSON, the stricter reading.
MAX_FINDING_BYTES = 240_000
MAX_INTEGER = 2**31 - 1  # ASFF Integer fields (Pid, ParentPid) are Java ints

# Our own caps where ASFF documents none, chosen so that everything outside ProductFields and
# Description stays far below MAX_FINDING_BYTES whatever the input.
OWN_PRODUCT_FIELDS = 45  # leaves room for the aws/securityhub/* keys Security Hub adds
MAX_RESOURCE_ID_LENGTH = 512
MAX_DETAIL_LENGTH = 512

TRUNCATION_MARKER = "…[truncated]"

SEVERITY_LABELS = {
    "Emergency": "CRITICAL",
    "Alert": "CRITICAL",
    "Critical": "CRITICAL",
    "Error": "HIGH",
    "Warning": "MEDIUM",
    "Notice": "LOW",
    "Informational": "INFORMATIONAL",
    "Debug": "INFORMATIONAL",
}
_PRIORITY_RANK = {name: rank for rank, name in enumerate(FALCO_PRIORITIES)}

# falcosecurity/rules tactic tags (mitre_<tactic>) -> ASFF types taxonomy. ASFF's TTPs categories
# follow ATT&CK but have no Reconnaissance, Exfiltration or Impact: reconnaissance inside a running
# container or host (whoami, id, uname) is discovery; exfiltration and impact are what ASFF files
# under Effects. Resource development (pre-attack, no falcosecurity rule uses it) maps to nothing.
TACTIC_TYPES = {
    "initial_access": "TTPs/Initial Access",
    "execution": "TTPs/Execution",
    "persistence": "TTPs/Persistence",
    "privilege_escalation": "TTPs/Privilege Escalation",
    "defense_evasion": "TTPs/Defense Evasion",
    "credential_access": "TTPs/Credential Access",
    "discovery": "TTPs/Discovery",
    "reconnaissance": "TTPs/Discovery",
    "lateral_movement": "TTPs/Lateral Movement",
    "collection": "TTPs/Collection",
    "command_and_control": "TTPs/Command and Control",
    "exfiltration": "Effects/Data Exfiltration",
    # ATT&CK's Impact is "manipulate, interrupt, or destroy systems and data"; the technique
    # refines it (IMPACT_TECHNIQUE_TYPES), destruction is the default.
    "impact": "Effects/Data Destruction",
}
IMPACT_TECHNIQUE_TYPES = {
    "T1496": "Effects/Resource Consumption",  # resource hijacking (crypto miners)
    "T1485": "Effects/Data Destruction",
    "T1486": "Effects/Data Destruction",
    "T1490": "Effects/Data Destruction",
    "T1491": "Effects/Data Destruction",
    "T1561": "Effects/Data Destruction",
    "T1565": "Effects/Data Destruction",
    "T1489": "Effects/Denial of Service",
    "T1498": "Effects/Denial of Service",
    "T1499": "Effects/Denial of Service",
    "T1529": "Effects/Denial of Service",
    "T1531": "Effects/Denial of Service",
}
# Falco rules also tag tactics by id (e.g. TA0003 on "Drop and execute new binary in container").
TACTIC_IDS = {
    "TA0001": "initial_access",
    "TA0002": "execution",
    "TA0003": "persistence",
    "TA0004": "privilege_escalation",
    "TA0005": "defense_evasion",
    "TA0006": "credential_access",
    "TA0007": "discovery",
    "TA0008": "lateral_movement",
    "TA0009": "collection",
    "TA0010": "exfiltration",
    "TA0011": "command_and_control",
    "TA0040": "impact",
    "TA0043": "reconnaissance",
}
CONTAINER_BEHAVIOR = "Unusual Behaviors/Container"
PROCESS_BEHAVIOR = "Unusual Behaviors/Process"
USER_BEHAVIOR = "Unusual Behaviors/User"
APPLICATION_BEHAVIOR = "Unusual Behaviors/Application"
# Plugin sources whose events are actions of an identity against an API.
AUDIT_LOG_SOURCES = frozenset({"k8s_audit", "aws_cloudtrail", "gcp_auditlog", "okta", "github"})
SYSCALL_SOURCES = frozenset({"syscall", "syscalls"})

# The output fields an analyst reaches for first; they win when not all fit in ProductFields.
IMPORTANT_FIELD_PREFIXES = ("container.", "k8s.", "proc.", "user.", "fd.", "ka.")
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

OUTPUT_FIELD_PREFIX = "falco/output_fields/"
DROPPED_FIELDS_KEY = "falco/output_fields_dropped"

_TECHNIQUE = re.compile(r"T\d{4}(?:\.\d{3})?", re.IGNORECASE | re.ASCII)
_DATE_TIME_PATTERN = r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}"
_RFC3339 = re.compile(rf"({_DATE_TIME_PATTERN})(?:\.(\d+))?([Zz]|[+-]\d{{2}}:?\d{{2}})", re.ASCII)
_DATE_TIME = re.compile(_DATE_TIME_PATTERN, re.ASCII)
# Falco starts `output` with the event time: "13:44:05.478445995: " or, with
# time_format_iso_8601, "2016-08-04T16:17:57.881785348+0000: ".
_OUTPUT_TIME_PREFIX = re.compile(
    r"(?:\d{4}-\d{2}-\d{2}T)?\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?: ",
    re.ASCII,
)
_SLUG_BREAK = re.compile(r"[^a-z0-9]+")
# Control characters would let an alert forge lines in consoles and tickets; show them escaped.
_CONTROL_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F)} | {
    0x09: "\\t",
    0x0A: "\\n",
    0x0D: "\\r",
}
_NOT_AVAILABLE = "<NA>"  # how Falco renders a field it could not resolve
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NO_FIELDS: dict[str, Any] = {}
# The aws filter's keys that describe the node, and where AwsEc2Instance details keep them.
_INSTANCE_DETAIL_KEYS = ("ec2_instance_type", "ami_id", "vpc_id", "private_ip")
_INSTANCE_DETAIL_FIELDS = ("Type", "ImageId", "VpcId", "IpV4Addresses")
_KEYS_KEYED_APART = frozenset({"time", "output", "output_fields", "priority"})
# Fewer than 1,000 digits: prints well within a ProductFields value (and within the 4,300 digits
# Python converts to text at most). Falco's nanosecond times have 19.
_SHORT_INTEGER = 10**999
_SHORT_TEXT = MAX_PRODUCT_FIELD_VALUE_LENGTH // 2

# A finding is written as JSON text directly (see _finding_text): compact, ASCII only, so that
# len(text) is its size in bytes. Strings go through json's C string encoder; the few small
# objects whose keys vary (details, Process, ProductFields) through one C encoder built once.
# JSONEncoder.encode would build a new C encoder for every call, and check for cycles that a tree
# built fresh from JSON cannot have (a cycle would still fail loudly, with RecursionError).
_string = json.encoder.encode_basestring_ascii
_ENCODER = json.JSONEncoder(separators=(",", ":"), check_circular=False)
_C_ENCODE = (
    json.encoder.c_make_encoder(
        None,  # markers: no cycle check
        _ENCODER.default,
        _string,  # ensure_ascii
        None,  # indent
        _ENCODER.key_separator,
        _ENCODER.item_separator,
        _ENCODER.sort_keys,
        _ENCODER.skipkeys,
        _ENCODER.allow_nan,
    )
    if json.encoder.c_make_encoder is not None
    else None
)


def compact_json(value: Any) -> str:
    """A JSON value as compact ASCII text (what json.dumps(value, separators=(",", ":")) gives)."""
    if _C_ENCODE is None:  # never on CPython
        return _ENCODER.encode(value)
    return "".join(_C_ENCODE(value, 0))


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


def parse_priority(value: str) -> str:
    """Falco priority in any letter case -> its canonical title-case name."""
    if isinstance(value, str):
        # Falco writes its priorities in title case: most values are their own canonical name.
        canonical = PRIORITY_BY_NAME.get(value) or PRIORITY_BY_LOWER.get(value.strip().lower())
    else:
        canonical = None
    if canonical is None:
        shown = value if not isinstance(value, str) or len(value) <= 32 else value[:32] + "…"
        raise ValueError(
            f"unknown Falco priority {shown!r}: expected one of {', '.join(FALCO_PRIORITIES)}"
            " (any letter case)"
        )
    return canonical


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


def to_finding(record: AlertRecord, ctx: FindingContext) -> dict[str, Any]:
    """One ASFF finding for one alert, within every ASFF limit."""
    return json.loads(to_finding_text(record, ctx)[1])  # type: ignore[no-any-return]


def to_finding_text(record: AlertRecord, ctx: FindingContext) -> tuple[str, str]:
    """:func:`to_finding` as its Id and its JSON text (compact, ASCII: len() is its bytes)."""
    observed = _observed_time(record)
    return _finding_text(record, _Shared(ctx), observed, observed, None, None)


def coalesce(records: Sequence[AlertRecord], ctx: FindingContext) -> list[dict[str, Any]]:
    """Alerts identical but for their time -> one finding each, in order of first appearance.

    The finding is the earliest alert's (same Id as that alert alone would get), observed from
    the earliest to the latest time; ProductFields add ``falco/occurrences``, ``falco/first_seen``
    and ``falco/last_seen``. The same batch always gives the same findings, UpdatedAt included.
    """
    return [json.loads(text) for _, text in coalesce_texts(records, ctx)]


def coalesce_texts(
    records: Sequence[AlertRecord], ctx: FindingContext
) -> Iterator[tuple[str, str]]:
    """:func:`coalesce` as each finding's Id and JSON text (compact, ASCII), one at a time.

    What the handler sends: the text is the finding (to_finding and coalesce parse it). The
    groups are formed from the whole batch first; only building the texts is lazy, so the
    handler keeps nothing of a finding but its text.
    """
    # Most alerts of a batch repeat nothing, and the full key (every value of the alert, hashed)
    # costs more than the rest of coalescing. So records are first counted by a cheap key that
    # equal full keys always share (see _bucket_key); only records whose bucket holds more than
    # one get a full key. The others are groups of one, keyed by their position (an int never
    # equals a key tuple).
    buckets = [_bucket_key(record) for record in records]
    sizes = Counter(buckets)
    groups: dict[Any, _Group] = {}
    for index, record in enumerate(records):
        observed = _observed_time(record)
        if sizes[buckets[index]] == 1:
            groups[index] = _Group(record, observed, observed, 1)
            continue
        key = _coalesce_key(record)
        try:
            group = groups.get(key)
        except TypeError:  # an unhashable value somewhere in the alert
            key = _exact_coalesce_key(record)
            group = groups.get(key)
        if group is None:
            groups[key] = _Group(record, observed, observed, 1)
            continue
        group.count += 1
        if observed.ns < group.first.ns:
            group.record, group.first = record, observed
        if observed.ns > group.last.ns:
            group.last = observed
    shared = _Shared(ctx)
    for key, group in groups.items():
        occurrences = group.count if group.count > 1 else None
        yield _finding_text(group.record, shared, group.first, group.last, occurrences, key)


class _Observed(NamedTuple):  # immutable, and cheaper to build than a frozen dataclass
    ns: int  # for ordering
    text: str  # RFC 3339, UTC, "Z"
    from_alert: bool  # False: only the CloudWatch timestamp was usable


@dataclass(slots=True)
class _Group:
    record: AlertRecord
    first: _Observed
    last: _Observed
    count: int


class _Shared:
    """What the findings of one call have in common, worked out once per call.

    Everything that depends only on the context, on the rule and priority, on the tags, on the
    output fields' names, or on the cluster and node: a batch comes from one Falco pod on one
    node, and its alerts repeat a few rules. Lives as long as one coalesce/to_finding call, so
    hostile input cannot grow it across invocations. The parts of a finding that repeat are kept
    as JSON text, encoded once (see _finding_text).
    """

    __slots__ = (
        "account_id",
        "classifications",
        "cluster",
        "clusters",
        "containers",
        "context_fields",
        "field_keys",
        "ids",
        "instances",
        "location_members",
        "log_member_count",
        "log_members",
        "origins",
        "partition",
        "region",
        "tags",
    )

    def __init__(self, ctx: FindingContext) -> None:
        self.account_id = ctx.account_id
        self.region = ctx.region
        self.partition = ctx.partition
        product_arn = custom_product_arn(ctx.partition, ctx.region, ctx.account_id)
        self.context_fields = _members(
            {
                "SchemaVersion": SCHEMA_VERSION,
                "ProductArn": product_arn,
                "AwsAccountId": ctx.account_id,
                "Region": ctx.region,
                "CompanyName": COMPANY_NAME,
                "ProductName": PRODUCT_NAME,
            }
        )
        self.location_members = "," + _members({"Partition": ctx.partition, "Region": ctx.region})
        self.cluster = _clean(ctx.cluster_name)  # for records that do not name theirs
        # The same two ProductFields in every finding of the call: encoded once, as members.
        log_fields = {
            key: value
            for key, value in (
                ("falco/log_group", _clean(ctx.log_group)),
                ("falco/log_stream", _clean(ctx.log_stream)),
            )
            if value
        }
        self.log_members = "," + _members(log_fields) if log_fields else ""
        self.log_member_count = len(log_fields)
        self.classifications: dict[tuple[str, str, tuple[str, ...]], tuple[str, str]] = {}
        self.tags: dict[tuple[Any, ...], tuple[tuple[str, ...], str]] = {}
        self.field_keys: dict[tuple[str, ...], tuple[tuple[str, ...], bool]] = {}
        self.clusters: dict[str, str] = {}
        self.containers: dict[tuple[Any, ...], str] = {}
        self.origins: dict[tuple[Any, ...], _Origin] = {}
        self.instances: dict[str, tuple[dict[str, str], str]] = {}
        self.ids: set[str] = set()  # the Ids of the findings made so far

    def classification(self, rule: str, priority: str, types: tuple[str, ...]) -> tuple[str, str]:
        """What a rule, its priority and its Types make of a finding, as JSON members: GeneratorId,
        Title, Types, Severity and FindingProviderFields; and the falco/rule and falco/priority
        product fields."""
        key = (rule, priority, types)
        known = self.classifications.get(key)
        if known is None:
            text = _text(rule)
            severity = {"Label": SEVERITY_LABELS[priority], "Original": priority}
            members = _members(
                {
                    "GeneratorId": _generator_id(rule),
                    "Title": _truncate(text, MAX_TITLE_LENGTH),
                    # Both copies, on purpose. FindingProviderFields is the provider's own record
                    # of Severity and Types: AWS asks providers to send them there, Security Hub
                    # keeps it when analysts change the top-level values with
                    # BatchUpdateFindings, and later imports update the top level from it only
                    # where analysts have not. The top-level Severity and Types are what the
                    # console, insights, filters and automation rules read, and what tools that
                    # only know the original ASFF expect; sending them too makes a new finding
                    # complete at once.
                    "Types": types,
                    "Severity": severity,
                    "FindingProviderFields": {"Severity": severity, "Types": types},
                }
            )
            rule_fields = {
                "falco/rule": _truncate(text, MAX_PRODUCT_FIELD_VALUE_LENGTH),
                "falco/priority": priority,
            }
            known = (members, _members(rule_fields))
            self.classifications[key] = known
        return known

    def unique_id(self, finding_id: str, record: AlertRecord, group_key: Any) -> str:
        """The finding's Id, made distinct from the Ids of the findings made before it."""
        if finding_id in self.ids:
            # Two groups that differ only where the Id does not look (output fields next to an
            # identical output, or the record's metadata). One request must not carry one Id
            # twice: Security Hub would drop one, and failures are reported by Id.
            full_key = (
                _group_key(record) if group_key is None or type(group_key) is int else group_key
            )
            finding_id = _distinct_id(finding_id, full_key)
        self.ids.add(finding_id)
        return finding_id

    def origin(self, source: Any, hostname: Any, cluster: Any) -> _Origin:
        """Where an alert comes from: its source, Falco's hostname and the cluster, checked;
        and the falco/source and falco/hostname product fields as JSON members. A batch comes
        from one Falco pod, so they repeat: worked out once per call."""
        key = (source, hostname, cluster)
        try:
            known = self.origins.get(key)
        except TypeError:  # a list or object where Falco sends text: not memoised
            return _origin(source, hostname, cluster, self.cluster)
        if known is None:
            known = self.origins[key] = _origin(source, hostname, cluster, self.cluster)
        return known

    def tag_facts(self, tags: Any) -> tuple[tuple[str, ...], str]:
        """The Types the MITRE tags give (maybe none) and the falco/tags product field as a JSON
        member after a comma ("" without tags)."""
        if type(tags) is not list:
            return (), ""
        key = tuple(tags)
        try:
            known = self.tags.get(key)
        except TypeError:  # a list or object among the tags: not memoised
            return _tag_facts(key)
        if known is None:
            known = self.tags[key] = _tag_facts(key)
        return known

    def output_field_keys(self, names: tuple[str, ...]) -> tuple[tuple[str, ...], bool]:
        """The ProductFields keys of these output fields' names, in order, each as the start of
        a JSON member (``,"falco/output_fields/<name>":``); and whether two names share a key
        (escaping and cutting can make one key of two names)."""
        known = self.field_keys.get(names)
        if known is None:
            keys = tuple(map(_output_field_key, names))
            members = tuple("," + _string(key) + ":" for key in keys)
            known = self.field_keys[names] = (members, len(set(keys)) < len(keys))
        return known

    def container_rest(self, alert: _Alert, name: str) -> str:
        """The Container resource's JSON after its Id: Partition, Region and Details. They say
        nothing of the pod, so the pods of one image (a Deployment's replicas, a DaemonSet)
        share them: worked out once per call."""
        fields = alert.fields
        started = fields.get("container.start_ts")
        privileged = fields.get("container.privileged")
        key = (
            name,
            fields.get("container.image.repository"),
            fields.get("container.image.tag"),
            fields.get("container.image.digest"),
            started,
            type(started),  # so that 1, 1.0 and true stay apart
            privileged,
            type(privileged),
        )
        try:
            known = self.containers.get(key)
        except TypeError:  # a list or object where Falco sends text: not memoised
            return self._container_rest(alert, name)
        if known is None:
            known = self.containers[key] = self._container_rest(alert, name)
        return known

    def _container_rest(self, alert: _Alert, name: str) -> str:
        details = compact_json({"Container": _container(alert, name)})
        return f'{self.location_members},"Details":{details}}}'

    def cluster_resource(self, cluster: str) -> str:
        """The AwsEksCluster resource's JSON."""
        known = self.clusters.get(cluster)
        if known is None:
            arn = _cluster_arn(self.partition, self.region, self.account_id, cluster)
            details = {"AwsEksCluster": {"Name": cluster, "Arn": arn}}
            known = self.clusters[cluster] = _resource(
                "AwsEksCluster", arn, compact_json(details), self
            )
        return known

    def instance_resource(self, instance_id: str, aws: dict[str, str]) -> str:
        """The AwsEc2Instance resource's JSON, with what the aws filter says of the node."""
        known = self.instances.get(instance_id)
        if known is None or known[0] != aws:
            described = tuple(map(aws.get, _INSTANCE_DETAIL_KEYS))
            arn, details = _instance(
                self.partition, self.region, self.account_id, instance_id, described
            )
            instance = compact_json({"AwsEc2Instance": dict(details)}) if details else ""
            known = (aws, _resource("AwsEc2Instance", arn, instance, self))
            self.instances[instance_id] = known
        return known[1]


class _Origin(NamedTuple):
    source: str | None
    hostname: str | None
    cluster: str | None
    source_member: str  # ',"falco/source":"..."' when the source is known
    hostname_member: str  # ',"falco/hostname":"..."' when the hostname is known


def _origin(source: Any, hostname: Any, cluster: Any, default_cluster: str | None) -> _Origin:
    source, hostname = _clean(source), _clean(hostname)
    return _Origin(
        source,
        hostname,
        _clean(cluster) or default_cluster,
        "," + _members({"falco/source": source}) if source else "",
        "," + _members({"falco/hostname": hostname}) if hostname else "",
    )


def _tag_facts(tags: tuple[Any, ...]) -> tuple[tuple[str, ...], str]:
    strings = tuple(tag for tag in tags if isinstance(tag, str))
    text = _text(",".join(strings))
    if not text.strip():
        return _mitre_types(strings), ""
    shown = _truncate(text, MAX_PRODUCT_FIELD_VALUE_LENGTH)
    return _mitre_types(strings), "," + _members({"falco/tags": shown})


class _Alert:
    """What the finding needs from one alert, read and checked once."""

    __slots__ = (
        "cluster",
        "fields",
        "hostname",
        "is_audit",
        "is_container",
        "is_host",
        "is_syscall",
        "origin",
        "output",
        "priority",
        "record",
        "rule",
        "source",
        "tag_types",
        "tags_member",
    )

    def __init__(self, record: AlertRecord, shared: _Shared) -> None:
        alert = record.alert
        rule = alert.get("rule")
        if not isinstance(rule, str):
            raise ValueError("the alert has no string 'rule': it did not come from parse_log_event")
        fields = alert.get("output_fields")
        output = alert.get("output")
        self.record = record
        self.rule = rule
        self.priority = parse_priority(alert.get("priority"))
        self.fields: dict[str, Any] = fields if isinstance(fields, dict) else _NO_FIELDS
        self.output = output if isinstance(output, str) else None
        self.tag_types, self.tags_member = shared.tag_facts(alert.get("tags"))
        origin = shared.origin(alert.get("source"), alert.get("hostname"), record.cluster_name)
        self.origin = origin
        self.source, self.hostname, self.cluster = origin.source, origin.hostname, origin.cluster
        container_id = _clean(self.fields.get("container.id"))
        # Falco < 0.30 sends no `source`: its audit alerts still give themselves away by ka.*.
        self.is_audit = self.source == "k8s_audit" or (
            self.source is None and any(key.startswith("ka.") for key in self.fields)
        )
        self.is_host = not self.is_audit and container_id == "host"
        self.is_container = not self.is_audit and not self.is_host and container_id is not None
        self.is_syscall = not self.is_audit and (
            self.source is None or self.source in SYSCALL_SOURCES
        )


def _finding_text(
    record: AlertRecord,
    shared: _Shared,
    first: _Observed,
    last: _Observed,
    occurrences: int | None,
    group_key: Any,
) -> tuple[str, str]:
    """One finding's Id and JSON text, within every ASFF limit (MAX_FINDING_BYTES: len(text))."""
    alert = _Alert(record, shared)
    types = alert.tag_types or (_behavior_type(alert),)
    classification, rule_fields = shared.classification(alert.rule, alert.priority, types)
    digest = _identity_digest(alert, first)
    finding_id = shared.unique_id(f"{FINDING_ID_PREFIX}{digest}", record, group_key)
    description, description_cut = _description(alert)  # as JSON text
    resources = _resources(alert, shared)
    process = _process(alert.fields)
    product_fields = _product_fields(
        alert, shared, rule_fields, first, last, occurrences, full_output=description_cut
    )

    parts = (shared.context_fields, classification, finding_id, first, last, resources, process)
    text = _assemble(*parts, description, product_fields)
    if len(text) > MAX_FINDING_BYTES:  # rare: huge output fields or description
        text = _shrunk(product_fields, description, lambda d, p: _assemble(*parts, d, p))
    return finding_id, text


def _assemble(
    context_fields: str,
    classification: str,
    finding_id: str,
    first: _Observed,
    last: _Observed,
    resources: list[str],
    process: str,  # JSON text, or "" for none
    description: str,  # JSON text
    product_fields: str,  # JSON text
) -> str:
    """The finding's JSON text: compact, ASCII only (so len() is its size in bytes).

    The finding's shape, in one place. The parts that repeat across a call's findings come as
    text encoded once (_Shared); the rest is encoded here. Every string goes through json's own
    escaping, so the text parses to exactly the values computed.
    """
    created, updated = _string(first.text), _string(last.text)
    return "".join(
        (
            "{",
            context_fields,  # SchemaVersion, ProductArn, AwsAccountId, Region, CompanyName, ...
            ",",
            classification,  # GeneratorId, Title, Types, Severity, FindingProviderFields
            ',"Id":',
            _string(finding_id),
            ',"Description":',
            description,
            ',"CreatedAt":',
            created,
            ',"UpdatedAt":',
            updated,
            ',"FirstObservedAt":',
            created,
            ',"LastObservedAt":',
            updated,
            ',"Resources":[',
            ",".join(resources),
            "]",
            ',"Process":' + process if process else "",
            ',"ProductFields":',
            product_fields,
            "}",
        )
    )


def _members(fields: dict[str, Any]) -> str:
    """The members of a JSON object without its braces: a part of a finding's text."""
    return compact_json(fields)[1:-1]


def _canonical_priority(alert: dict[str, Any]) -> str:
    return parse_priority(alert.get("priority"))  # type: ignore[arg-type]


def _observed_time(record: AlertRecord) -> _Observed:
    alert = record.alert
    value = alert.get("time")
    if isinstance(value, str):
        parsed = _parse_rfc3339(value)
        if parsed is not None:
            return parsed
    ns = event_time_ns(alert.get("output_fields"))
    if ns is not None:
        with contextlib.suppress(OverflowError, ValueError):
            return _Observed(ns, falco_time_from_ns(ns), True)
    milliseconds = record.timestamp_ms
    try:
        seconds, fraction = divmod(milliseconds, 1000)
        text = f"{_date_time_text(_EPOCH + timedelta(seconds=seconds))}.{fraction:03d}Z"
    except (OverflowError, ValueError, TypeError):
        milliseconds, text = 0, "1970-01-01T00:00:00.000Z"
    return _Observed(milliseconds * 1_000_000, text, False)


def _parse_rfc3339(value: str) -> _Observed | None:
    if len(value) == 30 and value[19] == "." and value[29] == "Z":
        # Falco's own format, "2024-05-25T13:44:05.478445995Z" (nearly every alert): what the
        # general path gives for it, with the seconds looked up once per distinct second.
        digits = value[20:29]
        utc = _zulu_seconds(value[:19]) if digits.isascii() and digits.isdigit() else None
        if utc is not None:
            seconds, utc_text = utc
            return _Observed(seconds * 1_000_000_000 + int(digits), f"{utc_text}.{digits}Z", True)
    match = _RFC3339.fullmatch(value.strip())
    if match is None:
        return None
    date_time, fraction, offset = match.groups()
    utc = _utc_seconds(date_time, offset)
    if utc is None:
        return None
    seconds, utc_text = utc
    digits = fraction[:9] if fraction else ""  # RFC 3339 allows more; ASFF takes up to 9
    ns = seconds * 1_000_000_000 + (int(digits.ljust(9, "0")) if digits else 0)
    return _Observed(ns, f"{utc_text}.{digits}Z" if digits else f"{utc_text}Z", True)


@lru_cache(maxsize=512)
def _zulu_seconds(date_time: str) -> tuple[int, str] | None:
    """_utc_seconds(date_time, "Z") for text _RFC3339 would match as date and time, else None."""
    if _DATE_TIME.fullmatch(date_time) is None:
        return None
    return _utc_seconds(date_time, "Z")


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
        if offset not in ("Z", "z"):
            shift = timedelta(hours=int(offset[1:3]), minutes=int(offset[-2:]))
            moment = moment - shift if offset[0] == "+" else moment + shift
        return (moment - _EPOCH) // timedelta(seconds=1), _date_time_text(moment)
    except (OverflowError, ValueError):
        return None


def _date_time_text(moment: datetime) -> str:
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
        f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    )


def _identity_digest(alert: _Alert, observed: _Observed) -> str:
    output = alert.output if alert.output is not None else _canonical_json(alert.fields)
    if observed.from_alert:
        parts: tuple[str, ...] = (observed.text, output)
    else:
        # Without the event's own time, the log event id is what tells two alerts apart.
        parts = ("", alert.record.log_event_id, output)
    identity = "\x1f".join(
        (alert.rule, alert.priority, alert.source or "", alert.hostname or "", *parts)
    )
    return hashlib.sha256(identity.encode("utf-8", "surrogatepass")).hexdigest()


@lru_cache(maxsize=1024)
def _generator_id(rule: str) -> str:
    prefix = GENERATOR_PREFIX
    slug = _SLUG_BREAK.sub("-", rule.lower()).strip("-")
    if not slug:
        # A rule named without ASCII letters or digits: name it by hash.
        slug = "rule-" + _short_hash(rule)
    return prefix + _identifier(slug, MAX_GENERATOR_ID_LENGTH - len(prefix))


@lru_cache(maxsize=2048)
def _mitre_types(tags: tuple[str, ...]) -> tuple[str, ...]:
    tactics: list[str] = []
    techniques: list[str] = []
    for tag in tags:
        lowered = tag.strip().lower()
        if lowered.startswith("mitre_"):
            tactic = lowered[len("mitre_") :]
        elif lowered.upper() in TACTIC_IDS:
            tactic = TACTIC_IDS[lowered.upper()]
        else:
            if _TECHNIQUE.fullmatch(lowered) and lowered.upper() not in techniques:
                techniques.append(lowered.upper())
            continue
        if tactic in TACTIC_TYPES and tactic not in tactics:
            tactics.append(tactic)

    # Falco's tags do not say which technique belongs to which tactic, so each technique is
    # classified under each tactic of the rule (falcosecurity rules carry one tactic).
    types: dict[str, None] = {}  # an ordered set
    for tactic in tactics:
        if tactic == "impact":
            effects = [(IMPACT_TECHNIQUE_TYPES.get(t.split(".")[0]), t) for t in techniques]
            known = [(category, t) for category, t in effects if category is not None]
            if known:
                for category, technique in known:
                    types[category] = None
                    types[f"{category}/{technique}"] = None
                continue
        category = TACTIC_TYPES[tactic]
        types[category] = None
        for technique in techniques:
            types[f"{category}/{technique}"] = None
    return tuple(types)[:MAX_TYPES]


def _behavior_type(alert: _Alert) -> str:
    if alert.is_audit or alert.source in AUDIT_LOG_SOURCES:
        return USER_BEHAVIOR
    if not alert.is_syscall:
        return APPLICATION_BEHAVIOR
    return CONTAINER_BEHAVIOR if alert.is_container else PROCESS_BEHAVIOR


def _description(alert: _Alert) -> tuple[str, bool]:
    """The Description as JSON text, and whether Falco's output had to be cut to fit it."""
    if alert.output is not None:
        # The time prefix repeats FirstObservedAt, and would be wrong for a coalesced finding.
        text = _strip_time_prefix(alert.output)
        encoded = _string(text)
        if len(encoded) == len(text) + 2 and len(text) <= MAX_DESCRIPTION_LENGTH:
            # The usual output: nothing needed escaping, so it is printable ASCII; it fits.
            if text and not text.isspace():
                return encoded, False
        else:
            text = _text(text)
            if text.strip():
                description = _truncate(text, MAX_DESCRIPTION_LENGTH)
                return _string(description), description is not text
    # Falco's `output` is off or blank: say what is known instead of leaving a placeholder.
    facts = [
        f"{key}={_render_value(value)}"
        for key, value in alert.fields.items()
        if key.startswith(IMPORTANT_FIELD_PREFIXES) and _is_known(value)
    ]
    where = f" on {alert.hostname}" if alert.hostname else ""
    text = f"Falco rule '{_text(alert.rule)}' ({alert.priority}) matched{where}"
    if facts:
        text += ": " + " ".join(facts)
    return _string(_truncate(text, MAX_DESCRIPTION_LENGTH)), False


def _resources(alert: _Alert, shared: _Shared) -> list[str]:
    """The finding's Resources, each as its JSON."""
    record = alert.record
    fields = alert.fields
    cluster = alert.cluster or "-"
    resources: list[str] = []
    if alert.is_container:
        name = _clean(fields.get("container.name")) or _clean(fields.get("container.id")) or "-"
        namespace = _clean(fields.get("k8s.ns.name"))
        pod = _clean(fields.get("k8s.pod.name"))
        if namespace or pod:
            container_ref = f"k8s/{cluster}/{namespace or '-'}/pods/{pod or '-'}/{name}"
        else:
            node = _clean(record.node_name) or alert.hostname or "-"
            container_ref = f"container/{node}/{name}"
        resources.append(
            '{"Type":"Container","Id":'
            + _identifier_json(container_ref, MAX_RESOURCE_ID_LENGTH)
            + shared.container_rest(alert, name)
        )
    elif alert.is_audit:
        kind = _clean(fields.get("ka.target.resource"))
        name = _clean(fields.get("ka.target.name"))
        if kind or name:
            namespace = _clean(fields.get("ka.target.namespace"))
            other = {
                label: value
                for label, value in (
                    ("Namespace", namespace),
                    ("Resource", kind),
                    ("Name", name),
                    ("Subresource", _clean(fields.get("ka.target.subresource"))),
                )
                if value
            }
            object_ref = f"k8s/{cluster}/{namespace or '-'}/{kind or '-'}/{name or '-'}"
            details = compact_json({"Other": other})
            resources.append(_resource("Other", object_ref, details, shared))

    if alert.is_syscall:
        # The node the event happened on: for host alerts the subject, for containers the place
        # to cordon. Audit and cloud events happen in an API, not on Falco's node.
        instance_id = _clean(record.instance_id)
        if instance_id:
            resources.append(shared.instance_resource(instance_id, record.aws or _NO_FIELDS))
        else:
            node = _clean(record.node_name)
            if node:
                details = compact_json({"Other": {"Node": node}})
                node_ref = f"k8s/{cluster}/-/nodes/{node}"
                resources.append(_resource("Other", node_ref, details, shared))

    if alert.cluster:
        resources.append(shared.cluster_resource(alert.cluster))
    if not resources:
        # ASFF wants at least one resource: name where the alert came from.
        origin = f"falco/{alert.source or 'syscall'}/{alert.hostname or '-'}"
        resources.append(_resource("Other", origin, "", shared))
    return resources[:MAX_RESOURCES]


def _resource(kind: str, resource_id: str, details: str, shared: _Shared) -> str:
    """A resource's JSON, its ``Details`` given as JSON text ("" for none)."""
    return "".join(
        (
            '{"Type":',
            _string(kind),
            ',"Id":',
            _identifier_json(resource_id, MAX_RESOURCE_ID_LENGTH),
            shared.location_members,  # Partition, Region
            ',"Details":' + details if details else "",
            "}",
        )
    )


# A batch comes from one log stream, i.e. one Falco pod on one node in one cluster: the node's and
# the cluster's resources repeat, so their text is worked out once (and _Shared keeps it per call).
@lru_cache(maxsize=256)
def _cluster_arn(partition: str, region: str, account_id: str, cluster: str) -> str:
    arn = eks_cluster_arn(partition, region, account_id, cluster)
    return _identifier(arn, MAX_RESOURCE_ID_LENGTH)


@lru_cache(maxsize=256)
def _instance(
    partition: str, region: str, account_id: str, instance_id: str, aws_values: tuple[Any, ...]
) -> tuple[str, tuple[tuple[str, Any], ...]]:
    arn = f"arn:{partition}:ec2:{region}:{account_id}:instance/{instance_id}"
    details = []
    for field, value in zip(_INSTANCE_DETAIL_FIELDS, aws_values, strict=True):
        cleaned = _clean(value)
        if cleaned:
            details.append((field, [cleaned] if field == "IpV4Addresses" else cleaned))
    return arn, tuple(details)


def _container(alert: _Alert, name: str) -> dict[str, Any]:
    fields = alert.fields
    details: dict[str, Any] = {"Name": name}
    repository = _clean(fields.get("container.image.repository"))
    if repository:
        tag = _clean(fields.get("container.image.tag"))
        details["ImageName"] = _truncate(
            f"{repository}:{tag}" if tag else repository, MAX_DETAIL_LENGTH
        )
    digest = _clean(fields.get("container.image.digest"))
    if digest:
        # ASFF's ImageId is the image's identifier: Falco's image digest (sha256:...), when the
        # rule outputs it. The container's own id stays in ProductFields (container.full_id).
        details["ImageId"] = _truncate(digest, MAX_DETAIL_LENGTH)
    started = fields.get("container.start_ts")
    if type(started) is int and started > 0:
        with contextlib.suppress(OverflowError, ValueError):
            details["LaunchedAt"] = falco_time_from_ns(started)
    privileged = fields.get("container.privileged")
    if type(privileged) is bool:
        details["Privileged"] = privileged
    return details


def _process(fields: dict[str, Any]) -> str:
    """The Process object's JSON text, or "" when Falco says nothing of the process."""
    if not fields:
        return ""
    members = []
    name = _clean(fields.get("proc.name"), MAX_PROCESS_NAME_LENGTH)
    if name:
        members.append('"Name":' + _string(name))
    path = _clean(fields.get("proc.exepath"), MAX_PROCESS_PATH_LENGTH)
    if path:
        members.append('"Path":' + _string(path))
    pid = fields.get("proc.pid")
    if type(pid) is int and 0 <= pid <= MAX_INTEGER:
        members.append(f'"Pid":{pid}')
    parent = fields.get("proc.ppid")
    if type(parent) is int and 0 <= parent <= MAX_INTEGER:
        members.append(f'"ParentPid":{parent}')
    return "{" + ",".join(members) + "}" if members else ""


def _product_fields(
    alert: _Alert,
    shared: _Shared,
    rule_fields: str,
    first: _Observed,
    last: _Observed,
    occurrences: int | None,
    *,
    full_output: bool,
) -> str:
    """The finding's ProductFields as JSON text (an object of strings).

    Written as text directly, like the finding (see _assemble): the falco/* members that repeat
    come encoded already (_Shared), each output field's key too; the values are encoded here.
    """
    parts = ["{", rule_fields]  # falco/rule and falco/priority
    count = 2
    # source, hostname and the log event id come through _clean, within MAX_DETAIL_LENGTH.
    origin = alert.origin
    if origin.source:
        parts.append(origin.source_member)
        count += 1
    if alert.tags_member:
        parts.append(alert.tags_member)
        count += 1
    if origin.hostname:
        parts.append(origin.hostname_member)
        count += 1
    if shared.log_members:
        parts.append(shared.log_members)
        count += shared.log_member_count
    log_event_id = _clean(alert.record.log_event_id)
    if log_event_id:
        parts.append(',"falco/log_event_id":' + _string(log_event_id))
        count += 1
    if occurrences is not None:
        parts.append(
            f',"falco/occurrences":"{occurrences}","falco/first_seen":{_string(first.text)}'
            f',"falco/last_seen":{_string(last.text)}'
        )
        count += 3
    if full_output and alert.output is not None:
        # The description had to be cut: keep more of Falco's output here.
        output = _truncate(_text(alert.output), MAX_PRODUCT_FIELD_VALUE_LENGTH)
        parts.append(',"falco/output":' + _string(output))
        count += 1

    room = OWN_PRODUCT_FIELDS - count
    fields = alert.fields
    if len(fields) > room:
        fields, dropped = _fields_that_fit(fields, room - 1)  # one pair goes to the count
        if dropped:
            parts.append(f',"{DROPPED_FIELDS_KEY}":"{dropped}"')
    keys, shared_keys = shared.output_field_keys(tuple(fields))
    for key, value in zip(keys, fields.values(), strict=True):
        # The hot loop: most values are short printable strings or integers. A printable string
        # has no control characters or lone surrogates, and at most half the value limit in
        # characters is within it in UTF-16 code units too. Not blank: not all whitespace (the
        # same test as a non-empty strip(), without the copy).
        if type(value) is str:
            encoded = _string(value)
            # Nothing escaped: printable ASCII (the usual value); else the full test.
            if (
                (len(encoded) == len(value) + 2 or value.isprintable())
                and len(value) <= _SHORT_TEXT
                and value
                and not value.isspace()
            ):
                if value != _NOT_AVAILABLE:
                    parts.append(key + encoded)
                continue
        elif type(value) is int and -_SHORT_INTEGER < value < _SHORT_INTEGER:
            parts.append(f'{key}"{value}"')
            continue
        elif value is None:
            continue  # "not known": leaving it out keeps room for the fields that are known
        parts.append(key + _string(_render_value(value)))
    parts.append("}")
    text = "".join(parts)
    if shared_keys:
        # Two names with one key: as in a dict (json.loads makes one), the key stays where it
        # came first and keeps the last value. Security Hub takes no object with a key twice.
        text = compact_json(json.loads(text))
    return text


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


@lru_cache(maxsize=4096)
def _output_field_key(key: str) -> str:
    room = MAX_PRODUCT_FIELD_KEY_LENGTH - len(OUTPUT_FIELD_PREFIX)
    return OUTPUT_FIELD_PREFIX + _identifier(_text(key) or "-", room)


def _render_value(value: Any) -> str:
    if isinstance(value, str):
        text = _text(value)
    elif isinstance(value, bool):
        return "true" if value else "false"
    elif isinstance(value, int | float):
        try:
            text = repr(value)
        except ValueError:  # an integer too long to print
            return "<integer too large to show>"
    else:
        # JSON escapes control characters but not DEL or lone surrogates.
        text = _text(_canonical_json(value))
    if not text.strip():
        # ASFF values need a non-blank character: show the blank value quoted instead.
        text = json.dumps(text)
    return _truncate(text, MAX_PRODUCT_FIELD_VALUE_LENGTH)


def _shrunk(product_fields_text: str, description: str, assemble: Callable[[str, str], str]) -> str:
    """The finding's text (``assemble(description, product_fields)``) cut to MAX_FINDING_BYTES:
    ProductFields values ever shorter, then the output fields dropped (and counted), then the
    Description cut to a title's length. Only ProductFields and Description can approach the
    limit: the caps keep everything else small (an alert with every capped field at its limit in
    emoji, 12 bytes of JSON each, and 50 Types comes to ~44 KB; tests/test_findings.py builds
    that alert)."""
    product_fields: dict[str, str] = json.loads(product_fields_text)
    text = assemble(description, product_fields_text)
    cap = MAX_PRODUCT_FIELD_VALUE_LENGTH
    while len(text) > MAX_FINDING_BYTES:
        if cap > 64:
            cap //= 2
            for key, value in product_fields.items():
                product_fields[key] = _truncate(value, cap)
        elif any(key.startswith(OUTPUT_FIELD_PREFIX) for key in product_fields):
            dropped = [key for key in product_fields if key.startswith(OUTPUT_FIELD_PREFIX)]
            for key in dropped:
                del product_fields[key]
            earlier = int(product_fields.get(DROPPED_FIELDS_KEY, "0"))
            product_fields[DROPPED_FIELDS_KEY] = str(earlier + len(dropped))
        else:
            title_long = _truncate(json.loads(description), MAX_TITLE_LENGTH)
            return assemble(_string(title_long), compact_json(product_fields))
        text = assemble(description, compact_json(product_fields))
    return text


def _coalesce_key(record: AlertRecord) -> tuple[Any, ...]:
    """Everything about the alert but its time, as one hashable value.

    Built from the values json.loads already made (strings cache their hash), with each value's
    type so that 1, 1.0 and true stay different. An unhashable value (a list in a list, an
    object) makes the lookup raise TypeError; coalesce then falls back to _exact_coalesce_key.
    """
    alert = record.alert
    fields = alert.get("output_fields")
    if type(fields) is dict:
        moments = TIME_FIELDS.intersection(fields)
        if moments:
            fields = dict(fields)
            for key in moments:
                del fields[key]
        values = tuple(fields.values())
        frozen_fields: Any = (tuple(fields), values, tuple(map(type, values)))
    else:
        frozen_fields = _frozen(fields)
    output = alert.get("output")
    frozen_output = _strip_time_prefix(output) if type(output) is str else _frozen(output)
    rest = tuple(
        (key, _frozen(value)) for key, value in alert.items() if key not in _KEYS_KEYED_APART
    )
    return (
        _canonical_priority(alert),
        frozen_output,
        frozen_fields,
        rest,
        record.cluster_name,
        record.instance_id,
        record.node_name,
    )


def _bucket_key(record: AlertRecord) -> tuple[Any, ...]:
    """A cheap key that two records share whenever their full keys are equal.

    Parts of the full key (_coalesce_key) that tell most alerts apart: the output without its
    time prefix, the process id, the container or audit target, and where the record was shipped
    from. When the lookup falls back to _exact_coalesce_key, equal keys mean equal JSON text
    instead. For ASCII strings and integers that is the same as equal values, but two different
    non-ASCII strings can encode alike (a surrogate pair written as two code points) and NaN is
    not equal to itself: any other value counts as None here, and the full keys decide.
    """
    alert = record.alert
    output = alert.get("output")
    output = _strip_time_prefix(output) if type(output) is str else None
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
    """The value if equal JSON means equal value for it (ASCII text, integers), else None."""
    kind = type(value)
    if kind is int or (kind is str and value.isascii()):
        return value  # type: ignore[no-any-return]
    return None


def _group_key(record: AlertRecord) -> tuple[Any, ...]:
    """The key coalesce would have grouped this record by (its full key)."""
    key = _coalesce_key(record)
    try:
        hash(key)
    except TypeError:
        return _exact_coalesce_key(record)
    return key


def _distinct_id(finding_id: str, key: tuple[Any, ...]) -> str:
    identity = f"{finding_id}\x1f{key!r}"
    digest = hashlib.sha256(identity.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{FINDING_ID_PREFIX}{digest}"


def _exact_coalesce_key(record: AlertRecord) -> tuple[Any, ...]:
    alert = record.alert
    probe = dict(alert)
    probe.pop("time", None)
    probe["priority"] = _canonical_priority(alert)
    output = alert.get("output")
    if isinstance(output, str):
        probe["output"] = _strip_time_prefix(output)
    fields = alert.get("output_fields")
    if isinstance(fields, dict):
        probe["output_fields"] = {k: v for k, v in fields.items() if k not in TIME_FIELDS}
    try:
        content = json.dumps(probe, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        return ("uncomparable", id(record))  # never coalesced
    return ("json", content, record.cluster_name, record.instance_id, record.node_name)


def _frozen(value: Any) -> Any:
    kind = type(value)
    if kind is list:
        return (kind, tuple(value), tuple(map(type, value)))
    return (kind, value)


def _canonical_json(value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        return repr(type(value))


def _strip_time_prefix(output: str) -> str:
    match = _OUTPUT_TIME_PREFIX.match(output)
    return output[match.end() :] if match else output


def _clean(value: Any, limit: int = MAX_DETAIL_LENGTH) -> str | None:
    """A usable string within ``limit``: not blank, not Falco's "<NA>", control characters
    escaped; None otherwise."""
    if (
        type(value) is str
        and 0 < len(value) <= limit
        and value.isascii()
        and value.isprintable()  # printable ASCII: the only whitespace left is " "
        and value.strip() is value  # nothing to strip (CPython returns the string itself)
    ):
        return value if value != _NOT_AVAILABLE else None
    if type(value) is not str or value == _NOT_AVAILABLE:
        return None
    value = _text(value.strip())
    return _truncate(value, limit) if value else None


def _text(value: str) -> str:
    if value.isprintable():
        return value
    # Rare path: escape control characters, and lone surrogates (which JSON can carry but UTF-8
    # cannot), so every string can be sent and shows what it held.
    return value.translate(_CONTROL_ESCAPES).encode("utf-8", "backslashreplace").decode("utf-8")


def _truncate(value: str, limit: int) -> str:
    """``value`` within ``limit`` UTF-16 code units, cut with TRUNCATION_MARKER if needed."""
    if len(value) <= limit and (value.isascii() or _utf16_length(value) <= limit):
        return value
    return _prefix(value, limit - len(TRUNCATION_MARKER)) + TRUNCATION_MARKER


def _identifier_json(value: str, limit: int) -> str:
    """``_identifier(value, limit)`` as JSON text."""
    encoded = _string(value)
    if len(encoded) == len(value) + 2 and len(value) <= limit:
        return encoded  # nothing escaped: printable ASCII, and it fits
    return _string(_identifier(value, limit))


def _identifier(value: str, limit: int) -> str:
    """An identifier within ``limit``: a cut one ends with the marker and a hash of the whole, so
    two long identifiers that share a beginning stay distinct."""
    value = _text(value)
    if len(value) <= limit and (value.isascii() or _utf16_length(value) <= limit):
        return value
    suffix = TRUNCATION_MARKER + _short_hash(value)
    return _prefix(value, limit - len(suffix)) + suffix


def _prefix(value: str, room: int) -> str:
    """The longest start of ``value`` within ``room`` UTF-16 code units."""
    cut = value[:room]
    if cut.isascii() or _utf16_length(cut) <= room:
        return cut
    # Cut in UTF-16 itself; "ignore" drops a surrogate pair split by the cut.
    return cut.encode("utf-16-le", "surrogatepass")[: 2 * room].decode("utf-16-le", "ignore")


def _utf16_length(value: str) -> int:
    return len(value.encode("utf-16-le", "surrogatepass")) // 2


def _short_hash(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def _short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
