"""handlers.ingest.handler end to end: the real handler, Security Hub emulated by moto.

Faults are injected at the HTTP layer (aws_fakes.HttpFaults) so botocore's real retry logic and
the handler's FailedFindings retries run; only the sleeps are skipped. Every finding that reaches
moto is checked against the ASFF limits when each test ends (the ``hub`` fixture): moto itself
validates almost nothing.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import botocore.client
import pytest
from aws_fakes import (
    REGION,
    FakeLambdaContext,
    HttpFaults,
    control_message_event,
    encode_payload,
    falco_alert,
    fluent_bit_log_record,
    fluent_bit_merged_record,
    http_faults,
    log_lines,
    stored_findings,
    subscription_event,
    subscription_payload,
)

from handlers import alerts, findings, ingest
from handlers.ingest import ConfigurationError, ImportFailed

DEMO_FILE = Path(__file__).resolve().parents[2] / "demo" / "falco-alerts.jsonl"


# --- fixtures ---------------------------------------------------------------------------------


pytestmark = pytest.mark.usefixtures("ingest_environment")


@pytest.fixture
def api_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every AWS API call any botocore client makes (service.Operation)."""
    calls: list[str] = []
    original = botocore.client.BaseClient._make_api_call

    def record(self: Any, operation: str, params: Any) -> Any:
        calls.append(f"{self.meta.service_model.service_id}.{operation}")
        return original(self, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", record)
    return calls


def emf_documents(text: str) -> list[dict[str, Any]]:
    docs = []
    for line in text.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            docs.append(json.loads(line))
    return docs


def metric_value(docs: list[dict[str, Any]], name: str, **dimensions: str) -> Any:
    """The value of metric ``name`` in the EMF document whose dimensions match exactly."""
    for doc in docs:
        directive = doc["_aws"]["CloudWatchMetrics"][0]
        names = {m["Name"] for m in directive["Metrics"]}
        dims = {key: doc[key] for key in directive["Dimensions"][0]}
        if name in names and dims == {"service": ingest.SERVICE, **dimensions}:
            value = doc[name]  # Powertools writes a list when a metric was added more than once
            return sum(value) if isinstance(value, list) else value
    raise AssertionError(f"no EMF metric {name} with dimensions {dimensions}: {docs}")


def log_records(messages: list[str]) -> dict[str, Any]:
    return subscription_event(messages)


def shell_records(count: int, **alert_args: Any) -> list[str]:
    return [fluent_bit_log_record(falco_alert(n, **alert_args)) for n in range(count)]


def stored_ids() -> set[str]:
    return {f["Id"] for f in stored_findings(REGION)}


# --- volume and idempotency -------------------------------------------------------------------


def test_more_than_100_alerts_in_one_event_all_land_in_calls_of_at_most_100(
    wire: HttpFaults, api_calls: list[str]
) -> None:
    summary = ingest.handler(log_records(shell_records(250)), FakeLambdaContext())

    assert summary == {
        "received": 250,
        "findings": 250,
        "imported": 250,
        "skipped": {},
        "failed": 0,
        "coalesced": 0,
        "not_sent": 0,
    }
    assert [len(r) for r in wire.requests] == [100, 100, 50]
    assert api_calls == ["SecurityHub.BatchImportFindings"] * 3  # nothing else: no STS, no EC2
    assert len(stored_findings(REGION)) == 250  # each checked against the ASFF limits (hub)


def test_redelivery_leaves_the_number_of_findings_unchanged(hub: Any) -> None:
    event = log_records(shell_records(130))
    ingest.handler(event, FakeLambdaContext())
    first = stored_ids()
    summary = ingest.handler(event, FakeLambdaContext(aws_request_id="second-delivery"))
    assert summary["imported"] == 130
    assert stored_ids() == first
    assert len(stored_findings(REGION)) == 130


def test_a_finding_names_the_log_group_stream_and_event_it_came_from(hub: Any) -> None:
    # "Where did this alert go?" answered from the finding: the raw record is one
    # `aws logs filter-log-events` away.
    payload = subscription_payload(
        shell_records(1), log_group="/falco/prod/alerts", log_stream="ip-10-0-1-2/falco"
    )
    ingest.handler(encode_payload(payload), FakeLambdaContext())

    [stored] = stored_findings(REGION)
    assert stored["ProductFields"]["falco/log_group"] == "/falco/prod/alerts"
    assert stored["ProductFields"]["falco/log_stream"] == "ip-10-0-1-2/falco"
    assert stored["ProductFields"]["falco/log_event_id"] == payload["logEvents"][0]["id"]


def test_repeated_alerts_coalesce_into_one_finding(wire: HttpFaults) -> None:
    same = [falco_alert(7, time=f"2026-03-14T03:02:0{s}.000000000Z") for s in range(3)]
    event = log_records([fluent_bit_log_record(a) for a in same] + shell_records(2))
    summary = ingest.handler(event, FakeLambdaContext())
    assert summary["received"] == 5
    assert summary["findings"] == 3  # the three identical-but-for-time alerts became one
    assert summary["coalesced"] == 2
    assert len(stored_findings(REGION)) == 3


def test_the_demo_mix_lands_within_asff_limits(hub: Any) -> None:
    lines = [line for line in DEMO_FILE.read_text().splitlines() if line.strip()]
    summary = ingest.handler(log_records(lines), FakeLambdaContext())
    assert summary["failed"] == 0
    assert len(stored_findings(REGION)) == summary["imported"] >= 9  # limits checked by hub


# --- faults -----------------------------------------------------------------------------------


def test_throttling_429_is_retried_by_botocore_and_everything_lands(
    hub: Any, wire: HttpFaults
) -> None:
    wire.throttle(times=2)  # HTTP 429 TooManyRequestsException, twice
    summary = ingest.handler(log_records(shell_records(120)), FakeLambdaContext())
    assert wire.answered == [429, 429, 200, 200]
    assert len(hub.backoff.delays) == 2  # botocore's retry policy decided both retries
    assert summary["imported"] == 120
    assert summary["failed"] == 0
    assert len(stored_findings(REGION)) == 120


def test_service_unavailable_503_is_retried_and_everything_lands(
    hub: Any, wire: HttpFaults
) -> None:
    wire.unavailable(times=1)
    summary = ingest.handler(log_records(shell_records(20)), FakeLambdaContext())
    assert wire.answered == [503, 200]
    assert summary["imported"] == 20
    assert len(stored_findings(REGION)) == 20


def test_retryable_failed_findings_are_resent_and_land(wire: HttpFaults) -> None:
    event = log_records(shell_records(150))
    rejected = set(_ids_of(event)[:3])
    wire.reject(rejected, "ThrottlingException", "Rate exceeded", times=1)
    summary = ingest.handler(event, FakeLambdaContext())
    assert [len(r) for r in wire.requests] == [100, 50, 3]
    assert set(wire.requests[-1]) == rejected  # only the failed ones were sent again
    assert summary["imported"] == 150
    assert summary["failed"] == 0
    assert stored_ids() == set(_ids_of(event))


def test_permanent_failure_raises_after_importing_all_the_others(
    wire: HttpFaults, capsys: pytest.CaptureFixture[str], logs: io.StringIO
) -> None:
    event = log_records(shell_records(150))
    ids = _ids_of(event)
    wire.reject({ids[0], ids[120]}, "InvalidInput", "Finding does not adhere to ASFF")

    with pytest.raises(ImportFailed, match=r"^2 of 150 findings failed .*InvalidInput x2") as err:
        ingest.handler(event, FakeLambdaContext())

    assert err.value.result.imported == 148
    assert wire.attempts == 2  # a permanent error is not retried
    assert stored_ids() == set(ids) - {ids[0], ids[120]}
    docs = emf_documents(capsys.readouterr().out)
    assert metric_value(docs, "ImportFailures") == 2.0  # metrics flushed despite the raise
    assert metric_value(docs, "FindingsImported") == 148.0
    errors = [line for line in log_lines(logs) if line["message"] == "finding not imported"]
    assert {(e["finding_id"], e["error_code"]) for e in errors} == {
        (ids[0], "InvalidInput"),
        (ids[120], "InvalidInput"),
    }


def _ids_of(event: dict[str, Any]) -> list[str]:
    """The finding Ids the handler will produce for an event, in order (pure code, no AWS)."""
    batch = alerts.decode_subscription_event(event)
    ctx = ingest.finding_context(FakeLambdaContext(), ingest.settings_from_environment())
    records = [alerts.parse_log_event(e) for e in batch.events]
    return [f["Id"] for f in findings.coalesce(records, ctx)]  # type: ignore[arg-type]


# --- what is not imported ---------------------------------------------------------------------


def test_control_message_returns_without_any_call(wire: HttpFaults, api_calls: list[str]) -> None:
    summary = ingest.handler(control_message_event(), FakeLambdaContext())
    assert summary == {
        "received": 0,
        "findings": 0,
        "imported": 0,
        "skipped": {},
        "failed": 0,
        "coalesced": 0,
        "not_sent": 0,
    }
    assert api_calls == []
    assert wire.attempts == 0


def test_junk_records_are_counted_by_reason_and_logged_with_their_ids(
    wire: HttpFaults, logs: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIN_PRIORITY", "Warning")
    internal = {
        "hostname": "ip-10-0-1-23.ec2.internal",
        "output": "Falco internal: syscall event drop. 1184 system calls dropped in last second.",
        "output_fields": {"n_drops": "1184"},
        "priority": "Debug",
        "rule": "Falco internal: syscall event drop",
        "source": "internal",
        "time": "2026-03-14T03:01:12.000000042Z",
    }
    banner = json.dumps(
        {"stream": "stderr", "log": "Sat Mar 14 02:58:57 2026: Falco version: 0.41.3 (x86_64)"}
    )
    messages = [
        fluent_bit_log_record(falco_alert(1, priority="Critical")),  # imported
        "this is not JSON",  # not_json
        banner,  # not_json (the record's log string)
        json.dumps({"level": "info", "msg": "fluent-bit started"}),  # not_falco_alert
        fluent_bit_log_record(internal),  # internal_event
        fluent_bit_log_record(falco_alert(2, priority="Notice")),  # below_min_priority
        fluent_bit_merged_record(falco_alert(3, priority="Error")),  # imported
    ]
    event = log_records(messages)
    ids = [e.id for e in alerts.decode_subscription_event(event).events]

    summary = ingest.handler(event, FakeLambdaContext())

    assert summary["skipped"] == {
        "not_json": 2,
        "not_falco_alert": 1,
        "internal_event": 1,
        "below_min_priority": 1,
    }
    assert summary["imported"] == 2
    skips = {
        line["log_event_id"]: line["reason"]
        for line in log_lines(logs)
        if line["message"] == "record skipped"
    }
    assert skips == {
        ids[1]: "not_json",
        ids[2]: "not_json",
        ids[3]: "not_falco_alert",
        ids[4]: "internal_event",
        ids[5]: "below_min_priority",
    }
    assert len(stored_findings(REGION)) == 2


def test_one_bad_record_never_affects_the_others(
    wire: HttpFaults, monkeypatch: pytest.MonkeyPatch, logs: io.StringIO
) -> None:
    """Even a bug in the pure modules triggered by one record costs only that record."""
    event = log_records(shell_records(5))
    ids = [e.id for e in alerts.decode_subscription_event(event).events]
    parse = alerts.parse_log_event
    group_text, alert_text = findings.FindingBuilder.group_text, findings.FindingBuilder.alert_text

    def parse_breaking_on_one(event: alerts.LogEvent) -> Any:
        if event.id == ids[1]:
            raise RuntimeError("parser bug")
        return parse(event)

    def group_text_breaking_on_one(self: Any, group: Any) -> Any:
        if group.record.log_event_id == ids[3]:
            raise KeyError("mapper bug")
        return group_text(self, group)

    def alert_text_breaking_on_one(self: Any, record: Any) -> Any:
        if record.log_event_id == ids[3]:
            raise KeyError("mapper bug")
        return alert_text(self, record)

    monkeypatch.setattr(alerts, "parse_log_event", parse_breaking_on_one)
    # The handler builds each group's finding (FindingBuilder.group_text) and falls back to the
    # alert alone (alert_text).
    monkeypatch.setattr(findings.FindingBuilder, "group_text", group_text_breaking_on_one)
    monkeypatch.setattr(findings.FindingBuilder, "alert_text", alert_text_breaking_on_one)

    summary = ingest.handler(event, FakeLambdaContext())

    assert summary["skipped"] == {"unexpected_error": 2}
    assert summary["imported"] == 3
    assert len(stored_findings(REGION)) == 3
    skipped = {
        line["log_event_id"] for line in log_lines(logs) if line["message"] == "record skipped"
    }
    assert skipped == {ids[1], ids[3]}


def test_min_priority_is_respected_case_insensitively(
    wire: HttpFaults, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIN_PRIORITY", "error")
    priorities = ["Emergency", "Critical", "Error", "Warning", "Notice", "Debug"]
    messages = [fluent_bit_log_record(falco_alert(n, priority=p)) for n, p in enumerate(priorities)]
    summary = ingest.handler(log_records(messages), FakeLambdaContext())
    assert summary["imported"] == 3
    assert summary["skipped"] == {"below_min_priority": 3}
    assert len(stored_findings(REGION)) == 3


def test_unset_min_priority_imports_debug_alerts(wire: HttpFaults) -> None:
    messages = [fluent_bit_log_record(falco_alert(1, priority="Debug"))]
    summary = ingest.handler(log_records(messages), FakeLambdaContext())
    assert summary["imported"] == 1


def test_a_bad_min_priority_fails_with_the_allowed_values(
    wire: HttpFaults, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIN_PRIORITY", "loud")
    with pytest.raises(ConfigurationError, match="MIN_PRIORITY='loud'") as err:
        ingest.handler(log_records(shell_records(1)), FakeLambdaContext())
    assert "Emergency, Alert, Critical, Error, Warning, Notice, Informational, Debug" in str(
        err.value
    )
    assert wire.attempts == 0


def test_an_event_that_is_not_a_subscription_event_fails(
    wire: HttpFaults, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(alerts.InvalidEvent):
        ingest.handler({"awslogs": {"data": "not base64 gzip"}}, FakeLambdaContext())
    assert metric_value(emf_documents(capsys.readouterr().out), "InvalidEvents") == 1.0
    assert wire.attempts == 0


# --- context, logs, metrics -------------------------------------------------------------------


def test_account_partition_and_region_come_from_the_context_and_environment(
    hub: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_REGION", "us-gov-west-1")
    ingest.securityhub_client.cache_clear()
    client = ingest.securityhub_client("us-gov-west-1")
    context = FakeLambdaContext(
        region="us-gov-west-1", account_id="210987654321", partition="aws-us-gov"
    )
    with http_faults(client) as gov:
        gov.accept_instantly()
        sent: list[dict[str, Any]] = []
        client.meta.events.register(
            "before-send.securityhub.BatchImportFindings",
            lambda request, **_: sent.extend(json.loads(request.body)["Findings"]),
        )
        ingest.handler(log_records(shell_records(2)), context)
    assert len(sent) == 2
    for finding in sent:
        assert finding["AwsAccountId"] == "210987654321"
        assert finding["ProductArn"] == (
            "arn:aws-us-gov:securityhub:us-gov-west-1:210987654321:product/210987654321/default"
        )


def test_the_client_is_created_once_per_container(hub: Any) -> None:
    ingest.handler(log_records(shell_records(1)), FakeLambdaContext())
    ingest.handler(log_records(shell_records(1)), FakeLambdaContext())
    assert ingest.securityhub_client.cache_info().misses == 1
    assert ingest.securityhub_client(REGION).meta.config.retries["mode"] == "standard"


def test_logs_are_json_with_the_request_id_and_a_summary(
    wire: HttpFaults, logs: io.StringIO
) -> None:
    context = FakeLambdaContext(aws_request_id="req-42")
    ingest.handler(log_records([*shell_records(3), "junk"]), context)
    lines = log_lines(logs)
    assert lines, "the handler logged nothing"
    assert all(line["function_request_id"] == "req-42" for line in lines)
    summary = next(line for line in lines if line["message"] == "invocation summary")
    assert summary["imported"] == 3
    assert summary["skipped"] == {"not_json": 1}
    assert summary["import_calls"] == 1
    assert summary["log_group"].startswith("/aws/containerinsights/")


def test_metrics_are_emitted_as_emf(
    wire: HttpFaults, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIN_PRIORITY", "Warning")
    same = [
        falco_alert(9, priority="Error", time=f"2026-03-14T03:02:0{s}.000000000Z") for s in range(2)
    ]
    messages = [
        *[fluent_bit_log_record(a) for a in same],  # two alerts, one finding
        fluent_bit_log_record(falco_alert(1, priority="Critical")),
        fluent_bit_log_record(falco_alert(2, priority="Notice")),  # below MIN_PRIORITY
        "junk",
        "more junk",
    ]
    ingest.handler(log_records(messages), FakeLambdaContext())
    docs = emf_documents(capsys.readouterr().out)

    assert docs[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == ingest.NAMESPACE
    assert metric_value(docs, "AlertsReceived") == 6.0
    assert metric_value(docs, "FindingsImported") == 2.0
    assert metric_value(docs, "Coalesced") == 1.0
    assert metric_value(docs, "RecordsSkipped") == 3.0
    assert metric_value(docs, "ImportFailures") == 0.0
    assert metric_value(docs, "ImportCalls") == 1.0
    assert metric_value(docs, "RecordsSkipped", Reason="not_json") == 2.0
    assert metric_value(docs, "RecordsSkipped", Reason="below_min_priority") == 1.0
    reasons = {doc.get("Reason") for doc in docs} - {None}
    assert reasons <= set(ingest.SKIP_REASONS)  # bounded cardinality


def test_a_broken_coalesce_still_imports_one_finding_per_alert(
    wire: HttpFaults, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Any, group: Any) -> Any:
        raise RuntimeError("coalescing bug")

    monkeypatch.setattr(findings.FindingBuilder, "group_text", broken)
    summary = ingest.handler(log_records(shell_records(4)), FakeLambdaContext())
    assert summary["imported"] == 4
    assert summary["skipped"] == {}
    assert len(stored_findings(REGION)) == 4


def test_a_finding_that_cannot_be_built_skips_only_its_alerts(
    wire: HttpFaults, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = findings.FindingBuilder.alert_text
    event = log_records(shell_records(4))
    poison = alerts.decode_subscription_event(event).events[1].id

    def broken(self: Any, group: Any) -> Any:
        raise RuntimeError("coalescing bug")

    def alone(self: Any, record: Any) -> Any:
        if record.log_event_id == poison:
            raise RuntimeError("mapping bug")
        return original(self, record)

    monkeypatch.setattr(findings.FindingBuilder, "group_text", broken)
    monkeypatch.setattr(findings.FindingBuilder, "alert_text", alone)
    summary = ingest.handler(event, FakeLambdaContext())
    assert summary["imported"] == 3
    assert summary["skipped"] == {"unexpected_error": 1}
    assert len(stored_findings(REGION)) == 3


def test_debug_logs_say_which_log_event_became_which_finding(
    wire: HttpFaults, logs: io.StringIO
) -> None:
    event = log_records(shell_records(2))
    ids = [e.id for e in alerts.decode_subscription_event(event).events]
    previous = ingest.logger.log_level
    ingest.logger.setLevel("DEBUG")
    try:
        ingest.handler(event, FakeLambdaContext())
    finally:
        ingest.logger.setLevel(previous)
    built = [line for line in log_lines(logs) if line["message"] == "finding built"]
    assert {line["log_event_id"] for line in built} == set(ids)
    assert {line["finding_id"] for line in built} == {f["Id"] for f in stored_findings(REGION)}


def test_info_logs_stay_per_invocation_not_per_alert(wire: HttpFaults, logs: io.StringIO) -> None:
    ingest.handler(log_records(shell_records(150)), FakeLambdaContext())
    assert [line["message"] for line in log_lines(logs)] == ["invocation summary"]
