"""Emulated AWS for the handler's tests: moto, HTTP-level fault injection, CloudWatch events.

Three things live here, each usable on its own:

* ``moto_security_hub(*regions)`` — fake credentials, in-process moto, Security Hub enabled in
  every region given (moto imports before enablement; real AWS refuses, so we enable first).
* ``HttpFaults`` — a botocore ``before-send`` hook on one client's BatchImportFindings. It sits
  *below* botocore's retry layer, so a crafted 429/503 exercises the client's real retry config.
  Requests it does not answer go to moto; a partial failure (200 with FailedFindings) forwards
  only the accepted findings to moto, so what lands in moto is exactly what AWS would have kept.
  botocore calls *every* ``before-send`` handler (and uses the first answer), so moto's stubber
  would still process - and store - a request we answered; HttpFaults therefore takes moto's
  stubber off that one client and calls it itself for the requests it lets through.
* Builders for what Fluent Bit ships and CloudWatch Logs delivers: ``fluent_bit_log_record`` (the
  alert as a JSON string in ``log``, with aws and kubernetes filter metadata),
  ``fluent_bit_merged_record`` (the alert object under a merge key, ``data`` by default) and
  ``subscription_event`` (base64 + gzip + JSON, as the Lambda receives it).
"""

from __future__ import annotations

import base64
import gzip
import itertools
import json
import os
import re
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.compat import HTTPHeaders
from botocore.retries import standard
from moto import mock_aws
from moto.core.base_backend import BackendDict
from moto.core.models import botocore_stubber

ACCOUNT_ID = "123456789012"
REGION = "us-east-1"
FUNCTION_NAME = "falco-findings"
BATCH_IMPORT_EVENT = "before-send.securityhub.BatchImportFindings"

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
}


# --- Lambda context ------------------------------------------------------------------------


@dataclass
class FakeLambdaContext:
    """The attributes of the Lambda context object the handler and Powertools read."""

    region: str = REGION
    account_id: str = ACCOUNT_ID
    partition: str = "aws"
    function_name: str = FUNCTION_NAME
    memory_limit_in_mb: int = 256
    function_version: str = "$LATEST"
    aws_request_id: str = "c6af9ac6-7b61-11e6-9a41-93e812345678"
    log_group_name: str = f"/aws/lambda/{FUNCTION_NAME}"
    log_stream_name: str = "2026/01/01/[$LATEST]abcdef"

    @property
    def invoked_function_arn(self) -> str:
        return (
            f"arn:{self.partition}:lambda:{self.region}:{self.account_id}:function:"
            f"{self.function_name}"
        )

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


# --- moto ----------------------------------------------------------------------------------


@contextmanager
def fake_aws_environment(region: str = REGION) -> Iterator[None]:
    """Fake credentials and region in os.environ (restored afterwards), so nothing real is hit."""
    saved = {k: os.environ.get(k) for k in [*FAKE_CREDENTIALS, "AWS_DEFAULT_REGION", "AWS_REGION"]}
    os.environ.update(FAKE_CREDENTIALS, AWS_DEFAULT_REGION=region, AWS_REGION=region)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def moto_security_hub(*regions: str) -> Iterator[None]:
    """In-process moto with Security Hub enabled in each region (default: us-east-1)."""
    regions = regions or (REGION,)
    with fake_aws_environment(regions[0]), mock_aws():
        for region in regions:
            boto3.client("securityhub", region_name=region).enable_security_hub()
        yield


def reset_security_hub(*regions: str) -> None:
    """Forget everything moto holds, then enable Security Hub again (inside moto_security_hub).

    Much cheaper than a new mock_aws per test (that reloads botocore's service models), so a
    test module can share one moto_security_hub and call this before each test.
    """
    BackendDict.reset()
    for region in regions or (REGION,):
        boto3.client("securityhub", region_name=region).enable_security_hub()


def stored_findings(region: str = REGION) -> list[dict[str, Any]]:
    """Every finding moto holds in a region (get_findings ignores Filters: paginate all)."""
    client = boto3.client("securityhub", region_name=region)
    return [
        finding
        for page in client.get_paginator("get_findings").paginate()
        for finding in page["Findings"]
    ]


class LocalEndpoint:
    """An HTTP endpoint on 127.0.0.1 answered by the in-process moto, for ``--endpoint-url``.

    moto's own server (ThreadedMotoServer) needs Flask, which is not a project dependency; this
    stdlib server hands each request to the same dispatcher mock_aws uses, after restoring the
    AWS hostname from the request's SigV4 credential scope (service and Region). Use it inside
    ``moto_security_hub()``.
    """

    _SCOPE = re.compile(r"Credential=[^/]+/\d{8}/([^/]+)/([^/]+)/aws4_request")

    def __init__(self) -> None:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                endpoint._answer(self)

            do_GET = do_POST

            def log_message(self, *_: Any) -> None:  # keep test output quiet
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.requests: list[str] = []  # service.Action of every request received
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> LocalEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, http: BaseHTTPRequestHandler) -> None:
        body = http.rfile.read(int(http.headers.get("Content-Length") or 0))
        scope = self._SCOPE.search(http.headers.get("Authorization", ""))
        region, service = scope.groups() if scope else (REGION, "unknown")
        host = f"{service}.{region}.amazonaws.com"
        headers = HTTPHeaders()
        for key, value in http.headers.items():
            if key.lower() != "host":
                headers[key] = value
        headers["Host"] = host
        self.requests.append(f"{service}.{http.path}")
        answer = botocore_stubber.process_request(
            AWSPreparedRequest(
                method=http.command,
                url=f"https://{host}{http.path}",
                headers=headers,
                body=body,
                stream_output=False,
            )
        )
        status, response_headers, response_body = answer or (404, {}, b"not emulated")
        data = response_body.encode() if isinstance(response_body, str) else response_body
        http.send_response(status)
        for key, value in response_headers.items():
            if key.lower() not in {"content-length", "server", "date"}:
                http.send_header(key, str(value))
        http.send_header("Content-Length", str(len(data)))
        http.end_headers()
        http.wfile.write(data)


# --- botocore retries, kept real but fast ---------------------------------------------------


@dataclass
class BotocoreBackoff:
    """Delays botocore's real retry policy asked for; the sleep itself is skipped."""

    delays: list[float] = field(default_factory=list)


@contextmanager
def fast_botocore_retries() -> Iterator[BotocoreBackoff]:
    """Let botocore decide every retry as configured but not sleep (records the delays)."""
    record = BotocoreBackoff()
    original = standard.ExponentialBackoff.delay_amount

    def delay_amount(self: standard.ExponentialBackoff, context: Any) -> float:
        record.delays.append(original(self, context))
        return 0.0

    standard.ExponentialBackoff.delay_amount = delay_amount  # type: ignore[method-assign]
    try:
        yield record
    finally:
        standard.ExponentialBackoff.delay_amount = original  # type: ignore[method-assign]


# --- HTTP-level fault injection -------------------------------------------------------------


class _Body:
    """The raw-response shape botocore reads from (what urllib3 would hand it)."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data

    def read(self, *_: Any) -> bytes:
        return self._data


def http_response(
    request: AWSPreparedRequest, status: int, body: dict[str, Any], headers: dict[str, str]
) -> AWSResponse:
    data = json.dumps(body).encode()
    return AWSResponse(
        request.url,
        status,
        {"Content-Type": "application/json", "Content-Length": str(len(data)), **headers},
        _Body(data),  # type: ignore[arg-type]
    )


def error_response(request: AWSPreparedRequest, status: int, code: str) -> AWSResponse:
    """A rest-json error as Security Hub sends it (code in x-amzn-ErrorType)."""
    return http_response(request, status, {"message": code}, {"x-amzn-ErrorType": code})


@dataclass
class _Rejection:
    matches: Callable[[str], bool]
    code: str
    message: str
    times: int | None  # sends of each matching finding to reject; None: every send
    rejected: Counter[str] = field(default_factory=Counter)

    def applies(self, finding_id: str) -> bool:
        if not self.matches(finding_id):
            return False
        return self.times is None or self.rejected[finding_id] < self.times


class HttpFaults:
    """Scripted faults for one client's BatchImportFindings, below botocore's retry layer.

    ``requests`` records the finding Ids of every HTTP attempt (including botocore's retries),
    so a test can count attempts and chunk sizes.
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self.requests: list[list[str]] = []
        self.bodies: list[bytes] = []  # the raw request body of every attempt
        self.answered: list[int] = []  # HTTP status of every attempt
        self._whole_call: deque[tuple[int, str]] = deque()
        self._rejections: list[_Rejection] = []
        self._instant = False
        client.meta.events.unregister("before-send", botocore_stubber)
        client.meta.events.register(BATCH_IMPORT_EVENT, self._before_send)

    def close(self) -> None:
        self.client.meta.events.unregister(BATCH_IMPORT_EVENT, self._before_send)
        self.client.meta.events.register("before-send", botocore_stubber)

    # What the next attempts see.
    def throttle(self, times: int = 1, code: str = "TooManyRequestsException") -> None:
        """The next ``times`` attempts get HTTP 429 with this error code."""
        self._whole_call.extend([(429, code)] * times)

    def unavailable(self, times: int = 1) -> None:
        """The next ``times`` attempts get HTTP 503 ServiceUnavailableException."""
        self._whole_call.extend([(503, "ServiceUnavailableException")] * times)

    def fail_call(self, status: int, code: str, times: int = 1) -> None:
        self._whole_call.extend([(status, code)] * times)

    def reject(
        self,
        ids: Iterable[str] | Callable[[str], bool],
        code: str,
        message: str = "rejected by the test",
        times: int | None = None,
    ) -> None:
        """Answer 200 listing these findings in FailedFindings.

        ``times``: how many sends of *each* matching finding are rejected (None: every send).
        """
        if callable(ids):
            matches = ids
        else:
            wanted = frozenset(ids)
            matches = wanted.__contains__
        self._rejections.append(_Rejection(matches, code, message, times))

    def accept_instantly(self) -> None:
        """Answer every request 200, all imported, without moto (for the benchmark)."""
        self._instant = True

    @staticmethod
    def _moto(request: AWSPreparedRequest) -> AWSResponse:
        answer = botocore_stubber(BATCH_IMPORT_EVENT, request)
        assert answer is not None, "moto is not active: use moto_security_hub()"
        return answer

    @property
    def attempts(self) -> int:
        return len(self.requests)

    def _before_send(self, request: AWSPreparedRequest, **_: Any) -> AWSResponse | None:
        findings = json.loads(request.body)["Findings"]
        self.requests.append([f["Id"] for f in findings])
        self.bodies.append(request.body)
        if self._whole_call:
            status, code = self._whole_call.popleft()
            self.answered.append(status)
            return error_response(request, status, code)
        self.answered.append(200)
        if self._instant:
            n = len(findings)
            return http_response(
                request, 200, {"FailedCount": 0, "SuccessCount": n, "FailedFindings": []}, {}
            )
        failed: list[dict[str, str]] = []
        accepted: list[dict[str, Any]] = []
        for finding in findings:
            rejection = next((r for r in self._rejections if r.applies(finding["Id"])), None)
            if rejection is None:
                accepted.append(finding)
                continue
            rejection.rejected[finding["Id"]] += 1
            failed.append(
                {
                    "Id": finding["Id"],
                    "ErrorCode": rejection.code,
                    "ErrorMessage": rejection.message,
                }
            )
        if not failed:
            return self._moto(request)  # moto answers (and stores) the request untouched
        body: dict[str, Any] = {"FailedCount": 0, "SuccessCount": 0, "FailedFindings": []}
        if accepted:
            forwarded = AWSPreparedRequest(
                method=request.method,
                url=request.url,
                headers=request.headers,
                body=json.dumps({"Findings": accepted}).encode(),
                stream_output=False,
            )
            body = json.loads(self._moto(forwarded).content)
        body["FailedCount"] += len(failed)
        body["FailedFindings"] = [*body["FailedFindings"], *failed]
        return http_response(request, 200, body, {})


@contextmanager
def http_faults(client: Any) -> Iterator[HttpFaults]:
    faults = HttpFaults(client)
    try:
        yield faults
    finally:
        faults.close()


# --- What Fluent Bit ships and CloudWatch Logs delivers -------------------------------------

FALCO_LOG_FILE = (
    "/var/log/containers/falco-{suffix}_falco_falco-"
    "0b0e6d0c9e5f4a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d.log"
)


def falco_pod_metadata(node_name: str, suffix: str = "x7k2p") -> dict[str, Any]:
    """What Fluent Bit's kubernetes filter adds: the *Falco* pod that wrote the line.

    Not the pod the alert is about: that one is in the alert's output_fields.
    """
    return {
        "pod_name": f"falco-{suffix}",
        "namespace_name": "falco",
        "pod_id": "5f0c8b9e-3f7d-4e1a-9b2c-1d2e3f4a5b6c",
        "labels": {"app.kubernetes.io/name": "falco", "app.kubernetes.io/instance": "falco"},
        "host": node_name,
        "container_name": "falco",
        "docker_id": "0b0e6d0c9e5f4a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d",
        "container_image": "docker.io/falcosecurity/falco:0.41.3",
    }


def aws_filter_metadata(instance_id: str, az: str = "us-east-1a") -> dict[str, str]:
    """What Fluent Bit's aws filter adds (imds_version v2, ec2_instance_id and az on)."""
    return {"ec2_instance_id": instance_id, "ec2_instance_type": "m6i.large", "az": az}


def fluent_bit_log_record(
    alert: dict[str, Any],
    *,
    cluster_name: str | None = None,
    node_name: str = "ip-10-0-1-23.ec2.internal",
    instance_id: str | None = "i-0a1b2c3d4e5f67890",
    az: str = "us-east-1a",
    kubernetes: bool = True,
) -> str:
    """The CRI-parsed record with the Falco line as a JSON string in ``log``."""
    record: dict[str, Any] = {
        "time": alert.get("time", "2026-01-01T00:00:00.000000000Z"),
        "stream": "stdout",
        "_p": "F",
        "log": json.dumps(alert, separators=(",", ":")),
    }
    if kubernetes:
        record["kubernetes"] = falco_pod_metadata(node_name)
    if instance_id:
        record.update(aws_filter_metadata(instance_id, az))
    if cluster_name:
        record["cluster_name"] = cluster_name
    return json.dumps(record, separators=(",", ":"))


def fluent_bit_merged_record(
    alert: dict[str, Any],
    *,
    key: str = "data",
    cluster_name: str | None = None,
    node_name: str = "ip-10-0-1-23.ec2.internal",
    instance_id: str | None = "i-0a1b2c3d4e5f67890",
) -> str:
    """``Merge_Log On`` with ``Merge_Log_Key data`` (the aws-for-fluent-bit chart's choice)."""
    record: dict[str, Any] = {
        "time": alert.get("time", "2026-01-01T00:00:00.000000000Z"),
        "stream": "stdout",
        "_p": "F",
        key: alert,
        "kubernetes": falco_pod_metadata(node_name),
    }
    if instance_id:
        record.update(aws_filter_metadata(instance_id))
    if cluster_name:
        record["cluster_name"] = cluster_name
    return json.dumps(record, separators=(",", ":"))


def falco_alert(
    n: int = 0,
    *,
    rule: str = "Terminal shell in container",
    priority: str = "Notice",
    namespace: str = "shop",
    pod: str | None = None,
    time: str | None = None,
    hostname: str = "ip-10-0-1-23.ec2.internal",
    tags: Sequence[str] = ("maturity_stable", "container", "shell", "mitre_execution", "T1059"),
) -> dict[str, Any]:
    """A Falco 0.41 syscall alert as Falco emits it with json_output; ``n`` makes it distinct."""
    pod = pod or f"checkout-7d9f8b6c5d-{n:05d}"
    time = time or f"2026-03-14T03:02:{n % 60:02d}.{n:09d}Z"
    container_id = f"{n:012x}"
    fields = {
        "container.id": container_id,
        "container.image.repository": "123456789012.dkr.ecr.us-east-1.amazonaws.com/checkout",
        "container.image.tag": "1.14.2",
        "container.name": "checkout",
        "evt.type": "execve",
        "k8s.ns.name": namespace,
        "k8s.pod.name": pod,
        "proc.cmdline": "bash",
        "proc.exepath": "/usr/bin/bash",
        "proc.name": "bash",
        "proc.pid": 40_000 + n,
        "proc.pname": "runc",
        "user.name": "root",
        "user.uid": 0,
    }
    return {
        "hostname": hostname,
        "output": (
            f"{time[11:29]}: {priority} A shell was spawned in a container with an attached "
            f"terminal | user=root process=bash container_id={container_id} "
            f"k8s_pod_name={pod} k8s_ns_name={namespace}"
        ),
        "output_fields": fields,
        "priority": priority,
        "rule": rule,
        "source": "syscall",
        "tags": list(tags),
        "time": time,
    }


_EVENT_IDS = itertools.count(1)


def log_event_id(timestamp_ms: int, sequence: int) -> str:
    """A 56-digit id like CloudWatch's (unique per log event)."""
    return f"{timestamp_ms:020d}{sequence:036d}"


def subscription_payload(
    messages: Sequence[str],
    *,
    log_group: str = "/aws/containerinsights/falco-demo/falco",
    log_stream: str = FALCO_LOG_FILE.format(suffix="x7k2p"),
    message_type: str = "DATA_MESSAGE",
    owner: str = ACCOUNT_ID,
    timestamp_ms: int = 1_767_225_600_000,
    ids: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The decoded JSON document CloudWatch Logs sends (before gzip and base64)."""
    if ids is None:
        first = next(_EVENT_IDS) * 1_000_000
        ids = [log_event_id(timestamp_ms + i, first + i) for i in range(len(messages))]
    return {
        "messageType": message_type,
        "owner": owner,
        "logGroup": log_group,
        "logStream": log_stream,
        "subscriptionFilters": ["falco-alerts"],
        "logEvents": [
            {"id": event_id, "timestamp": timestamp_ms + i, "message": message}
            for i, (event_id, message) in enumerate(zip(ids, messages, strict=True))
        ],
    }


def encode_payload(payload: dict[str, Any]) -> dict[str, Any]:
    data = gzip.compress(json.dumps(payload, separators=(",", ":")).encode())
    return {"awslogs": {"data": base64.b64encode(data).decode()}}


def subscription_event(messages: Sequence[str], **kwargs: Any) -> dict[str, Any]:
    """``{"awslogs": {"data": base64(gzip(json))}}`` carrying one log event per message."""
    return encode_payload(subscription_payload(messages, **kwargs))


def control_message_event() -> dict[str, Any]:
    """What CloudWatch Logs sends to check that the destination is reachable."""
    return encode_payload(
        {
            "messageType": "CONTROL_MESSAGE",
            "owner": "CloudwatchLogs",
            "logGroup": "",
            "logStream": "",
            "subscriptionFilters": [],
            "logEvents": [
                {
                    "id": "",
                    "timestamp": 1_767_225_600_000,
                    "message": "CWL CONTROL MESSAGE: Checking health of destination Lambda.",
                }
            ],
        }
    )


def log_lines(sink: Any) -> list[dict[str, Any]]:
    """The JSON log lines a handler wrote to ``sink`` (a StringIO)."""
    return [json.loads(line) for line in sink.getvalue().splitlines() if line.strip()]
