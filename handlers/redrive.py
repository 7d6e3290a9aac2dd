"""``python -m handlers redrive --queue-url URL``: re-import the events Lambda gave up on.

When the handler fails an event three times (the first attempt and Lambda's two asynchronous
retries: Security Hub throttled for minutes, the time budget ran out, a permanent error), Lambda
sends an on-failure record to the function's SQS destination, with the original event under
``requestPayload``. This command reads those records and runs each event through the handler
itself (``ingest.handler``: the same decoding, mapping, coalescing, retries and time budget), and
deletes a message only once the handler returned without error, that is once every finding of
the event is in Security Hub. Finding Ids are deterministic, so importing an event twice updates
its findings instead of duplicating them: running the command twice, or after a partial run, is
harmless.

A message that still fails stays in the queue (made visible again at the end of the run, for the
next one); the summary says why. Exit status: 0 every message redriven (or, with ``--dry-run``,
readable), 1 some message still failing, 2 usage errors.

The handler's settings come from the environment as in the Lambda: ``--cluster-name`` and
``--min-priority`` (default: CLUSTER_NAME and MIN_PRIORITY) should match the function's. The
account and partition come from the record's function ARN; the Region from ``--region``, else
that ARN. Not shipped in the Lambda.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from handlers import alerts, names

# Receive at most this many per call (SQS's maximum), and keep each message invisible to other
# consumers this long while the handler imports it (an event's worst case is the function's
# timeout, 180 s by default).
RECEIVE_BATCH = 10
VISIBILITY_SECONDS = 600
# The time budget each redriven event gets (the handler stops starting requests before it).
REDRIVE_BUDGET_MS = 900_000


class UsageError(Exception):
    """Something the user can fix: printed as ``redrive: <message>``, exit status 2."""


@dataclass(frozen=True, slots=True)
class RedriveOptions:
    queue_url: str
    region: str | None = None
    dry_run: bool = False
    profile: str | None = None
    cluster_name: str | None = None
    min_priority: str | None = None
    progress: bool | None = None  # None: only when stderr is a terminal
    verbose: bool = False  # the handler's own JSON logs and metrics on stderr


@dataclass(slots=True)
class RedriveSummary:
    messages: int = 0
    redriven: int = 0  # deleted: every finding of its event is in
    log_events: int = 0
    findings: int = 0
    imported: int = 0
    still_failing: Counter[str] = field(default_factory=Counter)  # why -> messages

    def exit_status(self) -> int:
        return 1 if self.still_failing else 0


@dataclass(frozen=True, slots=True)
class RedriveContext:
    """The Lambda context the handler reads, for one redriven record."""

    invoked_function_arn: str
    function_name: str
    aws_request_id: str
    memory_limit_in_mb: int = 0
    function_version: str = "$LATEST"

    def get_remaining_time_in_millis(self) -> int:
        return REDRIVE_BUDGET_MS


@dataclass(frozen=True, slots=True)
class FailureRecord:
    """What redrive needs of one on-failure record."""

    event: dict[str, Any]
    function_arn: str
    request_id: str


def failure_record(body: str) -> FailureRecord:
    """The original event of a Lambda on-failure record; ValueError says why not."""
    try:
        record = json.loads(body)
    except ValueError:
        raise ValueError("not JSON: not a Lambda on-failure record") from None
    if not isinstance(record, dict) or not isinstance(record.get("requestPayload"), dict):
        raise ValueError("no requestPayload object: not a Lambda on-failure record")
    context = record.get("requestContext")
    context = context if isinstance(context, dict) else {}
    arn = context.get("functionArn")
    if not isinstance(arn, str) or arn.count(":") < 6:
        raise ValueError("requestContext.functionArn is missing: not a Lambda on-failure record")
    request_id = context.get("requestId")
    return FailureRecord(record["requestPayload"], arn, str(request_id or "redrive"))


def _environment(options: RedriveOptions, region: str) -> dict[str, str]:
    wanted = {
        "AWS_REGION": region,
        "CLUSTER_NAME": options.cluster_name or os.environ.get("CLUSTER_NAME", ""),
        "MIN_PRIORITY": options.min_priority or os.environ.get("MIN_PRIORITY", "Debug"),
    }
    try:
        names.parse_priority(wanted["MIN_PRIORITY"])
    except ValueError:
        raise UsageError(
            f"--min-priority {wanted['MIN_PRIORITY']!r} is not a Falco priority; allowed: "
            + ", ".join(names.FALCO_PRIORITIES)
        ) from None
    return wanted


@contextlib.contextmanager
def _handler_environment(settings: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _handler_output(verbose: bool, stderr: IO[str]) -> Iterator[None]:
    """The handler's JSON logs and EMF metrics: to stderr with --verbose, else nowhere (they
    matter in CloudWatch, not on an operator's terminal)."""
    from handlers import ingest

    sink: IO[str] = stderr if verbose else io.StringIO()
    log_handler = ingest.logger.registered_handler
    previous = log_handler.setStream(sink)  # type: ignore[attr-defined]
    try:
        with contextlib.redirect_stdout(sink):
            yield
    finally:
        log_handler.setStream(previous)  # type: ignore[attr-defined]


def _reason(exc: BaseException) -> str:
    first_line = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {first_line[:200]}"


def redrive_message(
    body: str, options: RedriveOptions, region: str | None, summary: RedriveSummary
) -> bool:
    """Re-import one message's event through the handler; True when it may be deleted."""
    from handlers import ingest

    try:
        record = failure_record(body)
        batch = alerts.decode_subscription_event(record.event)
    except (ValueError, alerts.InvalidEvent) as exc:
        summary.still_failing[_reason(exc)] += 1
        return False
    summary.log_events += len(batch.events)
    if options.dry_run:
        return True
    arn_region = record.function_arn.split(":")[3]
    settings = _environment(options, region or arn_region)
    context = RedriveContext(
        invoked_function_arn=record.function_arn,
        function_name=record.function_arn.split(":")[6],
        aws_request_id=f"redrive-{record.request_id}",
    )
    with _handler_environment(settings):
        try:
            result = ingest.handler(record.event, context)
        except ingest.ImportFailed as exc:
            summary.findings += exc.result.imported + len(exc.result.failed) + exc.result.not_sent
            summary.imported += exc.result.imported
            summary.still_failing[_reason(exc)] += 1
            return False
        except Exception as exc:  # the handler's own error: the message stays, reported
            summary.still_failing[_reason(exc)] += 1
            return False
    summary.findings += int(result.get("findings", 0))
    summary.imported += int(result.get("imported", 0))
    return True


def run(options: RedriveOptions, *, stdout: IO[str], stderr: IO[str]) -> int:
    """Redrive the queue; returns the exit status. The summary goes to stdout, last."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError, ProfileNotFound

    from handlers.replay import Progress

    queue_region = options.region or _queue_region(options.queue_url)
    try:
        session = boto3.Session(profile_name=options.profile, region_name=queue_region)
    except ProfileNotFound as exc:
        raise UsageError(str(exc)) from None
    sqs = session.client("sqs")
    try:
        attributes = sqs.get_queue_attributes(
            QueueUrl=options.queue_url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
    except (BotoCoreError, ClientError) as exc:
        raise UsageError(f"cannot read queue {options.queue_url}: {exc}") from None
    total = int(attributes.get("ApproximateNumberOfMessages", 0))
    progress = Progress(
        stderr, enabled=options.progress if options.progress is not None else stderr.isatty()
    )
    summary = RedriveSummary()
    kept: list[str] = []  # receipt handles of messages left in the queue
    seen: set[str] = set()
    with _handler_output(options.verbose, stderr):
        while True:
            messages = sqs.receive_message(
                QueueUrl=options.queue_url,
                MaxNumberOfMessages=RECEIVE_BATCH,
                VisibilityTimeout=VISIBILITY_SECONDS,
                WaitTimeSeconds=1,
            ).get("Messages", [])
            fresh = [m for m in messages if m["MessageId"] not in seen]
            if not fresh:
                break
            for message in fresh:
                seen.add(message["MessageId"])
                summary.messages += 1
                done = redrive_message(message["Body"], options, options.region, summary)
                if done and not options.dry_run:
                    sqs.delete_message(
                        QueueUrl=options.queue_url, ReceiptHandle=message["ReceiptHandle"]
                    )
                    summary.redriven += 1
                else:
                    kept.append(message["ReceiptHandle"])
                progress.update("redriving", summary.messages, max(total, 1), "messages")
    progress.update(
        "redriving", summary.messages, max(total, summary.messages, 1), "messages", final=True
    )
    for handle in kept:  # visible again at once: the next run (or consumer) sees them
        with contextlib.suppress(BotoCoreError, ClientError):
            sqs.change_message_visibility(
                QueueUrl=options.queue_url, ReceiptHandle=handle, VisibilityTimeout=0
            )
    write_summary(summary, options, stdout)
    return summary.exit_status()


def _queue_region(queue_url: str) -> str | None:
    # https://sqs.<region>.amazonaws.com/<account>/<name>
    host = queue_url.split("/")[2] if queue_url.count("/") >= 3 else ""
    parts = host.split(".")
    return parts[1] if len(parts) > 2 and parts[0] == "sqs" else None


def write_summary(summary: RedriveSummary, options: RedriveOptions, out: IO[str]) -> None:
    if options.dry_run:
        readable = summary.messages - sum(summary.still_failing.values())
        out.write(
            f"dry run: {summary.messages} messages, {readable} readable on-failure records "
            f"({summary.log_events} log events); nothing imported or deleted\n"
        )
    for reason, count in summary.still_failing.most_common():
        out.write(f"  still failing: {count} messages: {reason}\n")
    if not options.dry_run:
        out.write(
            f"redrive: {summary.messages} messages, {summary.redriven} redriven and deleted, "
            f"{summary.imported} of {summary.findings} findings imported, "
            f"{sum(summary.still_failing.values())} still failing (left in the queue)\n"
        )
