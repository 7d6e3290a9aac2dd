"""handlers.securityhub: chunking, FailedFindings retries, whole-call errors — against moto.

Faults are injected at the HTTP layer (tests/aws_fakes.HttpFaults), below botocore's retry
layer, so the production client config (handlers.securityhub.CLIENT_CONFIG) does the retrying.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest
from aws_fakes import (
    REGION,
    fast_botocore_retries,
    http_faults,
    reset_security_hub,
    stored_findings,
)

from handlers import securityhub
from handlers.securityhub import (
    FINDING_TOO_LARGE,
    MAX_FINDING_BYTES,
    MAX_FINDINGS_PER_CALL,
    MAX_REQUEST_BYTES,
    ImportFailed,
    ImportResult,
    chunk_findings,
    import_findings,
    is_retryable,
)

ACCOUNT = "123456789012"


def finding(n: int, padding: int = 0) -> dict[str, Any]:
    """A minimal finding; ``padding`` characters of Description make it as large as needed."""
    return {
        "SchemaVersion": "2018-10-08",
        "Id": f"falco/test/{n:05d}",
        "ProductArn": f"arn:aws:securityhub:{REGION}:{ACCOUNT}:product/{ACCOUNT}/default",
        "GeneratorId": "falco/Terminal shell in container",
        "AwsAccountId": ACCOUNT,
        "CreatedAt": "2026-01-01T00:00:00Z",
        "UpdatedAt": "2026-01-01T00:00:00Z",
        "Title": f"Finding {n}",
        "Description": "x" * max(1, padding),
        "Severity": {"Label": "HIGH"},
        "Types": ["TTPs/Execution"],
        "Resources": [{"Type": "Other", "Id": f"pod/{n}"}],
    }


def request_bytes(chunk: list[dict[str, Any]]) -> int:
    """The size of the body import_findings sends for this chunk (compact JSON)."""
    return len(json.dumps({"Findings": chunk}, separators=(",", ":")).encode())


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def hub(moto: None) -> Iterator[Any]:
    """A production-configured client on moto with Security Hub enabled; botocore sleeps skipped."""
    reset_security_hub(REGION)
    with fast_botocore_retries() as backoff:
        client = securityhub.new_client(REGION)
        client.backoff = backoff  # the delays botocore's real retry policy chose
        yield client


def stored_ids() -> set[str]:
    return {f["Id"] for f in stored_findings(REGION)}


# --- chunking -------------------------------------------------------------------------------


def test_chunks_hold_at_most_100_findings_in_order() -> None:
    findings = [finding(n) for n in range(250)]
    chunks = list(chunk_findings(findings))
    assert [len(c) for c in chunks] == [100, 100, 50]
    assert [f for c in chunks for f in c] == findings


def test_chunks_stay_under_6_mb_and_are_filled_greedily() -> None:
    # 200 KB findings: 100 of them would be ~20 MB; each request must stay under 6 MB.
    findings = [finding(n, padding=200_000) for n in range(40)]
    chunks = list(chunk_findings(findings))
    assert len(chunks) > 1
    assert all(request_bytes(c) <= MAX_REQUEST_BYTES for c in chunks)
    # Greedy: the next finding would not have fit into the previous request.
    for current, following in itertools.pairwise(chunks):
        assert request_bytes([*current, following[0]]) > MAX_REQUEST_BYTES
    assert sum(len(c) for c in chunks) == 40


def test_chunking_refuses_a_finding_over_240_kb() -> None:
    with pytest.raises(ValueError, match="limit is 240000"):
        list(chunk_findings([finding(1), finding(2, padding=MAX_FINDING_BYTES)]))


# --- retry classification -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "retryable"),
    [
        ("ThrottlingException", True),
        ("TooManyRequestsException", True),
        ("LimitExceededException", True),
        ("LimitExceeded", True),
        ("InternalException", True),
        ("InternalFailure", True),
        ("ServiceUnavailableException", True),
        ("InvalidInput", False),
        ("InvalidInputException", False),
        ("AccessDeniedException", False),
        ("InvalidAccessException", False),
        (FINDING_TOO_LARGE, False),
        ("SomethingNew", False),
    ],
)
def test_error_codes_are_classified(code: str, retryable: bool) -> None:
    assert is_retryable(code) is retryable


# --- imports against moto -------------------------------------------------------------------


def test_more_than_100_findings_all_land_in_requests_of_at_most_100(hub: Any) -> None:
    findings = [finding(n) for n in range(230)]
    with http_faults(hub) as wire:
        result = import_findings(hub, findings, sleep=Sleeps())
    assert result.imported == 230
    assert result.failed == []
    assert result.calls == 3
    assert [len(r) for r in wire.requests] == [100, 100, 30]
    assert stored_ids() == {f["Id"] for f in findings}


def test_reimport_updates_instead_of_duplicating(hub: Any) -> None:
    findings = [finding(n) for n in range(120)]
    import_findings(hub, findings, sleep=Sleeps())
    import_findings(hub, findings, sleep=Sleeps())
    assert len(stored_findings(REGION)) == 120


def test_a_finding_over_240_kb_is_refused_and_the_others_are_sent(hub: Any) -> None:
    big = finding(0, padding=MAX_FINDING_BYTES)
    small = [finding(n) for n in range(1, 4)]
    with http_faults(hub) as wire:
        result = import_findings(hub, [big, *small], sleep=Sleeps())
    assert [(f.id, f.error_code) for f in result.failed] == [(big["Id"], FINDING_TOO_LARGE)]
    assert result.imported == 3
    assert all(big["Id"] not in ids for ids in wire.requests)
    assert stored_ids() == {f["Id"] for f in small}


def test_throttled_call_is_retried_by_botocore_and_lands(hub: Any) -> None:
    findings = [finding(n) for n in range(150)]
    sleeps = Sleeps()
    with http_faults(hub) as wire:
        wire.throttle(times=2)  # HTTP 429 TooManyRequestsException twice, then moto answers
        result = import_findings(hub, findings, sleep=sleeps)
    assert wire.answered == [429, 429, 200, 200]
    assert len(hub.backoff.delays) == 2  # botocore's own retry policy ran (and chose delays)
    assert result.botocore_retries == 2
    assert result.calls == 2  # calls this module made; botocore retried inside the first
    assert sleeps == []  # no FailedFindings, so no retry rounds of our own
    assert result.imported == 150
    assert stored_ids() == {f["Id"] for f in findings}


def test_service_unavailable_is_retried_by_botocore_and_lands(hub: Any) -> None:
    findings = [finding(n) for n in range(10)]
    with http_faults(hub) as wire:
        wire.unavailable(times=1)
        result = import_findings(hub, findings, sleep=Sleeps())
    assert wire.answered == [503, 200]
    assert result.failed == []
    assert stored_ids() == {f["Id"] for f in findings}


def test_retryable_failed_findings_are_resent_alone_and_land(hub: Any) -> None:
    findings = [finding(n) for n in range(120)]
    throttled = {findings[3]["Id"], findings[110]["Id"]}
    sleeps = Sleeps()
    with http_faults(hub) as wire:
        wire.reject(throttled, "ThrottlingException", times=1)
        result = import_findings(hub, findings, sleep=sleeps)
    # First round: both chunks; second round: only the two throttled findings.
    assert [len(r) for r in wire.requests] == [100, 20, 2]
    assert set(wire.requests[2]) == throttled
    assert len(sleeps) == 1
    assert 0 <= sleeps[0] <= 1.0
    assert result == ImportResult(imported=120, failed=[], calls=3, retried=2)
    assert stored_ids() == {f["Id"] for f in findings}


def test_permanent_failures_are_not_retried_and_everything_else_lands(hub: Any) -> None:
    findings = [finding(n) for n in range(150)]
    rejected = {findings[0]["Id"], findings[149]["Id"]}
    sleeps = Sleeps()
    with http_faults(hub) as wire:
        wire.reject(rejected, "InvalidInput", "Finding does not adhere to ASFF")
        result = import_findings(hub, findings, sleep=sleeps)
    assert wire.attempts == 2
    assert sleeps == []
    assert result.imported == 148
    assert {(f.id, f.error_code) for f in result.failed} == {(i, "InvalidInput") for i in rejected}
    assert stored_ids() == {f["Id"] for f in findings} - rejected


def test_retries_are_bounded_with_growing_jittered_backoff(
    hub: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    jitter: list[tuple[float, float]] = []

    def top_of_range(low: float, high: float) -> float:
        jitter.append((low, high))
        return high

    monkeypatch.setattr(securityhub.random, "uniform", top_of_range)
    findings = [finding(n) for n in range(5)]
    sleeps = Sleeps()
    with http_faults(hub) as wire:
        wire.reject({findings[2]["Id"]}, "InternalException")  # fails on every send
        result = import_findings(hub, findings, max_rounds=4, sleep=sleeps)
    assert wire.attempts == 4
    assert [len(r) for r in wire.requests] == [5, 1, 1, 1]
    assert jitter == [(0.0, 1.0), (0.0, 2.0), (0.0, 4.0)]  # full jitter over a doubling range
    assert sleeps == [1.0, 2.0, 4.0]
    assert [(f.id, f.error_code) for f in result.failed] == [
        (findings[2]["Id"], "InternalException")
    ]
    assert result.imported == 4


def test_a_chunk_that_fails_whole_after_botocore_retries_does_not_stop_the_others(
    hub: Any,
) -> None:
    findings = [finding(n) for n in range(250)]
    sleeps = Sleeps()
    with http_faults(hub) as wire:
        wire.throttle(times=5)  # CLIENT_CONFIG allows 5 attempts: the first chunk gives up
        result = import_findings(hub, findings, sleep=sleeps)
    assert wire.answered == [429] * 5 + [200, 200]
    assert len(hub.backoff.delays) == 4
    assert sleeps == []  # botocore already retried that call: no extra rounds on top
    assert result.imported == 150
    assert len(result.failed) == 100
    assert {f.error_code for f in result.failed} == {"TooManyRequestsException"}
    assert stored_ids() == {f["Id"] for f in findings[100:]}


def test_an_access_error_marks_the_chunk_failed(hub: Any) -> None:
    findings = [finding(n) for n in range(3)]
    with http_faults(hub) as wire:
        wire.fail_call(403, "AccessDeniedException")
        result = import_findings(hub, findings, sleep=Sleeps())
    assert wire.attempts == 1  # not retried by botocore either
    assert {f.error_code for f in result.failed} == {"AccessDeniedException"}
    assert stored_ids() == set()


def test_import_failed_names_the_count_and_codes() -> None:
    result = ImportResult(
        imported=7,
        failed=[
            securityhub.FailedFinding("a", "InvalidInput", "bad"),
            securityhub.FailedFinding("b", "InvalidInput", "bad"),
            securityhub.FailedFinding("c", "TooManyRequestsException", "slow down"),
        ],
        calls=2,
    )
    error = ImportFailed(result)
    assert error.result is result
    assert str(error).startswith("3 of 10 findings failed to import after retries")
    assert "InvalidInput x2" in str(error)
    assert "TooManyRequestsException x1" in str(error)


def test_client_config_retries_throttling_with_bounded_timeouts() -> None:
    config = securityhub.CLIENT_CONFIG
    assert config.retries == {"mode": "standard", "total_max_attempts": 5}
    assert config.parameter_validation is False  # the body is serialized by import_findings
    assert config.connect_timeout <= 5
    assert config.read_timeout <= 30
    assert MAX_FINDINGS_PER_CALL == 100


# --- the request body -----------------------------------------------------------------------


def test_the_request_body_is_the_findings_as_compact_json(hub: Any) -> None:
    findings = [finding(n, padding=50) for n in range(150)]
    with http_faults(hub) as wire:
        import_findings(hub, findings, sleep=Sleeps())
    assert [json.loads(body) for body in wire.bodies] == [
        {"Findings": findings[:100]},
        {"Findings": findings[100:]},
    ]
    assert all(
        b", " not in body and len(body) == request_bytes(findings[:100]) for body in wire.bodies[:1]
    )
    assert stored_findings(REGION)[0] == {**findings[0], **stored_findings(REGION)[0]}


def test_a_plain_boto3_client_works_too(moto: None) -> None:
    """A client with botocore's default config (validating parameters) gets the plain call."""
    import boto3

    reset_security_hub(REGION)
    client = boto3.client("securityhub", region_name=REGION)
    result = import_findings(client, [finding(n) for n in range(3)], sleep=Sleeps())
    assert result.imported == 3
    assert len(stored_findings(REGION)) == 3


def test_a_client_that_is_not_botocore_gets_the_plain_call() -> None:
    class Recorder:
        def __init__(self) -> None:
            self.calls: list[dict[str, Any]] = []

        def batch_import_findings(self, **kwargs: Any) -> dict[str, Any]:
            self.calls.append(kwargs)
            return {"FailedCount": 0, "SuccessCount": len(kwargs["Findings"]), "FailedFindings": []}

    findings = [finding(n) for n in range(2)]
    client = Recorder()
    result = import_findings(client, findings, sleep=Sleeps())
    assert client.calls == [{"Findings": findings}]
    assert result.imported == 2
