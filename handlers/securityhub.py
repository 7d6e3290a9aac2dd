"""Import ASFF findings into Security Hub with BatchImportFindings, losing none silently.

What BatchImportFindings does that a naive caller gets wrong:

* It takes at most 100 findings and 6 MB per request, and rejects a finding over 240 KB.
* A 200 response can still report failures: ``FailedCount`` and ``FailedFindings`` list the
  findings that were not imported, each with an ``ErrorCode``. That is not an exception.
* Throttling of the *whole call* (429 ``TooManyRequestsException``/``LimitExceededException``,
  5xx) is retried by botocore itself with the client's retry config; this module never retries a
  whole call on top of that (it would multiply botocore's attempts).

So :func:`import_findings` chunks, sends, re-sends only the findings whose error code is
transient (with exponential backoff and full jitter, for a bounded number of rounds), never
re-sends findings that succeeded, and records every finding it could not import in
:class:`ImportResult`. The caller decides what a failure means (the Lambda handler raises
:class:`ImportFailed` after everything else is imported).
"""

from __future__ import annotations

import json
import random
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from botocore.retries import quota as retry_quota
from botocore.retries import standard

from handlers.asff import MAX_FINDING_BYTES, finding_json

# Security Hub's documented limits: 100 findings and 6 MB per request (and asff.MAX_FINDING_BYTES
# per finding); the sizes read the stricter way (decimal), as tests/asff_limits.py does.
MAX_FINDINGS_PER_CALL = 100
MAX_REQUEST_BYTES = 6_000_000

# Each finding is serialized once, to compact ASCII JSON (characters == bytes): that text gives
# its exact size for the limits *and* becomes part of the request body (see _SerializedBody).
_BODY_START, _BODY_END = '{"Findings":[', "]}"
_ENVELOPE_BYTES = len(_BODY_START) + len(_BODY_END)
_SEPARATOR_BYTES = len(",")
_T = TypeVar("_T")

# The client's retry and timeout policy. Security Hub allows 10 requests/s with bursts of 30 per
# account and Region, shared by every concurrent Lambda container, so throttling is expected
# under load:
# * "standard" mode: botocore retries 429 TooManyRequestsException/LimitExceededException/
#   ThrottlingException and 5xx with full-jitter exponential backoff (1 s base for throttling).
#   "adaptive" adds a client-side rate limiter, but that bucket is per container and cannot see
#   the other containers sharing the quota; it is also documented as experimental.
# * total_max_attempts 5 (the first attempt and 4 retries; the older `max_attempts` key counts
#   retries only): about 7.5 s of expected backoff (15 s at most) per request before giving up,
#   enough for the quota's bucket to refill; beyond that, Lambda's own asynchronous retries
#   (minutes apart) are the better backoff, and the function's duration stays predictable.
# * connect 3 s / read 10 s instead of botocore's 60 s each: a hung connection is retried quickly
#   instead of eating the function's timeout; a 6 MB import normally answers within 1-2 s.
# * parameter_validation off: this client makes one kind of call, BatchImportFindings, whose body
#   this module serializes itself (see _SerializedBody); botocore would only validate the
#   placeholder. asff.py, findings.py and the tests own the findings' shape.
# Together they bound one request's worst case (REQUEST_WORST_CASE_SECONDS): every attempt hangs
# until its timeouts, and every backoff draws its maximum. The handler stops starting requests
# when less than that (plus its wrap-up) is left of the invocation (docs/handler.md).
MAX_ATTEMPTS = 5
CONNECT_TIMEOUT_SECONDS = 3
READ_TIMEOUT_SECONDS = 10
# botocore standard mode, throttling: the retry after attempt n sleeps at most min(2**(n-1), 20) s.
MAX_BACKOFF_SECONDS = sum(min(2 ** (n - 1), 20) for n in range(1, MAX_ATTEMPTS))
REQUEST_WORST_CASE_SECONDS = (
    MAX_ATTEMPTS * (CONNECT_TIMEOUT_SECONDS + READ_TIMEOUT_SECONDS) + MAX_BACKOFF_SECONDS
)
CLIENT_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
    parameter_validation=False,
    connect_timeout=CONNECT_TIMEOUT_SECONDS,
    read_timeout=READ_TIMEOUT_SECONDS,
    tcp_keepalive=True,
    user_agent_extra="falco-securityhub",
)


def new_client(
    region: str, *, endpoint_url: str | None = None, session: boto3.Session | None = None
) -> Any:
    """A Security Hub client with :data:`CLIENT_CONFIG` (create once, reuse: clients are costly)."""
    factory: Any = session or boto3  # boto3.client() reuses the default session's loaded data
    client = factory.client(
        "securityhub", region_name=region, endpoint_url=endpoint_url, config=CLIENT_CONFIG
    )
    _SerializedBody.attach(client)
    _RetryQuota.find(client)
    return client


def refill_retry_quota(client: Any) -> bool:
    """Give ``client`` a full retry quota again, as a new client would have; False when this
    botocore keeps its quota where this module cannot find it (then make a new client).

    botocore's standard retry mode keeps a quota per client (500 tokens; a retried throttling
    error costs 5, a retried timeout 10, a success gives 1 back). A client cached across warm
    invocations spends it in one throttling storm, and from then on every throttled request fails
    at its first attempt. The handler refills it at the start of each invocation, so every
    invocation gets the retries CLIENT_CONFIG promises; within one invocation the quota still
    caps how much retrying a storm gets.
    """
    checkers = _RetryQuota.find(client)
    for checker in checkers:
        checker._quota = retry_quota.RetryQuota()
    return bool(checkers)


class _RetryQuota:
    """Where botocore keeps a client's retry quota: the RetryQuotaChecker of the RetryHandler
    registered for ``needs-retry.<service>`` (botocore.retries.standard). Private to botocore, so
    looked up defensively, once per client; tests/handlers/test_edges.py pins it."""

    found: ClassVar[weakref.WeakKeyDictionary[Any, list[Any]]] = weakref.WeakKeyDictionary()

    @classmethod
    def find(cls, client: Any) -> list[Any]:
        known = cls.found.get(client)
        if known is None:
            known = cls.found[client] = cls._lookup(client)
        return known

    @staticmethod
    def _lookup(client: Any) -> list[Any]:
        event = f"needs-retry.{client.meta.service_model.service_id.hyphenize()}"
        emitter = getattr(client.meta.events, "_emitter", client.meta.events)
        try:
            handlers = emitter._handlers.prefix_search(event)
        except AttributeError:
            return []
        checkers = []
        for handler in handlers:
            owner = getattr(handler, "__self__", None)
            checker = getattr(owner, "_retry_quota", None)
            if isinstance(owner, standard.RetryHandler) and isinstance(
                checker, standard.RetryQuotaChecker
            ):
                checkers.append(checker)
        return checkers


class _SerializedBody:
    """Lets BatchImportFindings send a request body this module serialized itself.

    Why: botocore validates and serializes parameters by walking the service model field by
    field; for ASFF findings that costs several times more than decoding the alerts in the first
    place (measured by bench/handler_bench.py). Findings are plain JSON values already, and this
    module serializes each one anyway to enforce the size limits, so it joins those texts into
    the body. Only the body changes: endpoint, signing, retries, throttling handling and
    response parsing stay botocore's, and botocore retries resend the same bytes.

    How: the call passes ``Findings=[]`` (serialized as usual) plus the body under
    ``BODY_PARAMETER``, which is not an API parameter. A ``before-parameter-build`` hook moves it
    out of the parameters into the request context; a ``before-call`` hook puts it in place of
    the serialized ``{"Findings":[]}``. Only clients from :func:`new_client` carry the hooks
    (and skip validating the placeholder); import_findings makes the plain call on any other
    client (slower, same result).
    """

    BODY_PARAMETER = "FalcoSerializedBody"
    _EVENT = "securityhub.BatchImportFindings"

    # The clients new_client made: they carry the hooks and do not validate parameters (botocore
    # keeps that setting inside its serializer, so it cannot be read back from a client).
    clients: ClassVar[weakref.WeakSet[Any]] = weakref.WeakSet()

    @classmethod
    def attach(cls, client: Any) -> None:
        events = client.meta.events
        events.register(
            f"before-parameter-build.{cls._EVENT}", cls._take, unique_id="falco-body-take"
        )
        events.register(f"before-call.{cls._EVENT}", cls._put, unique_id="falco-body-put")
        cls.clients.add(client)

    @staticmethod
    def _take(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        body = params.pop(_SerializedBody.BODY_PARAMETER, None)
        if body is not None:
            context[_SerializedBody.BODY_PARAMETER] = body

    @staticmethod
    def _put(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        body = context.get(_SerializedBody.BODY_PARAMETER)
        if body is not None:
            params["body"] = body


# Our own code for a finding refused before sending: Security Hub would reject it anyway, and a
# request carrying it might be rejected as a whole.
FINDING_TOO_LARGE = "FindingTooLarge"

# Security Hub does not document the per-finding ErrorCode values. Seen in practice:
# "InvalidInput" (schema/limit violations) and access errors ("AccessDenied...",
# "InvalidAccess..."), which are permanent. Codes naming throttling, limits, internal errors or
# unavailability are transient. Anything unrecognised counts as permanent here: a retry within
# this invocation would most likely fail the same way, and the handler then fails the invocation,
# so Lambda's own retries (and finally its on-failure destination) still get the event.
_RETRYABLE_MARKERS = (
    "throttl",
    "toomanyrequests",
    "limitexceeded",
    "rateexceeded",
    "slowdown",
    "internal",
    "unavailable",
    "timeout",
)


def is_retryable(error_code: str) -> bool:
    """True for error codes that say "try again later" (throttling, limits, internal errors)."""
    code = error_code.lower()
    return any(marker in code for marker in _RETRYABLE_MARKERS)


@dataclass(frozen=True, slots=True)
class FailedFinding:
    id: str
    error_code: str
    error_message: str


@dataclass(slots=True)
class ImportResult:
    imported: int
    failed: list[FailedFinding]
    calls: int  # BatchImportFindings requests sent (including retries of failed findings)
    retried: int = 0  # findings re-sent after a retryable FailedFindings error
    botocore_retries: int = 0  # attempts botocore repeated itself (throttling, 5xx), from metadata
    not_sent: int = 0  # findings never sent (or not re-sent) because time ran out

    @property
    def complete(self) -> bool:
        return not self.failed and not self.not_sent

    def error_codes(self) -> dict[str, int]:
        """How many findings failed with each error code, most frequent first."""
        return dict(Counter(f.error_code for f in self.failed).most_common())


class ImportFailed(RuntimeError):
    """Some findings could not be imported (or were not sent for lack of time); everything else
    was. Carries ``.result``."""

    def __init__(self, result: ImportResult) -> None:
        self.result = result
        codes = ", ".join(f"{code} x{n}" for code, n in result.error_codes().items())
        total = result.imported + len(result.failed) + result.not_sent
        parts = []
        if result.failed:
            parts.append(
                f"{len(result.failed)} of {total} findings failed to import after retries ({codes})"
            )
        if result.not_sent:
            parts.append(
                f"{result.not_sent} of {total} findings were not sent: the invocation's time "
                "budget ran out"
            )
        super().__init__(
            f"{'; '.join(parts)}; {result.imported} were imported. Finding Ids are deterministic, "
            "so re-delivering the event re-imports idempotently."
        )


class OutOfTime(ImportFailed):
    """The invocation stopped starting requests before Lambda's timeout (findings not sent)."""


def serialize(finding: dict[str, Any]) -> str:
    """The finding as it goes into the request: compact JSON, ASCII (so len() is its bytes).

    The one encoding of a finding (asff.finding_json), as findings.coalesce_texts gives it.
    """
    return finding_json(finding)


# A finding as import_serialized takes it: its Id and its serialize() text, nothing else. Once
# serialized, the finding's dicts are not needed (see import_serialized); the text carries it all.
Serialized = tuple[Any, str]
_Serialized = Serialized


def serialized(finding: dict[str, Any]) -> Serialized:
    """What :func:`import_serialized` takes for this finding."""
    return finding.get("Id"), serialize(finding)


def _chunks(
    items: Iterable[tuple[_T, str]], ident: Callable[[_T], Any]
) -> Iterator[list[tuple[_T, str]]]:
    chunk: list[tuple[_T, str]] = []
    chunk_bytes = _ENVELOPE_BYTES
    for item, text in items:
        size = len(text)
        if size > MAX_FINDING_BYTES:
            raise ValueError(
                f"finding {ident(item)!r} is {size} bytes; the limit is {MAX_FINDING_BYTES}"
            )
        added = size + (_SEPARATOR_BYTES if chunk else 0)
        if chunk and (
            len(chunk) == MAX_FINDINGS_PER_CALL or chunk_bytes + added > MAX_REQUEST_BYTES
        ):
            yield chunk
            chunk, chunk_bytes, added = [], _ENVELOPE_BYTES, size
        chunk.append((item, text))
        chunk_bytes += added
    if chunk:
        yield chunk


def chunk_findings(findings: Sequence[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Split findings, in order, into requests of at most 100 findings and 6 MB.

    Raises ValueError for a finding over 240 KB (:func:`import_findings` refuses those first).
    """
    pairs = ((finding, serialize(finding)) for finding in findings)
    chunks = _chunks(pairs, lambda finding: finding.get("Id"))
    return ([finding for finding, _ in chunk] for chunk in chunks)


def _same(finding_id: Any) -> Any:
    return finding_id


def _backoff(round_number: int, *, base: float = 1.0, cap: float = 8.0) -> float:
    # Full jitter (AWS Architecture Blog, "Exponential Backoff and Jitter"): concurrent Lambda
    # containers retrying against the same 10 requests/s quota spread out instead of colliding.
    return random.uniform(0.0, min(cap, base * 2**round_number))  # noqa: S311 - jitter, not crypto


def _call(client: Any, chunk: list[_Serialized], fast: bool) -> dict[str, Any]:
    if not fast:
        # A client without the hooks (not from new_client): the plain call, with the findings
        # read back from their text (the same values: findings are plain JSON).
        findings = [json.loads(text) for _, text in chunk]
        return client.batch_import_findings(Findings=findings)  # type: ignore[no-any-return]
    body = _BODY_START + ",".join(text for _, text in chunk) + _BODY_END
    return client.batch_import_findings(  # type: ignore[no-any-return]
        Findings=[], **{_SerializedBody.BODY_PARAMETER: body.encode("ascii")}
    )


def _send(
    client: Any, chunk: list[_Serialized], result: ImportResult, fast: bool
) -> tuple[list[tuple[_Serialized, FailedFinding]], bool]:
    """One BatchImportFindings call.

    Returns the findings that failed, with their errors, and whether the whole call failed.
    """
    result.calls += 1
    try:
        response = _call(client, chunk, fast)
    except ClientError as exc:
        # botocore has already retried throttling and 5xx with the client's retry config; what
        # reaches us is final for this invocation. Record the whole chunk and carry on with the
        # other chunks.
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "ClientError")
        message = str(error.get("Message") or exc)
        return [(s, FailedFinding(str(s[0]), code, message)) for s in chunk], True
    except BotoCoreError as exc:  # connection errors and timeouts after botocore's retries
        code = type(exc).__name__
        return [(s, FailedFinding(str(s[0]), code, str(exc))) for s in chunk], True

    result.botocore_retries += int(response.get("ResponseMetadata", {}).get("RetryAttempts", 0))
    reported = response.get("FailedFindings") or []
    if not reported:
        result.imported += len(chunk)
        return [], False
    by_id = {s[0]: s for s in chunk}
    failures: list[tuple[_Serialized, FailedFinding]] = []
    for entry in reported:
        finding = by_id.pop(entry.get("Id"), None)
        if finding is None:  # an Id we did not send, or reported twice: nothing to re-send
            continue
        failures.append(
            (
                finding,
                FailedFinding(
                    str(entry.get("Id")),
                    str(entry.get("ErrorCode") or "Unknown"),
                    str(entry.get("ErrorMessage") or ""),
                ),
            )
        )
    result.imported += len(chunk) - len(failures)
    return failures, False


def import_findings(
    client: Any,
    findings: Sequence[dict[str, Any]],
    *,
    max_rounds: int = 4,
    sleep: Callable[[float], None] | None = None,  # time.sleep
) -> ImportResult:
    """Import every finding; re-send only those that failed with a retryable code.

    ``max_rounds`` counts the first send: with 4, a finding is sent at most 4 times, sleeping
    about 1, 2 and 4 seconds (full jitter) between rounds. Never raises for AWS errors: a
    whole-call error after botocore's own retries marks that chunk's findings failed and the other
    chunks still go out. Check ``result.failed``.
    """
    items = map(serialized, findings)
    return import_serialized(client, items, max_rounds=max_rounds, sleep=sleep)


def import_serialized(
    client: Any,
    serialized: Iterable[Serialized],
    *,
    max_rounds: int = 4,
    sleep: Callable[[float], None] | None = None,  # time.sleep
    out_of_time: Callable[[float], bool] | None = None,
) -> ImportResult:
    """:func:`import_findings` for findings already serialized (:func:`serialized` of each).

    Streams: each request goes out as soon as it is full, so only one request's findings (and
    those to re-send) are held at a time, whatever ``serialized`` yields.

    ``out_of_time(seconds)``: asked before each request (0) and each backoff sleep (its length);
    True means "no time left to start that": nothing more is sent, and the findings left are
    counted in ``result.not_sent`` (the handler's time budget).
    """
    result = ImportResult(imported=0, failed=[], calls=0)
    fast = client in _SerializedBody.clients
    pending: Iterable[_Serialized] = _sendable(serialized, result)
    max_rounds = max(1, max_rounds)
    for round_number in range(max_rounds):
        if round_number:
            delay = _backoff(round_number - 1)
            if out_of_time is not None and out_of_time(delay):
                result.not_sent += sum(1 for _ in pending)
                break
            (time.sleep if sleep is None else sleep)(delay)
            result.retried += len(pending)  # type: ignore[arg-type]
        retry: list[_Serialized] = []
        last_round = round_number == max_rounds - 1
        for chunk in _chunks(pending, _same):
            if result.not_sent or (out_of_time is not None and out_of_time(0.0)):
                result.not_sent += len(chunk)  # and every chunk after it
                continue
            failures, whole_call = _send(client, chunk, result, fast)
            for item, failure in failures:
                # Whole-call errors were already retried by botocore; do not multiply them.
                if is_retryable(failure.error_code) and not last_round and not whole_call:
                    retry.append(item)
                else:
                    result.failed.append(failure)
        if result.not_sent:
            result.not_sent += len(retry)
            break
        if not retry:
            break
        pending = retry
    return result


def _sendable(serialized: Iterable[Serialized], result: ImportResult) -> Iterator[_Serialized]:
    """The findings within Security Hub's size limit; the others are recorded as failed."""
    for finding_id, text in serialized:
        size = len(text)
        if size > MAX_FINDING_BYTES:
            result.failed.append(
                FailedFinding(
                    str(finding_id),
                    FINDING_TOO_LARGE,
                    f"{size} bytes serialized; Security Hub accepts at most {MAX_FINDING_BYTES}",
                )
            )
        else:
            yield finding_id, text
