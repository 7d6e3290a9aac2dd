"""Load test: the real handler, many invocations at once, against Security Hub's quota.

``make loadtest`` (``.venv/bin/python bench/loadtest.py``; also run by ``make test``).

* Security Hub is moto (in-process) behind an HTTP endpoint on 127.0.0.1 (aws_fakes.LocalEndpoint:
  moto's ThreadedMotoServer needs Flask, not a project dependency) with a quota emulator in front:
  a token bucket of 10 requests/s with a burst of 30, per account and Region as AWS documents it,
  answering HTTP 429 TooManyRequestsException when empty. The handler's client reaches it through
  AWS_ENDPOINT_URL_SECURITYHUB, with its real retry configuration and real backoff sleeps.
* ALERTS distinct alerts in INVOCATIONS subscription events, invoked CONCURRENCY at a time
  (threads standing in for Lambda containers), each with a Lambda context whose remaining time
  runs down from the function's 180 s timeout.
* Lambda's asynchronous retries are simulated: a failed invocation is retried twice (after
  RETRY_DELAYS, scaled down from Lambda's minutes), then its on-failure record goes to an SQS
  queue (moto), which ``handlers redrive`` then re-imports.

Prints alerts sent, findings in Security Hub, lost (must be 0), findings/s and its ratio to the
1,000 findings/s the quota allows, and the peak memory of one invocation. Exits 1 if anything is
lost.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import threading
import time
import tracemalloc
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "falco-securityhub")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "FalcoSecurityHub")
os.environ["CLUSTER_NAME"] = "shop-prod-use1"

import boto3  # noqa: E402
from aws_fakes import (  # noqa: E402
    ACCOUNT_ID,
    REGION,
    FakeLambdaContext,
    LocalEndpoint,
    falco_alert,
    fluent_bit_log_record,
    moto_security_hub,
    subscription_event,
)
from moto.securityhub.models import securityhub_backends  # noqa: E402

from handlers import ingest, redrive  # noqa: E402

ALERTS = int(os.environ.get("LOADTEST_ALERTS", "12000"))
INVOCATIONS = int(os.environ.get("LOADTEST_INVOCATIONS", "60"))
CONCURRENCY = int(os.environ.get("LOADTEST_CONCURRENCY", "16"))
RATE_PER_SECOND = 10.0  # Security Hub BatchImportFindings quota, per account and Region
BURST = 30
QUOTA_FINDINGS_PER_SECOND = 1000  # 10 requests/s x 100 findings
RETRY_DELAYS = (1.0, 2.0)  # Lambda: ~1 min, then ~2 min; scaled down
TIMEOUT_SECONDS = 180
# A Security Hub outage (HTTP 503 to every import) this many seconds into the run: botocore's
# retries for 5xx back off briefly, so invocations in it fail all three Lambda attempts and go to
# the on-failure queue, which the redrive then empties.
OUTAGE = (2.0, 9.0)


class TokenBucket:
    """Security Hub's request quota: RATE_PER_SECOND refill, BURST capacity."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()
        self.lock = threading.Lock()
        self.admitted = 0
        self.throttled = 0

    def take(self) -> bool:
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1:
                self.tokens -= 1
                self.admitted += 1
                return True
            self.throttled += 1
            return False


class QuotaEndpoint(LocalEndpoint):
    """LocalEndpoint with Security Hub's quota (and an outage window) in front of moto."""

    def __init__(self, bucket: TokenBucket) -> None:
        super().__init__()
        self.bucket = bucket
        self.outage: tuple[float, float] | None = None  # monotonic start, end
        self.unavailable = 0

    def _answer(self, http: Any) -> None:
        if http.path == "/findings/import":
            now = time.monotonic()
            if self.outage and self.outage[0] <= now < self.outage[1]:
                self.unavailable += 1
                return self._error(http, 503, "ServiceUnavailableException")
            if not self.bucket.take():
                return self._error(http, 429, "TooManyRequestsException")
        return super()._answer(http)

    @staticmethod
    def _error(http: Any, status: int, code: str) -> None:
        http.rfile.read(int(http.headers.get("Content-Length") or 0))
        data = json.dumps({"message": code}).encode()
        http.send_response(status)
        http.send_header("x-amzn-ErrorType", code)
        http.send_header("Content-Type", "application/json")
        http.send_header("Content-Length", str(len(data)))
        http.end_headers()
        http.wfile.write(data)


class CountdownContext(FakeLambdaContext):
    """A Lambda context whose remaining time runs down in real time from the timeout."""

    def __init__(self, request_id: str) -> None:
        super().__init__(aws_request_id=request_id)
        self.deadline = time.monotonic() + TIMEOUT_SECONDS

    def get_remaining_time_in_millis(self) -> int:
        return int((self.deadline - time.monotonic()) * 1000)


@dataclass
class Tally:
    invocations: int = 0
    attempts: int = 0
    retried: int = 0
    to_queue: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


def on_failure_record(event: dict[str, Any], request_id: str, error: BaseException) -> str:
    return json.dumps(
        {
            "version": "1.0",
            "requestContext": {
                "requestId": request_id,
                "functionArn": f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:falco-findings",
                "condition": "RetriesExhausted",
                "approximateInvokeCount": 1 + len(RETRY_DELAYS),
            },
            "requestPayload": event,
            "responsePayload": {"errorType": type(error).__name__, "errorMessage": str(error)},
        }
    )


def invoke_async(event: dict[str, Any], request_id: str, queue_url: str, tally: Tally) -> None:
    """Lambda's asynchronous invocation: the first attempt, two retries, then on-failure."""
    error: BaseException | None = None
    for attempt, delay in enumerate((0.0, *RETRY_DELAYS)):
        time.sleep(delay)
        with tally.lock:
            tally.attempts += 1
            tally.retried += attempt > 0
        try:
            ingest.handler(event, CountdownContext(f"{request_id}-{attempt}"))
            return
        except Exception as exc:  # what Lambda sees: the invocation failed
            error = exc
            with tally.lock:
                tally.errors[type(exc).__name__] += 1
    assert error is not None
    with tally.lock:
        tally.to_queue += 1
    boto3.client("sqs", region_name=REGION).send_message(
        QueueUrl=queue_url, MessageBody=on_failure_record(event, request_id, error)
    )


def findings_in_security_hub() -> int:
    """Distinct finding Ids moto holds (read from its backend: no request against the quota)."""
    return len({finding.id for finding in securityhub_backends[ACCOUNT_ID][REGION].findings})


def build_events(invocations: int, first_alert: int) -> list[dict[str, Any]]:
    per_event = ALERTS // INVOCATIONS
    return [
        subscription_event(
            [
                fluent_bit_log_record(falco_alert(n))
                for n in range(first_alert + i * per_event, first_alert + (i + 1) * per_event)
            ]
        )
        for i in range(invocations)
    ]


@dataclass
class Phase:
    name: str
    alerts: int
    seconds: float
    landed: int  # findings in Security Hub after the invocations (before any redrive)
    admitted: int
    throttled: int
    unavailable: int
    tally: Tally


def run_phase(
    name: str,
    events: list[dict[str, Any]],
    endpoint: QuotaEndpoint,
    queue_url: str,
    outage: tuple[float, float] | None,
) -> Phase:
    """Invoke every event (CONCURRENCY at once, Lambda's async retries, on-failure queue)."""
    time.sleep(BURST / RATE_PER_SECOND)  # the bucket full again: each phase starts fresh
    bucket = endpoint.bucket
    bucket.admitted = bucket.throttled = endpoint.unavailable = 0
    before = findings_in_security_hub()
    tally = Tally()
    start = time.monotonic()
    endpoint.outage = (start + outage[0], start + outage[1]) if outage else None
    with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
        futures = [
            pool.submit(invoke_async, event, f"{name}-{i}", queue_url, tally)
            for i, event in enumerate(events)
        ]
        for future in futures:
            future.result()
    seconds = time.monotonic() - start
    alerts = (ALERTS // INVOCATIONS) * len(events)
    return Phase(
        name,
        alerts,
        seconds,
        findings_in_security_hub() - before,
        bucket.admitted,
        bucket.throttled,
        endpoint.unavailable,
        tally,
    )


def report(phase: Phase) -> None:
    rate = phase.landed / phase.seconds
    admissible = BURST + RATE_PER_SECOND * phase.seconds  # the burst, then the refill
    tally = phase.tally
    print(
        f"  {phase.name}: {phase.alerts} alerts, {sum(tally.errors.values())}"
        f" failed attempts, {tally.retried} Lambda retries, {tally.to_queue} to the on-failure "
        f"queue; {phase.admitted} imports admitted, {phase.throttled} answered 429, "
        f"{phase.unavailable} answered 503"
    )
    # Beyond the first second, the quota's burst is spent: the sustained rate leaves it out.
    sustained = max(0, phase.landed - BURST * 100) / phase.seconds
    print(
        f"    sustained (the burst's {BURST * 100} findings left out): {sustained:.0f} findings/s "
        f"= {sustained / QUOTA_FINDINGS_PER_SECOND:.2f} of the ceiling"
    )
    print(
        f"    {phase.landed} findings in {phase.seconds:.1f} s: {rate:.0f} findings/s = "
        f"{rate / QUOTA_FINDINGS_PER_SECOND:.2f} of the {QUOTA_FINDINGS_PER_SECOND} findings/s "
        f"ceiling; the quota admitted at most {admissible:.0f} requests in that time "
        f"(burst {BURST} + {RATE_PER_SECOND:.0f}/s), {phase.admitted / admissible:.2f} of them used"
    )


def one_invocation_peak_mb(event: dict[str, Any]) -> float:
    """Python-level peak memory of one invocation of this test's events (tracemalloc)."""
    tracemalloc.start()
    try:
        ingest.handler(event, CountdownContext("peak"))
        return tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


@contextlib.contextmanager
def quiet_handler() -> Any:
    sink = io.StringIO()
    log_handler = ingest.logger.registered_handler
    previous = log_handler.setStream(sink)  # type: ignore[attr-defined]
    try:
        with contextlib.redirect_stdout(sink):
            yield
    finally:
        log_handler.setStream(previous)  # type: ignore[attr-defined]


def main() -> int:
    steady = build_events(INVOCATIONS, 0)
    stormy = build_events(INVOCATIONS // 2, ALERTS)
    sent = (ALERTS // INVOCATIONS) * (len(steady) + len(stormy))
    with moto_security_hub(REGION), QuotaEndpoint(TokenBucket(RATE_PER_SECOND, BURST)) as endpoint:
        os.environ["AWS_ENDPOINT_URL_SECURITYHUB"] = endpoint.url
        ingest.securityhub_client.cache_clear()
        queue_url = boto3.client("sqs", region_name=REGION).create_queue(
            QueueName="falco-findings-failed"
        )["QueueUrl"]
        with quiet_handler():
            # One invocation alone first (its findings are imported again below: same Ids).
            peak_mb = one_invocation_peak_mb(steady[0])
            phases = [
                run_phase("steady load", steady, endpoint, queue_url, None),
                run_phase("with an outage", stormy, endpoint, queue_url, OUTAGE),
            ]
            out = io.StringIO()
            redrive_start = time.monotonic()
            status = redrive.run(
                redrive.RedriveOptions(queue_url=queue_url, region=REGION, progress=False),
                stdout=out,
                stderr=io.StringIO(),
            )
            redrive_seconds = time.monotonic() - redrive_start
        landed = findings_in_security_hub()
        os.environ.pop("AWS_ENDPOINT_URL_SECURITYHUB", None)
        ingest.securityhub_client.cache_clear()

    invocations = len(steady) + len(stormy)
    print(
        f"load test: {sent} alerts in {invocations} invocations, {CONCURRENCY} at once; Security "
        f"Hub quota {RATE_PER_SECOND:.0f} requests/s, burst {BURST}; outage (HTTP 503) from "
        f"{OUTAGE[0]:.0f} s to {OUTAGE[1]:.0f} s of the second phase"
    )
    for phase in phases:
        report(phase)
    redriven = out.getvalue().strip().splitlines()[-1]
    print(f"  redrive ({redrive_seconds:.1f} s, exit {status}): {redriven}")
    per_event = ALERTS // INVOCATIONS
    print(f"  peak memory of one invocation ({per_event} alerts): {peak_mb:.1f} MB (tracemalloc)")
    lost = sent - landed
    print(f"alerts sent {sent}, findings in Security Hub {landed}, lost {lost}")
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
