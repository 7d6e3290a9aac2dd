"""Whatever arrives in a log event, the pipeline yields a finding within every ASFF limit or a Skip
with a reason ingest can count, and never an exception."""

import json
from dataclasses import replace
from typing import Any

from asff_limits import assert_within_asff_limits
from finding_oracle import assert_every_alert_counted_once, assert_says_what_the_alert_says
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from handlers.alerts import (
    MAX_SKIP_DETAIL,
    SKIP_REASONS,
    AlertRecord,
    LogEvent,
    Skip,
    parse_log_event,
)
from handlers.findings import (
    FindingContext,
    coalesce,
    coalesce_texts,
    filter_alert,
    to_finding,
)
from handlers.names import FALCO_PRIORITIES

PROPERTIES = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Any character JSON can carry, lone surrogates and control characters included.
ANY_CHARACTER = st.characters(exclude_categories=())
texts = st.text(ANY_CHARACTER, max_size=40)
long_texts = st.text(ANY_CHARACTER, min_size=200, max_size=3000)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | texts
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)

priorities = (
    st.sampled_from(FALCO_PRIORITIES)
    | st.sampled_from(FALCO_PRIORITIES).map(str.upper)
    | st.sampled_from(FALCO_PRIORITIES).map(lambda p: f" {p.lower()} ")
    | json_values
)
rules = (
    st.sampled_from(["Terminal shell in container", "Write below etc", "Falco internal: drop"])
    | texts
    | long_texts
    | json_values
)
times = (
    st.datetimes().map(lambda moment: moment.isoformat() + "Z")
    | st.datetimes().map(lambda moment: moment.isoformat(timespec="microseconds") + "+05:30")
    | st.sampled_from(
        ["2024-05-25T13:44:05.478445995Z", "2024-02-30T00:00:00Z", "9999-12-31T23:59:59-01:00"]
    )
    | json_values
)
field_keys = (
    st.sampled_from(
        [
            "container.id",
            "container.name",
            "container.full_id",
            "container.image.repository",
            "container.image.tag",
            "container.start_ts",
            "container.privileged",
            "k8s.ns.name",
            "k8s.pod.name",
            "proc.name",
            "proc.exepath",
            "proc.cmdline",
            "proc.pid",
            "proc.ppid",
            "user.name",
            "fd.name",
            "evt.time",
            "evt.time.iso8601",
            "ka.target.resource",
            "ka.target.name",
            "ka.target.namespace",
            "ka.user.name",
        ]
    )
    | texts
    | st.text(min_size=120, max_size=300)
)
field_values = (
    json_values
    | long_texts
    | st.sampled_from(["host", "<NA>", "", "   "])
    | st.integers(min_value=-(2**63), max_value=2**63)
)
tags = st.lists(
    st.sampled_from(
        [
            "mitre_execution",
            "mitre_impact",
            "mitre_exfiltration",
            "T1059",
            "TA0043",
            "T1496",
            "t1611.001",
            "container",
            "host",
            "mitre_bogus",
        ]
    )
    | texts,
    max_size=80,
)
alerts = st.fixed_dictionaries(
    {"rule": rules, "priority": priorities},
    optional={
        "time": times,
        "output": texts | long_texts | json_values,
        "output_fields": st.dictionaries(field_keys, field_values, max_size=70) | json_values,
        "tags": tags | json_values,
        "source": st.sampled_from(["syscall", "k8s_audit", "internal", "aws_cloudtrail", "dummy"])
        | json_values,
        "hostname": texts | long_texts | json_values,
    },
)
metadata = st.fixed_dictionaries(
    {},
    optional={
        "kubernetes": st.fixed_dictionaries({}, optional={"host": texts | json_values})
        | json_values,
        "cluster_name": texts | long_texts | json_values,
        "ec2_instance_id": texts | json_values,
        "ec2_instance_type": texts | json_values,
        "private_ip": texts | json_values,
        "hostname": texts | json_values,
    },
)
contexts = st.builds(
    FindingContext,
    account_id=st.just("123456789012"),
    region=st.sampled_from(["us-west-2", "eu-central-1"]),
    partition=st.sampled_from(["aws", "aws-cn", "aws-us-gov"]),
    cluster_name=st.none() | texts | long_texts,
    min_priority=st.sampled_from(FALCO_PRIORITIES),
)


@st.composite
def shipped(draw: st.DrawFn, payload: st.SearchStrategy[Any]) -> str:
    """``payload`` in one of the record shapes Fluent Bit can deliver, as the log event message."""
    value = draw(payload)
    extra = draw(metadata)
    cri = {"time": "2024-05-25T13:44:05.481237806Z", "stream": "stdout", "_p": "F"}
    shape = draw(st.sampled_from(["raw", "log", "data", "log_processed", "any_key", "top", "cri"]))
    if shape == "raw":
        return json.dumps(value)
    if shape == "log":
        return json.dumps({**cri, **extra, "log": json.dumps(value)})
    if shape in ("data", "log_processed"):
        return json.dumps({**cri, **extra, shape: value})
    if shape == "any_key":
        return json.dumps({**cri, **extra, "falco": value})
    if shape == "top" and isinstance(value, dict):
        return json.dumps({**value, **cri, **extra})
    return f"2024-05-25T13:44:05.481237806Z stdout F {json.dumps(value)}"


def run_pipeline(message: str, ctx: FindingContext, timestamp_ms: int = 1716644645482) -> None:
    parsed = parse_log_event(LogEvent("event-1", timestamp_ms, message))
    if isinstance(parsed, Skip):
        assert_counted(parsed)
        return
    assert isinstance(parsed, AlertRecord)
    assert isinstance(parsed.alert["rule"], str)
    skipped = filter_alert(parsed, ctx)
    if skipped is not None:
        assert_counted(skipped)
        return
    event("finding")
    finding = to_finding(parsed, ctx)
    assert_within_asff_limits(finding)
    assert_says_what_the_alert_says(finding, parsed.alert, ctx, alone=True)


def assert_counted(skip: Skip) -> None:
    event(f"skip: {skip.reason}")
    assert skip.reason in SKIP_REASONS
    assert skip.log_event_id == "event-1"
    assert 0 < len(skip.detail) <= MAX_SKIP_DETAIL
    assert not skip.detail.startswith("parser error"), skip.detail


@PROPERTIES
@given(message=st.text(ANY_CHARACTER, max_size=300), ctx=contexts)
def test_any_text_is_a_finding_or_a_counted_skip(message, ctx):
    run_pipeline(message, ctx)


@PROPERTIES
@given(message=json_values.map(json.dumps), ctx=contexts)
def test_any_json_is_a_finding_or_a_counted_skip(message, ctx):
    run_pipeline(message, ctx)


@PROPERTIES
@given(message=shipped(json_values), ctx=contexts)
def test_any_json_in_any_record_shape_is_a_finding_or_a_counted_skip(message, ctx):
    run_pipeline(message, ctx)


@PROPERTIES
@given(
    message=shipped(alerts),
    ctx=contexts,
    timestamp_ms=st.integers(min_value=-(2**64), max_value=2**64),
)
def test_any_alert_like_object_in_any_record_shape_is_a_finding_or_a_counted_skip(
    message, ctx, timestamp_ms
):
    run_pipeline(message, ctx, timestamp_ms)


@PROPERTIES
@given(batch=st.lists(shipped(alerts), max_size=6), ctx=contexts, data=st.data())
def test_any_batch_coalesces_into_findings_within_limits_the_same_way_every_time(batch, ctx, data):
    # Re-deliveries of the same events: duplicates coalesce with their twins.
    duplicates = data.draw(st.lists(st.sampled_from(batch), max_size=4)) if batch else []
    records = []
    for number, message in enumerate(batch + duplicates):
        parsed = parse_log_event(LogEvent(f"event-{number}", 1716644645482 + number, message))
        if isinstance(parsed, AlertRecord) and filter_alert(parsed, ctx) is None:
            records.append(parsed)

    found = coalesce(records, ctx)

    assert_every_alert_counted_once(found, len(records))
    if "NaN" not in "".join(batch):  # NaN equals nothing, not even a re-delivered NaN
        assert len(found) <= len(set(batch))  # re-deliveries coalesce with their twins
    for finding in found:
        assert_within_asff_limits(finding)
    assert coalesce(list(records), ctx) == found


@PROPERTIES
@given(
    batch=st.lists(shipped(alerts), min_size=1, max_size=6),
    ctx=contexts,
    log_group=st.none() | texts,
    log_stream=st.none() | texts,
)
def test_what_the_lambda_sends_is_within_limits_and_says_what_each_alert_says(
    batch, ctx, log_group, log_stream
):
    ctx = replace(ctx, log_group=log_group, log_stream=log_stream)
    records = []
    for number, message in enumerate(batch):
        parsed = parse_log_event(LogEvent(f"event-{number}", 1716644645482 + number, message))
        if isinstance(parsed, AlertRecord) and filter_alert(parsed, ctx) is None:
            records.append(parsed)

    sent = [(finding_id, json.loads(text)) for finding_id, text in coalesce_texts(records, ctx)]

    assert_every_alert_counted_once([finding for _, finding in sent], len(records))
    for finding_id, finding in sent:
        assert finding_id == finding["Id"]
        assert_within_asff_limits(finding)
    # A group's finding is its earliest alert's, and names that alert's log event.
    by_event = {finding["ProductFields"]["falco/log_event_id"]: finding for _, finding in sent}
    for record in records:
        if record.log_event_id in by_event:
            finding = by_event[record.log_event_id]
            assert_says_what_the_alert_says(finding, record.alert, ctx, alone=False)
