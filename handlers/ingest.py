"""The Lambda handler (``handlers.ingest.handler``): CloudWatch Logs subscription -> Security Hub.

A thin shell over the pure modules: decode (alerts), parse every record (alerts), filter and map
and coalesce (findings), import (securityhub). It adds what only the shell can do: the AWS client,
structured logs and EMF metrics, and the decision to fail the invocation.

Failure policy. A record that cannot be used is skipped, counted and logged with its log event
id; it never affects the other records. A finding Security Hub still refuses after retries makes
the invocation raise :class:`ImportFailed` *after* everything else is imported: Lambda then
retries the event (twice, asynchronous invocation) and finally hands it to the function's
on-failure destination, so nothing is dropped silently. Re-importing is harmless: finding Ids
are deterministic, and Security Hub updates a finding with a known Id instead of duplicating it.

Cost. No AWS call besides BatchImportFindings (one per 100 findings): the account and partition
come from the function's own ARN, the Region from ``AWS_REGION``, and the client is created once
per container and Region.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from handlers import (
    alerts,
    coalescing,
    findings,
    heartbeat,
    names,
    occurrences,
    securityhub,
    shadow,
)
from handlers.securityhub import ImportFailed, OutOfTime

__all__ = ["ConfigurationError", "ImportFailed", "OutOfTime", "handler"]

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", names.SERVICE_NAME)
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", names.METRICS_NAMESPACE)

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)

# The Reason dimension of RecordsSkipped takes only these values, whatever a future alerts.py or
# findings.py returns, so the metric's cardinality stays bounded (each value is a separate
# CloudWatch metric). "unexpected_error": parsing or mapping one record raised (a bug, logged with
# its traceback); that record is skipped, the others are not affected.
UNEXPECTED_ERROR = "unexpected_error"
SKIP_REASONS = (*alerts.SKIP_REASONS, UNEXPECTED_ERROR)
# Failed findings are logged one per line up to this many (then a count), to keep a bad day's
# logs readable.
MAX_FAILURE_LOG_LINES = 50


class ConfigurationError(ValueError):
    """An environment variable of the function has a value the handler cannot use."""


@dataclass(frozen=True, slots=True)
class Settings:
    cluster_name: str | None
    min_priority: str


@functools.lru_cache(maxsize=8)
def settings(cluster_name: str | None, min_priority: str | None) -> Settings:
    """Validated settings from the function's environment (parsed once per distinct value)."""
    try:
        priority = names.parse_priority(min_priority or "Debug")
    except ValueError:
        allowed = ", ".join(names.FALCO_PRIORITIES)
        raise ConfigurationError(
            f"MIN_PRIORITY={min_priority!r} is not a Falco priority; allowed (case-insensitive, "
            f"most to least severe): {allowed}"
        ) from None
    return Settings(cluster_name=cluster_name or None, min_priority=priority)


def settings_from_environment() -> Settings:
    return settings(os.environ.get("CLUSTER_NAME"), os.environ.get("MIN_PRIORITY"))


@functools.cache
def securityhub_client(region: str) -> Any:
    """One client per container and Region: creating a botocore client costs tens of ms."""
    return securityhub.new_client(region)


def finding_context(context: Any, config: Settings) -> findings.FindingContext:
    """Account and partition from the function's own ARN: no STS call, ever."""
    # arn:<partition>:lambda:<region>:<account>:function:<name>[:<qualifier>]
    parts = str(context.invoked_function_arn).split(":")
    if len(parts) < 7 or parts[0] != "arn" or not parts[4].isdigit():
        raise ConfigurationError(
            f"cannot read the account from invoked_function_arn {context.invoked_function_arn!r}"
        )
    region = os.environ.get("AWS_REGION") or parts[3]
    return findings.FindingContext(
        account_id=parts[4],
        region=region,
        partition=parts[1],
        cluster_name=config.cluster_name,
        min_priority=config.min_priority,
    )


def _summary(
    received: int,
    found: int,
    imported: int,
    skipped: Counter[str],
    failed: int,
    coalesced: int,
    not_sent: int = 0,
) -> dict[str, Any]:
    return {
        "received": received,
        "findings": found,
        "imported": imported,
        "skipped": dict(skipped),
        "failed": failed,
        "coalesced": coalesced,
        "not_sent": not_sent,
    }


def _skip(skip: alerts.Skip, skipped: Counter[str]) -> None:
    reason = skip.reason if skip.reason in SKIP_REASONS else UNEXPECTED_ERROR
    skipped[reason] += 1
    logger.info(
        "record skipped",
        extra={"reason": reason, "log_event_id": skip.log_event_id, "detail": skip.detail},
    )


def _parse(
    log_event: alerts.LogEvent, ctx: findings.FindingContext, beats: list[heartbeat.Heartbeat]
) -> alerts.AlertRecord | alerts.Skip:
    """The alert of one log event, or why it is skipped (never raises: one record, one outcome).

    A Falco metrics snapshot is a node's heartbeat: it goes to ``beats`` and is still skipped as
    an internal event, never a finding.
    """
    try:
        parsed = alerts.parse_log_event(log_event)
        if isinstance(parsed, alerts.Skip):
            return parsed
        if (beat := heartbeat.from_record(parsed, ctx.cluster_name)) is not None:
            beats.append(beat)
        return findings.filter_alert(parsed, ctx) or parsed
    except Exception as exc:  # never expected; a bug here must not cost the other records
        logger.exception("record could not be parsed", extra={"log_event_id": log_event.id})
        return alerts.Skip(log_event.id, UNEXPECTED_ERROR, repr(exc)[:200])


def _serialized(
    groups: list[coalescing.Group],
    builder: findings.FindingBuilder,
    skipped: Counter[str],
    mapped: list[int],
) -> Iterator[securityhub.Serialized]:
    """Each group's finding, as its Id and JSON text, built as the import asks for it (one
    request's worth is held at a time). ``mapped[0]`` counts the alerts that became findings.

    A bug in building one finding must not cost the others: that group's alert is tried alone,
    and if that fails too, the group's alerts are skipped (logged, counted).
    """
    for group in groups:
        try:
            item = builder.group_text(group)
        except Exception:
            logger.exception(
                "coalesced finding failed; mapping its alert alone",
                extra={"log_event_id": group.record.log_event_id},
            )
            try:
                item = builder.alert_text(group.record)
            except Exception as exc:
                for _ in range(group.count):
                    detail = repr(exc)[:200]
                    _skip(alerts.Skip(group.record.log_event_id, UNEXPECTED_ERROR, detail), skipped)
                continue
        mapped[0] += group.count
        if logger.log_level <= logging.DEBUG:
            _log_finding(item)
        yield item


def _log_finding(item: securityhub.Serialized) -> None:
    """DEBUG only: which log event became which finding (the answer to "where did it go?")."""
    finding = json.loads(item[1])  # DEBUG only: the handler keeps findings as text
    fields = finding.get("ProductFields", {})
    logger.debug(
        "finding built",
        extra={
            "finding_id": finding.get("Id"),
            "log_event_id": fields.get("falco/log_event_id"),
            "occurrences": fields.get("falco/occurrences", "1"),
            "rule": fields.get("falco/rule"),
            "severity": finding.get("Severity", {}).get("Label"),
        },
    )


class _Collector(Protocol):
    """Where parsed alerts go: coalescing.Coalescer (repeats within this invocation) or
    occurrences.StormCollector (repeats across invocations, docs/storms.md)."""

    def add(self, record: alerts.AlertRecord) -> None: ...


def _coalesce(
    events: list[alerts.LogEvent],
    ctx: findings.FindingContext,
    skipped: Counter[str],
    collector: _Collector,
) -> tuple[list[heartbeat.Heartbeat], Counter[str]]:
    """Parse, filter, enrich and collect the batch's log events one at a time: the collector keeps
    one record per group (a storm of identical alerts holds one), and each log event's message is
    released once parsed. Returns the heartbeats and the shadow rules' alerts per rule (counted,
    never imported)."""
    beats: list[heartbeat.Heartbeat] = []
    shadows: Counter[str] = Counter()
    directory = heartbeat.directory_for(ctx.region, ctx.cluster_name) if ctx.cluster_name else None
    for index, log_event in enumerate(events):
        outcome = _parse(log_event, ctx, beats)
        events[index] = _PARSED  # the message is no longer needed
        if isinstance(outcome, alerts.Skip):
            _skip(outcome, skipped)
            continue
        if outcome.note is not None:
            logger.warning(
                "record kept with a note",
                extra={"log_event_id": outcome.log_event_id, "note": outcome.note},
            )
        if shadow.is_shadow(outcome):
            shadows.update(shadow.count((outcome,)))
            continue
        if directory is not None:
            # The node's EC2 instance as the coverage checker last saw it (best effort, cached):
            # before coalescing, which tells instances apart.
            heartbeat.enrich((outcome,), directory)
        try:
            collector.add(outcome)
        except Exception as exc:  # never expected; a bug here must not cost the other records
            logger.exception(
                "record could not be coalesced", extra={"log_event_id": outcome.log_event_id}
            )
            _skip(alerts.Skip(outcome.log_event_id, UNEXPECTED_ERROR, repr(exc)[:200]), skipped)
    return beats, shadows


def _storm_metrics(storm: occurrences.StormResult, shadows: Counter[str]) -> None:
    """Alerts of re-delivered events (not counted again), counter failures, and shadow rules'
    alerts per rule (docs/storms.md)."""
    metrics.add_metric(name="AlertsRecounted", unit=MetricUnit.Count, value=storm.recounted)
    metrics.add_metric(name="OccurrenceFailures", unit=MetricUnit.Count, value=len(storm.failed))
    if shadows:
        known = shadow.parse_rule_list(os.environ.get("SHADOW_RULES"))
        shadow.emit(shadows, known, NAMESPACE, SERVICE)


# What a parsed log event is replaced with in the batch's list (its message freed).
_PARSED = alerts.LogEvent("", 0, "")

# The time budget (docs/handler.md): the handler starts a request (or a backoff sleep) only when
# one request's worst case (securityhub.REQUEST_WORST_CASE_SECONDS: every attempt hangs until its
# timeouts, every backoff at its maximum) plus the wrap-up (summary, metrics, heartbeats) still
# fits in the invocation's remaining time; otherwise it logs, counts what it did not send, and
# raises so Lambda retries the event.
WRAP_UP_SECONDS = 5.0
TIME_MARGIN_SECONDS = securityhub.REQUEST_WORST_CASE_SECONDS + WRAP_UP_SECONDS


class TimeBudget:
    """Whether there is time left to start something, from the Lambda context's clock.

    The margin is TIME_MARGIN_SECONDS, or half of the time the invocation started with when the
    function's timeout is shorter than twice that, so a short timeout still imports something.
    """

    __slots__ = ("_context", "margin_ms")

    def __init__(self, context: Any) -> None:
        self._context = context
        self.margin_ms = min(TIME_MARGIN_SECONDS * 1000, self._remaining_ms() / 2)

    def _remaining_ms(self) -> float:
        remaining = getattr(self._context, "get_remaining_time_in_millis", None)
        return float(remaining()) if remaining is not None else float("inf")

    def out_of_time(self, seconds: float) -> bool:
        """True when spending ``seconds`` now would leave less than the margin."""
        return self._remaining_ms() - seconds * 1000 < self.margin_ms


def _emit_metrics(
    received: int, skipped: Counter[str], coalesced: int, result: securityhub.ImportResult | None
) -> None:
    metrics.add_metric(name="AlertsReceived", unit=MetricUnit.Count, value=received)
    metrics.add_metric(name="RecordsSkipped", unit=MetricUnit.Count, value=sum(skipped.values()))
    metrics.add_metric(name="Coalesced", unit=MetricUnit.Count, value=coalesced)
    metrics.add_metric(
        name="FindingsImported", unit=MetricUnit.Count, value=result.imported if result else 0
    )
    metrics.add_metric(
        name="ImportFailures", unit=MetricUnit.Count, value=len(result.failed) if result else 0
    )
    metrics.add_metric(
        name="FindingsNotSent", unit=MetricUnit.Count, value=result.not_sent if result else 0
    )
    metrics.add_metric(
        name="ImportCalls", unit=MetricUnit.Count, value=result.calls if result else 0
    )
    # Per reason: its own EMF document, because dimensions apply to every metric in a document.
    for reason, count in skipped.items():
        with single_metric(
            name="RecordsSkipped", unit=MetricUnit.Count, value=count, namespace=NAMESPACE
        ) as metric:
            metric.add_dimension(name="service", value=SERVICE)
            metric.add_dimension(name="Reason", value=reason)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while one event is handled; it resumes afterwards.

    An invocation builds tens of thousands of containers (decoded records, findings) that all
    stay alive until it ends and then all die. CPython starts a collection every few hundred
    container allocations: here each one finds only live objects, and moves them to an older
    generation, so that every few invocations a full collection walks the whole heap (boto3's
    and botocore's objects included) for tens of ms. Reference counting frees what the handler
    made when it returns, and whatever cyclic garbage it left is collected after it.
    """
    if not gc.isenabled():  # someone else manages the collector: leave it alone
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """Import the Falco alerts of one CloudWatch Logs subscription event as findings."""
    with _collector_paused():
        # In its own frame, so that everything it made is freed before collection resumes.
        return _handle(event, context)


def _handle(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    try:
        ctx = finding_context(context, settings_from_environment())
    except ConfigurationError:
        metrics.add_metric(name="ConfigurationErrors", unit=MetricUnit.Count, value=1)
        raise
    try:
        batch = alerts.decode_subscription_event(event)
    except alerts.InvalidEvent as exc:
        # Not a CloudWatch Logs subscription event at all: fail, so the event ends up in the
        # on-failure destination where someone can look at it.
        logger.error("invalid subscription event", extra={"error": str(exc)})
        metrics.add_metric(name="InvalidEvents", unit=MetricUnit.Count, value=1)
        raise
    logger.append_keys(
        log_group=batch.log_group, log_stream=batch.log_stream, message_type=batch.message_type
    )
    # Findings name the log group and stream their alert came from (ProductFields).
    ctx = replace(ctx, log_group=batch.log_group, log_stream=batch.log_stream)
    skipped: Counter[str] = Counter()
    if batch.message_type != "DATA_MESSAGE":  # CONTROL_MESSAGE: CloudWatch checking reachability
        logger.info("control message ignored")
        _emit_metrics(0, skipped, 0, None)
        return _summary(0, 0, 0, skipped, 0, 0)

    client = securityhub_client(ctx.region)
    if not securityhub.refill_retry_quota(client):
        # This botocore keeps its retry quota elsewhere: a new client has a full one.
        securityhub_client.cache_clear()
        client = securityhub_client(ctx.region)
    # With the occurrence table (docs/storms.md), repeats are counted across invocations: one
    # finding per behaviour and window, carrying the exact count so far.
    store = occurrences.store_from_environment(os.environ, ctx.region)
    collector: coalescing.Coalescer | occurrences.StormCollector = (
        coalescing.Coalescer()
        if store is None
        else occurrences.StormCollector(ctx.cluster_name, store.window_seconds)
    )
    beats, shadows = _coalesce(batch.events, ctx, skipped, collector)
    mapped = [0]
    storm = occurrences.StormResult()
    if isinstance(collector, occurrences.StormCollector):
        storm = occurrences.count_and_map(collector.storms(), store, ctx)  # type: ignore[arg-type]
        mapped[0] = storm.counted + storm.recounted  # the alerts of storms counted (not failed)
        found: Iterable[securityhub.Serialized] = storm.found
    else:
        found = _serialized(collector.groups(), findings.FindingBuilder(ctx), skipped, mapped)
    result = securityhub.import_serialized(
        client, found, out_of_time=TimeBudget(context).out_of_time
    )
    del collector, found  # the records: freed before the heartbeats are written
    _storm_metrics(storm, shadows)
    written = heartbeat.HeartbeatWrite()
    if beats and ctx.cluster_name:
        written = heartbeat.record_heartbeats(
            heartbeat.dynamodb_client(ctx.region),
            names.heartbeat_table_name(ctx.cluster_name),
            beats,
            cluster=ctx.cluster_name,
        )
    metrics.add_metric(name="HeartbeatsRecorded", unit=MetricUnit.Count, value=written.written)
    metrics.add_metric(name="HeartbeatFailures", unit=MetricUnit.Count, value=len(written.failed))
    found = result.imported + len(result.failed) + result.not_sent
    coalesced = mapped[0] - found
    _emit_metrics(len(batch.events), skipped, coalesced, result)
    summary = _summary(
        len(batch.events),
        found,
        result.imported,
        skipped,
        len(result.failed),
        coalesced,
        result.not_sent,
    )
    logger.info(
        "invocation summary",
        extra={
            **summary,
            "import_calls": result.calls,
            "retried_findings": result.retried,
            "botocore_retries": result.botocore_retries,
        },
    )
    if result.not_sent:
        logger.error(
            "time budget exhausted: findings not sent",
            extra={
                "not_sent": result.not_sent,
                "remaining_ms": context.get_remaining_time_in_millis(),
            },
        )
    if result.failed:
        for failure in result.failed[:MAX_FAILURE_LOG_LINES]:
            logger.error(
                "finding not imported",
                extra={
                    "finding_id": failure.id,
                    "error_code": failure.error_code,
                    "error_message": failure.error_message[:500],
                },
            )
        if len(result.failed) > MAX_FAILURE_LOG_LINES:
            logger.error(
                "more findings not imported",
                extra={"omitted": len(result.failed) - MAX_FAILURE_LOG_LINES},
            )
    if result.not_sent:
        raise OutOfTime(result)
    if result.failed:
        raise ImportFailed(result)
    if storm.failed:  # those behaviours were not imported; Lambda's retry counts nothing twice
        raise occurrences.StateUnavailable(storm.failed)
    if written.failed:
        # Findings are in; failing lets Lambda retry the event so no heartbeat is lost (both
        # writes are idempotent).
        raise heartbeat.HeartbeatsNotRecorded(written.failed)
    return summary
