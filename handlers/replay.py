"""``python -m handlers replay FILE|-``: Falco alerts from a JSON-lines file into Security Hub.

Use it to see the findings a custom Falco rule produces before deploying it (``--dry-run``, no
credentials needed) and to backfill alerts the pipeline missed (for example, alerts exported from
the CloudWatch log group after the Lambda's on-failure destination caught an event).

Every line is read exactly as the Lambda reads one CloudWatch log event: a raw Falco JSON alert
or any record shape Fluent Bit produces. Its log event id is ``FILE:LINE``, so every skip and
error names the file and line. The same pure code as the Lambda parses, filters, maps and
coalesces, and the same import code sends (chunked, with retries). Not shipped in the Lambda.

Streaming: lines are read, mapped and imported (or printed) a window of WINDOW_LINES at a time,
so memory stays flat whatever the file's length, and a long backfill has imported everything up
to its last completed window when it stops. Coalescing works within a window. Files may be gzip
(by their magic bytes), start with a UTF-8 BOM, or be CloudWatch Logs exports (each line starts
with its timestamp). Ctrl-C prints the summary and the ``--from-line`` to resume from; the
output always ends on the totals line.

Exit status: 0 when every finding was imported (or printed); 1 when some finding failed to
import, when no line was usable (empty, binary or not Falco alerts at all), when the gzip stream
is broken, or with ``--strict`` when some line was not a Falco alert; 2 for usage errors
(unreadable file, bad option, no credentials); 130 when interrupted.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import sys
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import IO, Any, BinaryIO

from handlers import alerts, coalescing, findings, names, securityhub, shadow

# Lines skipped for these reasons point at bad input: they are listed with line number and
# detail. The other reasons (internal events, below MIN_PRIORITY) are expected and only counted.
BAD_LINE_REASONS = ("not_json", "not_falco_alert")
MAX_LISTED = 20
# Lines mapped, coalesced and imported together: memory is bounded by one window's alerts.
WINDOW_LINES = 5000
# At most this many skipped lines are remembered per reason (the summary lists MAX_LISTED).
MAX_REMEMBERED = 100
# A CloudWatch Logs export line: "<RFC 3339 timestamp> <message>".
_EXPORT_PREFIX = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2}) (?=[{\[])"
)
_GZIP_MAGIC = b"\x1f\x8b"


class UsageError(Exception):
    """Something the user can fix: printed as ``replay: <message>``, exit status 2."""


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    source: str  # a path, or "-" for stdin
    dry_run: bool = False
    region: str | None = None
    endpoint_url: str | None = None
    profile: str | None = None
    cluster_name: str | None = None
    min_priority: str = "Debug"
    account_id: str | None = None  # --dry-run only: imports use the caller's account (STS)
    progress: bool | None = None  # None: only when stderr is a terminal
    strict: bool = False
    from_line: int = 1  # skip the lines before it (resume an interrupted replay)


@dataclass(slots=True)
class ReplaySummary:
    lines: int = 0
    alerts: int = 0
    findings: int = 0
    imported: int = 0
    coalesced: int = 0
    skipped: dict[str, list[tuple[int, str]]] = field(default_factory=lambda: defaultdict(list))
    skip_counts: Counter[str] = field(default_factory=Counter)
    failed: list[securityhub.FailedFinding] = field(default_factory=list)
    origins: dict[str, str] = field(default_factory=dict)  # failed finding Id -> "FILE:LINE"
    shadow_alerts: int = 0  # alerts of rules tagged `shadow`: never imported (docs/storms.md)
    done_line: int = 0  # every line up to this one is imported (or printed)
    broken: str | None = None  # why reading stopped early (a broken gzip stream)
    interrupted: bool = False

    @property
    def usable(self) -> int:
        """Lines that held a Falco alert (imported, or skipped on purpose)."""
        return (
            self.alerts
            + self.skip_counts["internal_event"]
            + self.skip_counts["below_min_priority"]
        )

    def skip(self, number: int, reason: str, detail: str) -> None:
        self.skip_counts[reason] += 1
        remembered = self.skipped[reason]
        if len(remembered) < MAX_REMEMBERED:
            remembered.append((number, detail))

    def exit_status(self, *, strict: bool) -> int:
        if self.interrupted:
            return 130
        if self.failed or self.broken or not self.usable:
            return 1
        if strict and any(self.skip_counts[reason] for reason in BAD_LINE_REASONS):
            return 1
        return 0


class Progress:
    """A one-line progress bar on stderr (stdlib only; redrawn at most ten times a second)."""

    def __init__(self, stream: IO[str], *, enabled: bool, width: int = 30) -> None:
        self.stream = stream
        self.enabled = enabled
        self.width = width
        self._last = 0.0

    def update(
        self, label: str, done: int, total: int | None, unit: str, *, final: bool = False
    ) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not final and now - self._last < 0.1:
            return
        self._last = now
        if total:
            filled = self.width * min(done, total) // total
            bar = "#" * filled + "." * (self.width - filled)
            text = f"{label} [{bar}] {100 * min(done, total) // total:3d}% {done}/{total} {unit}"
        else:
            text = f"{label} {done} {unit}"
        self.stream.write("\r" + text.ljust(self.width + 45))
        if final:
            self.stream.write("\n")
        self.stream.flush()


def _open(source: str) -> tuple[BinaryIO, int | None]:
    """The input as bytes and its size (None for stdin), or a UsageError naming the file."""
    if source == "-":
        return sys.stdin.buffer, None
    try:
        stream = open(source, "rb")  # noqa: SIM115 - closed by the caller
    except OSError as exc:
        raise UsageError(f"cannot read {source}: {exc.strerror}") from None
    return stream, os.fstat(stream.fileno()).st_size


def _lines(stream: BinaryIO) -> Iterator[bytes]:
    """The stream's lines, gunzipped when it starts with gzip's magic bytes."""
    peek = getattr(stream, "peek", None)
    head = peek(2)[:2] if peek is not None else b""
    if head == _GZIP_MAGIC:
        yield from gzip.GzipFile(fileobj=stream, mode="rb")
    else:
        yield from stream


def log_events(
    stream: BinaryIO, name: str, on_line: Callable[[int, int], None] | None = None
) -> Iterator[alerts.LogEvent]:
    """Each non-blank line as the log event the Lambda would see; its id is ``NAME:LINE``.

    ``on_line(line_number, bytes_read)`` is called for every line, blank ones included. A UTF-8
    BOM before the first line and a CloudWatch Logs export's timestamp prefix are dropped.
    """
    now_ms = int(time.time() * 1000)  # used only when an alert has no usable time of its own
    consumed = 0
    for number, raw in enumerate(_lines(stream), start=1):
        consumed += len(raw)
        if on_line is not None:
            on_line(number, consumed)
        text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if number == 1:
            text = text.removeprefix("\ufeff")
        if text[:1].isdigit() and (match := _EXPORT_PREFIX.match(text)):
            text = text[match.end() :]
        if text.strip():
            yield alerts.LogEvent(id=f"{name}:{number}", timestamp_ms=now_ms, message=text)


def line_number(log_event_id: str) -> int:
    return int(log_event_id.rsplit(":", 1)[1])


def read_alerts(
    events: Iterator[alerts.LogEvent], ctx: findings.FindingContext, summary: ReplaySummary
) -> list[alerts.AlertRecord]:
    """Parse and filter every line exactly as the Lambda does; skips go into ``summary``."""
    records: list[alerts.AlertRecord] = []
    for log_event in events:
        outcome = alerts.parse_log_event(log_event)
        if isinstance(outcome, alerts.AlertRecord):
            outcome = findings.filter_alert(outcome, ctx) or outcome
        if isinstance(outcome, alerts.Skip):
            summary.skip(line_number(log_event.id), outcome.reason, outcome.detail)
        else:
            records.append(outcome)
    summary.alerts += len(records)
    return records


def _caller_account(session: Any, endpoint_url: str | None) -> tuple[str, str]:
    """Account and partition from one sts:GetCallerIdentity (findings carry the caller's)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        identity = session.client("sts", endpoint_url=endpoint_url).get_caller_identity()
    except (BotoCoreError, ClientError) as exc:
        raise UsageError(
            f"cannot get the AWS account ({exc}); configure credentials or --profile, "
            "or use --dry-run"
        ) from None
    return str(identity["Account"]), str(identity["Arn"]).split(":")[1]


def finding_context(options: ReplayOptions) -> tuple[findings.FindingContext, Any]:
    """The context findings are built with, and the boto3 session (None for a dry run)."""
    try:
        min_priority = names.parse_priority(options.min_priority)
    except ValueError:
        raise UsageError(
            f"--min-priority {options.min_priority!r} is not a Falco priority; allowed: "
            + ", ".join(names.FALCO_PRIORITIES)
        ) from None
    region = options.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    import boto3  # imported here: a dry run of a small file should start fast

    session: Any = None
    if options.dry_run:
        region = region or "us-east-1"
        account_id = options.account_id or "000000000000"
        partition = boto3.Session().get_partition_for_region(region)
    else:
        from botocore.exceptions import ProfileNotFound

        try:
            session = boto3.Session(profile_name=options.profile, region_name=region)
        except ProfileNotFound as exc:
            raise UsageError(str(exc)) from None
        region = session.region_name
        if not region:
            raise UsageError("no Region: pass --region (or set AWS_REGION)")
        account_id, partition = _caller_account(session, options.endpoint_url)
    ctx = findings.FindingContext(
        account_id=account_id,
        region=region,
        partition=partition,
        cluster_name=options.cluster_name,
        min_priority=min_priority,
    )
    return ctx, session


def run(options: ReplayOptions, *, stdout: IO[str], stderr: IO[str]) -> int:
    """Replay; returns the exit status. Findings (dry run) go to stdout, everything else stderr."""
    ctx, session = finding_context(options)
    name = "<stdin>" if options.source == "-" else options.source
    stream, size = _open(options.source)
    progress = Progress(
        stderr, enabled=options.progress if options.progress is not None else stderr.isatty()
    )
    client = None
    if not options.dry_run:
        client = securityhub.new_client(
            ctx.region, endpoint_url=options.endpoint_url, session=session
        )
    summary = ReplaySummary(done_line=options.from_line - 1)

    def on_line(number: int, consumed: int) -> None:
        summary.lines = number
        if size:
            progress.update("replaying", consumed, size, "bytes")
        else:
            progress.update("replaying", number, None, "lines")

    events = log_events(stream, name, on_line)
    if options.from_line > 1:
        events = (e for e in events if line_number(e.id) >= options.from_line)
    try:
        while True:
            window = list(islice(events, WINDOW_LINES))
            if not window:
                break
            records = read_alerts(iter(window), ctx, summary)
            last_line = summary.lines
            del window
            records, shadows = shadow.split(records)  # shadow rules are never imported
            summary.shadow_alerts += len(shadows)
            if shadows and options.dry_run:  # what the shadow rules would have produced
                shadow.write_dry_run(shadows, ctx, stdout, stderr, name)
            _replay_window(records, ctx, client, summary, stdout, name)
            summary.done_line = last_line
    except KeyboardInterrupt:
        summary.interrupted = True
    except (OSError, EOFError, zlib.error) as exc:  # a broken gzip stream (BadGzipFile: OSError)
        summary.broken = f"{name}: unreadable after line {summary.lines}: {exc}"
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    if summary.interrupted:
        stderr.write("\n")  # off the progress bar's line
    elif size:
        progress.update("replaying", size, size, "bytes", final=True)
    else:
        progress.update("replaying", summary.lines, None, "lines", final=True)
    if summary.shadow_alerts and not options.dry_run:
        stderr.write(f"{name}: {summary.shadow_alerts} alerts of shadow rules not imported\n")
    write_summary(summary, name, stderr, dry_run=options.dry_run, region=ctx.region)
    return summary.exit_status(strict=options.strict)


def _replay_window(
    records: list[alerts.AlertRecord],
    ctx: findings.FindingContext,
    client: Any,
    summary: ReplaySummary,
    stdout: IO[str],
    name: str,
) -> None:
    """Coalesce, map and import (or print) one window's alerts."""
    coalescer = coalescing.Coalescer()
    for record in records:
        coalescer.add(record)
    groups = coalescer.groups()
    builder = findings.FindingBuilder(ctx)
    summary.findings += len(groups)
    summary.coalesced += len(records) - len(groups)
    origins: dict[str, str] = {}

    def texts() -> Iterator[securityhub.Serialized]:
        for group in groups:
            finding_id, text = builder.group_text(group)
            origins[finding_id] = group.record.log_event_id
            yield finding_id, text

    if client is None:
        for _, text in texts():
            stdout.write(json.dumps(json.loads(text), sort_keys=True) + "\n")
        return
    result = securityhub.import_serialized(client, texts())
    summary.imported += result.imported
    summary.failed.extend(result.failed)
    for failure in result.failed:  # name the line each failed finding came from
        summary.origins[failure.id] = origins.get(failure.id) or name


def write_summary(
    summary: ReplaySummary, name: str, out: IO[str], *, dry_run: bool, region: str
) -> None:
    """Skips (bad lines by number), failures, how to resume; the totals line last."""
    for reason, count in sorted(summary.skip_counts.items()):
        out.write(f"  skipped {reason}: {count}\n")
    for reason in BAD_LINE_REASONS:
        skips = summary.skipped.get(reason, [])
        for number, detail in skips[:MAX_LISTED]:
            out.write(f"{name}:{number}: {reason}: {detail}\n")
        if summary.skip_counts[reason] > MAX_LISTED:
            out.write(
                f"{name}: ... {summary.skip_counts[reason] - MAX_LISTED} more {reason} lines\n"
            )
    for code, count in Counter(f.error_code for f in summary.failed).most_common():
        out.write(f"  failed {code}: {count}\n")
    for failure in summary.failed[:MAX_LISTED]:
        where = summary.origins.get(failure.id, name)
        out.write(
            f"{where}: not imported: {failure.error_code}: {failure.error_message} "
            f"(finding {failure.id})\n"
        )
    if len(summary.failed) > MAX_LISTED:
        out.write(f"{name}: ... {len(summary.failed) - MAX_LISTED} more findings not imported\n")
    if summary.broken:
        out.write(f"{summary.broken}\n")
    if not summary.usable and not summary.interrupted:
        out.write(
            f"{name}: no usable line: no Falco alert in {summary.lines} lines (empty, binary, "
            "or not Falco JSON output)\n"
        )
    if summary.interrupted:
        out.write(
            f"{name}: interrupted; lines 1-{summary.done_line} are done: resume with "
            f"--from-line {summary.done_line + 1}\n"
        )
    outcome = (
        f"would import {summary.findings}"
        if dry_run
        else f"imported {summary.imported} into {region}"
    )
    out.write(
        f"{name}: {summary.lines} lines read, {summary.alerts} alerts -> {summary.findings} "
        f"findings ({summary.coalesced} coalesced); {outcome}; failed {len(summary.failed)}\n"
    )
