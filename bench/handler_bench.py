"""Per-alert cost of the Lambda handler next to the pure decode floor, and what it means for a user:
findings/s per invocation, CPU share of the billed time, and Lambda cost per million alerts.

Run with ``make bench`` (``.venv/bin/python bench/handler_bench.py``). Prints figures; asserts
nothing about timing (machines differ). What it measures:

1. One CloudWatch Logs subscription payload of 1,000 distinct, realistic Falco alerts in Fluent
   Bit's ``log``-string record shape (with aws and kubernetes metadata), split into as many
   events as the ~1 MB payload limit requires.
2. The decode floor: base64 + gunzip + json.loads of the payload + json.loads of every nested
   ``log`` string, per alert. Nothing the handler does can be cheaper than this.
3. The handler end to end, per alert, with Security Hub answered instantly at the HTTP layer (a
   botocore before-send hook returning 200 ``{"FailedCount":0,...}``): decoding, parsing,
   mapping, coalescing, chunking, botocore serialization, logging and EMF metrics. The ratio to
   the floor is the handler's own overhead (a ceiling to keep: <= 5x).
4. The AWS calls it made (target: ceil(N/100) BatchImportFindings, nothing else).
5. Cold start: importing handlers.ingest in a fresh interpreter.
6. 100 alerts through the handler into in-process moto, next to ~7 ms/alert for the AWS
   guidance's Lambda under moto (target: >= 30x faster).
7. In a user's terms, from the handler's measured time and the assumptions below: how many
   findings/s one invocation delivers (Security Hub takes 1,000 findings/s per account and
   Region), which share of an invocation's billed time is CPU at 256 MB, and what a million
   alerts cost in Lambda charges.

Powertools logging stays at INFO (production) during measurements; logs and EMF are written to
an in-memory stream so the terminal shows only the figures.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import gzip
import io
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "INFO")
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "falco-securityhub")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "FalcoSecurityHub")

import aws_fakes  # noqa: E402 - after sys.path; fake credentials, moto, event builders

N_ALERTS = 1000
MAX_PAYLOAD_BYTES = 1_000_000  # CloudWatch Logs delivers at most ~1 MB of log events at once
RUNS = 7
# Floor and handler are timed in alternation, round after round, so the noise of a shared VM
# falls on both alike and the ratio compares like with like.
PAIRED_ROUNDS = 15
REFERENCE_MS_PER_ALERT = 7.0  # the AWS guidance's Lambda under moto (shared notes)
DEMO_FILE = ROOT / "demo" / "falco-alerts.jsonl"

# Assumptions for the figures in a user's terms (printed with them).
SECURITY_HUB_FINDINGS_PER_S = 1000  # BatchImportFindings quota, per account and Region
MEMORY_MB = 256  # the function's memory: the default of the lambdaMemoryMb setting
VCPU_SHARE = MEMORY_MB / 1769  # Lambda gives one full vCPU at 1,769 MB, proportionally less below
# BatchImportFindings round trip from Lambda in the same Region, per call of up to 100 findings:
# an assumption (not measured here), on the slow side of the 100-300 ms such calls take.
IMPORT_CALL_SECONDS = 0.25
PRICE_PER_GB_SECOND = 0.0000133334  # arm64
PRICE_PER_REQUEST = 0.20 / 1_000_000


# --- input ------------------------------------------------------------------------------------


def template_alerts() -> list[dict[str, Any]]:
    """The demo's Falco alerts (any record shape), minus internal events: realistic shapes."""
    found = []
    for line in DEMO_FILE.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        alert = record if "rule" in record else record.get("data")
        if alert is None and str(record.get("log", "")).startswith("{"):
            alert = json.loads(record["log"])
        if alert and alert.get("source") != "internal":
            found.append(alert)
    return found


def distinct_alerts(n: int) -> list[dict[str, Any]]:
    """n alerts that differ in more than their time (so none coalesce): pods, pids, users."""
    templates = template_alerts()
    made = []
    for i in range(n):
        alert = copy.deepcopy(templates[i % len(templates)])
        fields = alert.setdefault("output_fields", {})
        suffix = f"{i:05d}"
        if "k8s.pod.name" in fields:
            fields["k8s.pod.name"] = f"{fields['k8s.pod.name']}-{suffix}"
            fields["container.id"] = f"{i:012x}"
            fields["proc.pid"] = 10_000 + i
        else:  # k8s audit alerts: another target object
            fields["ka.target.name"] = f"{fields.get('ka.target.name', 'target')}-{suffix}"
        seconds = 3 * 3600 + i // 10
        alert["time"] = f"2026-03-14T{seconds // 3600:02d}:{seconds // 60 % 60:02d}:"
        alert["time"] += f"{seconds % 60:02d}.{i:09d}Z"
        made.append(alert)
    return made


def subscription_events(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """As few subscription events as the ~1 MB payload limit allows, in log-string shape."""
    messages = [aws_fakes.fluent_bit_log_record(a, cluster_name="shop-prod-use1") for a in alerts]
    events, batch, size = [], [], 0
    for message in messages:
        # The escaped message, a 56-digit id, a 13-digit timestamp, keys and punctuation.
        entry = len(json.dumps(message)) + len('{"id":"","timestamp":,"message":},') + 56 + 13
        if batch and size + entry > MAX_PAYLOAD_BYTES - 1024:  # 1 KB for the envelope
            events.append(aws_fakes.subscription_event(batch))
            batch, size = [], 0
        batch.append(message)
        size += entry
    events.append(aws_fakes.subscription_event(batch))
    return events


# --- measurement ------------------------------------------------------------------------------


def timed(fn: Callable[[], Any], runs: int = RUNS) -> tuple[float, float]:
    """(best, median) wall time of fn in seconds over ``runs`` runs, after one warm-up."""
    fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return min(samples), statistics.median(samples)


def timed_in_alternation(
    floor: Callable[[], Any], handler: Callable[[], Any], rounds: int = PAIRED_ROUNDS
) -> tuple[list[float], list[float]]:
    """Wall times (s) of ``floor`` and ``handler``, one of each per round, after a warm-up."""
    floor()
    handler()
    floor_samples, handler_samples = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        floor()
        floor_samples.append(time.perf_counter() - start)
        start = time.perf_counter()
        handler()
        handler_samples.append(time.perf_counter() - start)
    return floor_samples, handler_samples


def decode_floor(events: list[dict[str, Any]]) -> int:
    alerts = 0
    for event in events:
        payload = json.loads(gzip.decompress(base64.b64decode(event["awslogs"]["data"])))
        for log_event in payload["logEvents"]:
            record = json.loads(log_event["message"])
            json.loads(record["log"])
            alerts += 1
    return alerts


class CallCounter:
    """Counts every AWS request by operation; answers BatchImportFindings instantly (200).

    While ``verify`` is on (the counted run) it also reads every request body back and counts
    the findings in it. The timed runs leave it off: reading the body is the server's work, not
    the handler's, and would be charged to the handler.
    """

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.findings_sent = 0
        self.verify = True

    def before_send(self, request: Any, event_name: str, **_: Any) -> Any:
        operation = event_name.split(".", 2)[-1]
        self.calls[operation] += 1
        if operation == "BatchImportFindings":
            n = len(json.loads(request.body)["Findings"]) if self.verify else 0
            self.findings_sent += n
            body = {"FailedCount": 0, "SuccessCount": n, "FailedFindings": []}
            return aws_fakes.http_response(request, 200, body, {})
        return None


@contextlib.contextmanager
def quiet_stdout() -> Iterator[io.StringIO]:
    """Send the handler's logs and EMF (stdout in Lambda) to memory: written, not shown."""
    sink = io.StringIO()
    from handlers import ingest

    handler = ingest.logger.registered_handler
    previous = handler.setStream(sink)  # type: ignore[attr-defined]
    try:
        with contextlib.redirect_stdout(sink):
            yield sink
    finally:
        handler.setStream(previous)  # type: ignore[attr-defined]


def stage_breakdown(events: list[dict[str, Any]], client: Any) -> dict[str, float]:
    """Best-of-RUNS time per alert of each stage the handler runs, called one by one."""
    from handlers import alerts, findings, ingest, securityhub

    ctx = ingest.finding_context(aws_fakes.FakeLambdaContext(), ingest.settings("x", None))
    batches = [alerts.decode_subscription_event(e) for e in events]
    records = [[alerts.parse_log_event(x) for x in b.events] for b in batches]
    found = [list(findings.coalesce_texts(r, ctx)) for r in records]  # type: ignore[arg-type]
    stages = {
        "alerts.decode_subscription_event (base64, gunzip, JSON)": lambda: [
            alerts.decode_subscription_event(e) for e in events
        ],
        "alerts.parse_log_event (record JSON, nested log JSON)": lambda: [
            [alerts.parse_log_event(x) for x in b.events] for b in batches
        ],
        "findings.filter_alert": lambda: [
            [findings.filter_alert(r, ctx) for r in rs]
            for rs in records  # type: ignore[arg-type]
        ],
        # What the handler calls: every finding mapped and written as its JSON text.
        "findings.coalesce_texts (map, coalesce, JSON text)": lambda: [
            list(findings.coalesce_texts(r, ctx))  # type: ignore[arg-type]
            for r in records
        ],
        "securityhub.import_serialized (chunk, botocore, signing)": lambda: [
            securityhub.import_serialized(client, f) for f in found
        ],
    }
    return {name: timed(fn)[0] / N_ALERTS * 1e6 for name, fn in stages.items()}


def cold_import_seconds(runs: int = 5) -> tuple[float, float]:
    code = (
        "import time; t = time.perf_counter(); import handlers.ingest; "
        "print(time.perf_counter() - t)"
    )
    samples = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
        )
        samples.append(float(out.stdout.strip()))
    return min(samples), statistics.median(samples)


def main() -> int:
    alerts = distinct_alerts(N_ALERTS)
    events = subscription_events(alerts)
    payload_bytes = [len(gzip.decompress(base64.b64decode(e["awslogs"]["data"]))) for e in events]
    print(f"input: {N_ALERTS} distinct Falco alerts, Fluent Bit `log`-string records")
    print(
        f"       {len(events)} subscription event(s) (payload <= {MAX_PAYLOAD_BYTES:,} bytes "
        f"each): {', '.join(f'{b:,}' for b in payload_bytes)} bytes uncompressed"
    )

    with aws_fakes.fake_aws_environment(aws_fakes.REGION):
        from handlers import ingest

        counter = CallCounter()
        client = ingest.securityhub_client(aws_fakes.REGION)
        client.meta.events.register("before-send", counter.before_send)
        context = aws_fakes.FakeLambdaContext()

        def run_handler() -> list[int]:
            """Findings per event (each event is one invocation)."""
            per_event = []
            for event in events:
                summary = ingest.handler(event, context)
                assert summary["failed"] == 0, summary
                per_event.append(summary["findings"])
            return per_event

        with quiet_stdout():
            per_event = run_handler()  # the counted run, also the warm-up
            counted = Counter(counter.calls)
            sent = counter.findings_sent
            counter.verify = False
            floor_samples, handler_samples = timed_in_alternation(
                lambda: decode_floor(events), run_handler
            )

        print_handler_figures(floor_samples, handler_samples, per_event, counted, sent)
        print_user_figures(min(handler_samples) / N_ALERTS, N_ALERTS / len(events))
        print("where the time goes (each stage alone):")
        for stage, us in stage_breakdown(events, client).items():
            print(f"  {stage:<58} {us:6.1f} us/alert")
        client.meta.events.unregister("before-send", counter.before_send)

    cold_best, cold_median = cold_import_seconds()
    print(
        f"cold start: import handlers.ingest in a fresh interpreter: {cold_best * 1e3:.0f} ms "
        f"best, {cold_median * 1e3:.0f} ms median"
    )

    moto_ms = moto_per_alert_ms(alerts[:100])
    print(
        f"under in-process moto, 100 alerts: {moto_ms:.3f} ms/alert vs ~{REFERENCE_MS_PER_ALERT} "
        f"ms/alert for the AWS guidance's Lambda: {REFERENCE_MS_PER_ALERT / moto_ms:.0f}x faster "
        "(target >= 30x)"
    )
    return 0


def print_handler_figures(
    floor_samples: list[float],
    handler_samples: list[float],
    per_event: list[int],
    counted: Counter[str],
    sent: int,
) -> None:
    def per_alert(seconds: float) -> float:
        return seconds / N_ALERTS * 1e6

    floor_us, handler_us = per_alert(min(floor_samples)), per_alert(min(handler_samples))
    print(
        f"decode floor (base64+gunzip+json+nested log json): {floor_us:.1f} us/alert best, "
        f"{per_alert(statistics.median(floor_samples)):.1f} us/alert median"
    )
    print(
        f"handler end to end (Security Hub answered instantly): {handler_us:.1f} us/alert best, "
        f"{per_alert(statistics.median(handler_samples)):.1f} us/alert median"
    )
    paired = statistics.median(h / f for f, h in zip(floor_samples, handler_samples, strict=True))
    print(
        f"ratio handler/floor: {handler_us / floor_us:.2f}x best/best, {paired:.2f}x median of "
        f"{len(floor_samples)} alternating rounds (ceiling <= 5x)"
    )
    expected = sum(math.ceil(n / 100) for n in per_event)
    other = {op: n for op, n in counted.items() if op != "BatchImportFindings"}
    print(
        f"AWS calls for {N_ALERTS} alerts ({sum(per_event)} findings, {sent} in the requests): "
        f"{counted['BatchImportFindings']} BatchImportFindings (target ceil(N/100) per "
        f"invocation = {expected}), other calls: {sum(other.values())} {dict(other) or ''}".rstrip()
    )
    if sent != sum(per_event) or counted["BatchImportFindings"] != expected:
        print("  MISMATCH: the requests do not carry the findings the handler reported")


def print_user_figures(seconds_per_alert: float, alerts_per_invocation: float) -> None:
    """Findings/s, CPU share and cost of one invocation at MEMORY_MB, from the time measured here
    on one full core (assumed as fast as a Lambda vCPU) and the assumptions above."""
    cpu = alerts_per_invocation * seconds_per_alert / VCPU_SHARE
    calls = math.ceil(alerts_per_invocation / 100)
    wait = calls * IMPORT_CALL_SECONDS  # the calls of one invocation go one after another
    billed = cpu + wait
    per_million = 1_000_000 / alerts_per_invocation
    cost = per_million * (billed * MEMORY_MB / 1024 * PRICE_PER_GB_SECOND + PRICE_PER_REQUEST)
    print(
        f"in a user's terms, at {MEMORY_MB} MB ({VCPU_SHARE:.3f} vCPU), "
        f"{alerts_per_invocation:.0f} distinct alerts per invocation (this bench's events), "
        f"{IMPORT_CALL_SECONDS * 1000:.0f} ms per BatchImportFindings call (assumed):"
    )
    print(
        f"  one invocation: {cpu * 1000:.0f} ms CPU + {wait * 1000:.0f} ms waiting for "
        f"{calls} BatchImportFindings = {billed * 1000:.0f} ms billed; CPU is "
        f"{cpu / billed:.0%} of it"
    )
    print(
        f"  findings/s one invocation delivers: {alerts_per_invocation / billed:.0f} "
        f"(Security Hub's quota: {SECURITY_HUB_FINDINGS_PER_S} per account and Region)"
    )
    print(
        f"  Lambda cost per million alerts: ${cost:.3f} (arm64, ${PRICE_PER_GB_SECOND:.10f}/GB-s, "
        f"$0.20 per million requests)"
    )


def moto_per_alert_ms(alerts: list[dict[str, Any]]) -> float:
    event = aws_fakes.subscription_event(
        [aws_fakes.fluent_bit_log_record(a, cluster_name="shop-prod-use1") for a in alerts]
    )
    from handlers import ingest

    with aws_fakes.moto_security_hub(aws_fakes.REGION):
        ingest.securityhub_client.cache_clear()  # a client that moto's stubber is attached to
        context = aws_fakes.FakeLambdaContext()
        with quiet_stdout():
            best, _ = timed(lambda: ingest.handler(event, context), runs=5)
        ingest.securityhub_client.cache_clear()
    return best / len(alerts) * 1e3


if __name__ == "__main__":
    sys.exit(main())
