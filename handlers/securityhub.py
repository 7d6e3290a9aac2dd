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
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

# Security Hub's documented limits ("240 Kb" per finding, 6 MB per request, 100 per request).
MAX_FINDINGS_PER_CALL = 100
MAX_FINDING_BYTES = 240 * 1024
MAX_REQUEST_BYTES = 6 * 1024 * 1024

# botocore's rest-json serializer writes the request body as `json.dumps({"Findings": [...]})`
# with the default separators and ASCII escaping; measuring with the same call gives the exact
# byte count of each finding inside the request (ASCII output: characters == bytes).
_ENVELOPE_BYTES = len(json.dumps({"Findings": []}))
_SEPARATOR_BYTES = len(", ")

# The client's retry and timeout policy. Security Hub allows 10 requests/s with bursts of 30 per
# account and Region, shared by every concurrent Lambda container, so throttling is expected
# under load:
# * "standard" mode: botocore retries 429 TooManyRequestsException/LimitExceededException/
#   ThrottlingException and 5xx with full-jitter exponential backoff (1 s base for throttling).
#   "adaptive" adds a client-side rate limiter, but that bucket is per container and cannot see
#   the other containers sharing the quota; it is also documented as experimental.
# * max_attempts 5 (4 retries): about 7.5 s of expected backoff (15 s at most) per request before
#   giving up, enough for the quota's bucket to refill; beyond that, Lambda's own asynchronous
#   retries (minutes apart) are the better backoff, and the function timeout stays predictable.
# * connect 3 s / read 15 s instead of botocore's 60 s each: a hung connection is retried quickly
#   instead of eating the function's timeout; a 6 MB import normally answers well within 15 s.
CLIENT_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": 5},
    connect_timeout=3,
    read_timeout=15,
    tcp_keepalive=True,
    user_agent_extra="falco-securityhub",
)


def new_client(
    region: str, *, endpoint_url: str | None = None, session: boto3.Session | None = None
) -> Any:
    """A Security Hub client with :data:`CLIENT_CONFIG` (create once, reuse: clients are costly)."""
    factory: Any = session or boto3  # boto3.client() reuses the default session's loaded data
    return factory.client(
        "securityhub", region_name=region, endpoint_url=endpoint_url, config=CLIENT_CONFIG
    )


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

    def error_codes(self) -> dict[str, int]:
        """How many findings failed with each error code, most frequent first."""
        return dict(Counter(f.error_code for f in self.failed).most_common())


class ImportFailed(RuntimeError):
    """Some findings could not be imported; everything else was. Carries ``.result``."""

    def __init__(self, result: ImportResult) -> None:
        self.result = result
        codes = ", ".join(f"{code} x{n}" for code, n in result.error_codes().items())
        total = result.imported + len(result.failed)
        super().__init__(
            f"{len(result.failed)} of {total} findings failed to import after retries "
            f"({codes}); {result.imported} were imported. Finding Ids are deterministic, so "
            "re-delivering the event re-imports idempotently."
        )


def finding_size(finding: dict[str, Any]) -> int:
    """Bytes the finding takes in the request body, exactly as botocore serializes it."""
    return len(json.dumps(finding))


_Sized = tuple[dict[str, Any], int]  # a finding and its serialized size, measured once


def _sized(findings: Iterable[dict[str, Any]]) -> Iterator[_Sized]:
    return ((f, finding_size(f)) for f in findings)


def _chunks(sized: Iterable[_Sized]) -> Iterator[list[_Sized]]:
    chunk: list[_Sized] = []
    chunk_bytes = _ENVELOPE_BYTES
    for finding, size in sized:
        if size > MAX_FINDING_BYTES:
            raise ValueError(
                f"finding {finding.get('Id')!r} is {size} bytes; the limit is {MAX_FINDING_BYTES}"
            )
        added = size + (_SEPARATOR_BYTES if chunk else 0)
        if chunk and (
            len(chunk) == MAX_FINDINGS_PER_CALL or chunk_bytes + added > MAX_REQUEST_BYTES
        ):
            yield chunk
            chunk, chunk_bytes, added = [], _ENVELOPE_BYTES, size
        chunk.append((finding, size))
        chunk_bytes += added
    if chunk:
        yield chunk


def chunk_findings(findings: Sequence[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Split findings, in order, into requests of at most 100 findings and 6 MB.

    Raises ValueError for a finding over 240 KB (:func:`import_findings` refuses those first).
    """
    return ([finding for finding, _ in chunk] for chunk in _chunks(_sized(findings)))


def _backoff(round_number: int, *, base: float = 1.0, cap: float = 8.0) -> float:
    # Full jitter (AWS Architecture Blog, "Exponential Backoff and Jitter"): concurrent Lambda
    # containers retrying against the same 10 requests/s quota spread out instead of colliding.
    return random.uniform(0.0, min(cap, base * 2**round_number))  # noqa: S311 - jitter, not crypto


def _send(
    client: Any, chunk: list[_Sized], result: ImportResult
) -> tuple[list[tuple[_Sized, FailedFinding]], bool]:
    """One BatchImportFindings call.

    Returns the findings that failed, with their errors, and whether the whole call failed.
    """
    result.calls += 1
    try:
        response = client.batch_import_findings(Findings=[finding for finding, _ in chunk])
    except ClientError as exc:
        # botocore has already retried throttling and 5xx with the client's retry config; what
        # reaches us is final for this invocation. Record the whole chunk and carry on with the
        # other chunks.
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "ClientError")
        message = str(error.get("Message") or exc)
        return [(s, FailedFinding(str(s[0].get("Id")), code, message)) for s in chunk], True
    except BotoCoreError as exc:  # connection errors and timeouts after botocore's retries
        code = type(exc).__name__
        return [(s, FailedFinding(str(s[0].get("Id")), code, str(exc))) for s in chunk], True

    result.botocore_retries += int(response.get("ResponseMetadata", {}).get("RetryAttempts", 0))
    reported = response.get("FailedFindings") or []
    if not reported:
        result.imported += len(chunk)
        return [], False
    by_id = {s[0].get("Id"): s for s in chunk}
    failures: list[tuple[_Sized, FailedFinding]] = []
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
    sleep: Callable[[float], None] = time.sleep,
) -> ImportResult:
    """Import every finding; re-send only those that failed with a retryable code.

    ``max_rounds`` counts the first send: with 4, a finding is sent at most 4 times, sleeping
    about 1, 2 and 4 seconds (full jitter) between rounds. Never raises for AWS errors: a
    whole-call error after botocore's own retries marks that chunk's findings failed and the other
    chunks still go out. Check ``result.failed``.
    """
    result = ImportResult(imported=0, failed=[], calls=0)
    pending: list[_Sized] = []
    for finding, size in _sized(findings):
        if size > MAX_FINDING_BYTES:
            result.failed.append(
                FailedFinding(
                    str(finding.get("Id")),
                    FINDING_TOO_LARGE,
                    f"{size} bytes serialized; Security Hub accepts at most {MAX_FINDING_BYTES}",
                )
            )
        else:
            pending.append((finding, size))

    max_rounds = max(1, max_rounds)
    for round_number in range(max_rounds):
        if round_number:
            sleep(_backoff(round_number - 1))
            result.retried += len(pending)
        retry: list[_Sized] = []
        last_round = round_number == max_rounds - 1
        for chunk in _chunks(pending):
            failures, whole_call = _send(client, chunk, result)
            for sized, failure in failures:
                # Whole-call errors were already retried by botocore; do not multiply them.
                if is_retryable(failure.error_code) and not last_round and not whole_call:
                    retry.append(sized)
                else:
                    result.failed.append(failure)
        if not retry:
            break
        pending = retry
    return result
