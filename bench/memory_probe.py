"""Peak memory (RSS) of one handler invocation, for the largest events Lambda can deliver.

Lambda's asynchronous payload is at most 1 MB, so ``awslogs.data`` (base64 of gzip) carries at
most ~750 KB of gzip. Two shapes of that size matter:

* ``storm``: one alert repeated with only its time changing, as in a runaway rule: it compresses
  so well that ~21,000 log events fit;
* ``distinct``: all-different alerts (the most findings per event);
* ``large``: fewer, bigger log events (long command lines), the most text per alert.

``python bench/memory_probe.py [storm|distinct|large ...]`` builds each event, then runs the
handler on it in a fresh interpreter that imports only the handler (Security Hub answers 200 at
once from a before-send hook, so nothing else is measured), and prints one JSON line per event:
log events, gzip bytes, findings, RSS after imports, peak RSS (VmHWM).
tests/handlers/test_memory.py asserts the peak; the default lambdaMemoryMb is chosen from it.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MAX_GZIP_BYTES = 750_000  # base64 of it, in the event's JSON, stays within Lambda's 1 MB

SHAPES = ("storm", "distinct", "large")


def _alert(n: int, time: str, cmdline: str = "bash") -> dict[str, Any]:
    container = f"{n:012x}"
    pod = f"checkout-7d9f8b6c5d-{n:05d}"
    return {
        "hostname": "ip-10-0-1-23.ec2.internal",
        "output": f"{time[11:29]}: Notice A shell was spawned in a container with an attached "
        f"terminal | user=root process=bash container_id={container} k8s_pod_name={pod} "
        f"k8s_ns_name=shop cmdline={cmdline}",
        "output_fields": {
            "container.id": container,
            "container.image.repository": "123456789012.dkr.ecr.us-east-1.amazonaws.com/checkout",
            "container.image.tag": "1.14.2",
            "container.name": "checkout",
            "evt.type": "execve",
            "k8s.ns.name": "shop",
            "k8s.pod.name": pod,
            "proc.cmdline": cmdline,
            "proc.exepath": "/usr/bin/bash",
            "proc.name": "bash",
            "proc.pid": 40_000 + n,
            "proc.pname": "runc",
            "user.name": "root",
            "user.uid": 0,
        },
        "priority": "Notice",
        "rule": "Terminal shell in container",
        "source": "syscall",
        "tags": ["maturity_stable", "container", "shell", "mitre_execution", "T1059"],
        "time": time,
    }


def _message(alert: dict[str, Any]) -> str:
    record = {
        "time": alert["time"],
        "stream": "stdout",
        "_p": "F",
        "log": json.dumps(alert, separators=(",", ":")),
        "kubernetes": {
            "pod_name": "falco-x7k2p",
            "namespace_name": "falco",
            "host": "ip-10-0-1-23.ec2.internal",
            "container_name": "falco",
        },
        "ec2_instance_id": "i-0a1b2c3d4e5f67890",
        "az": "us-east-1a",
    }
    return json.dumps(record, separators=(",", ":"))


def _time(n: int) -> str:
    return f"2026-03-14T03:{n // 60_000_000 % 60:02d}:{n // 1_000_000 % 60:02d}.{n:09d}Z"


def messages(shape: str, count: int) -> list[str]:
    if shape == "storm":
        return [_message(_alert(1, _time(n * 997))) for n in range(count)]
    if shape == "distinct":
        return [_message(_alert(n, _time(n * 1_000_003))) for n in range(count)]
    # "large": a 30 KB command line per alert, different per alert
    return [
        _message(_alert(n, _time(n), cmdline=f"{n:08d} " + os.urandom(11_000).hex()[:30_000]))
        for n in range(count)
    ]


def payload_gzip(shape: str, count: int) -> bytes:
    events = [
        {
            "id": f"{1_767_225_600_000 + i:020d}{i:036d}",
            "timestamp": 1_767_225_600_000 + i,
            "message": m,
        }
        for i, m in enumerate(messages(shape, count))
    ]
    payload = {
        "messageType": "DATA_MESSAGE",
        "owner": "123456789012",
        "logGroup": "/aws/containerinsights/falco-demo/falco",
        "logStream": "falco-x7k2p",
        "subscriptionFilters": ["falco-alerts"],
        "logEvents": events,
    }
    return gzip.compress(json.dumps(payload, separators=(",", ":")).encode(), 6)


def largest_event(shape: str) -> tuple[dict[str, Any], int, int]:
    """The event of this shape with the most log events within MAX_GZIP_BYTES."""
    low, high = 1, 64
    while len(payload_gzip(shape, high)) <= MAX_GZIP_BYTES:
        low, high = high, high * 2
    while high - low > max(1, low // 100):  # within 1 %
        middle = (low + high) // 2
        if len(payload_gzip(shape, middle)) <= MAX_GZIP_BYTES:
            low = middle
        else:
            high = middle
    data = payload_gzip(shape, low)
    return {"awslogs": {"data": base64.b64encode(data).decode()}}, low, len(data)


_CHILD = r"""
import json, os, sys
from botocore.awsrequest import AWSResponse
os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                  AWS_DEFAULT_REGION="us-east-1", AWS_REGION="us-east-1",
                  CLUSTER_NAME="", POWERTOOLS_METRICS_NAMESPACE="FalcoSecurityHub")
sys.path.insert(0, sys.argv[2])
from handlers import ingest

class Body:
    def __init__(self, data): self.data = data
    def stream(self, **_): yield self.data
    def read(self, *_): return self.data

def accept(request, **_):
    n = request.body.count(b'"SchemaVersion"')
    body = json.dumps({"FailedCount": 0, "SuccessCount": n, "FailedFindings": []}).encode()
    return AWSResponse(request.url, 200, {"Content-Type": "application/json"}, Body(body))

client = ingest.securityhub_client("us-east-1")
client.meta.events.register("before-send.securityhub.BatchImportFindings", accept)

class Context:
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:falco-findings"
    function_name = "falco-findings"; memory_limit_in_mb = 256; function_version = "$LATEST"
    aws_request_id = "probe"
    def get_remaining_time_in_millis(self): return 180_000

def high_water_mb():
    # VmHWM: this process's peak RSS. Not ru_maxrss, which Linux keeps across execve, so a
    # child started by a big parent would report the parent's peak.
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")

sys.stdout = open(os.devnull, "w")  # the handler's logs and metrics
baseline = high_water_mb()
with open(sys.argv[1]) as source:
    event = json.load(source)
summary = ingest.handler(event, Context())
peak = high_water_mb()
sys.stdout = sys.__stdout__
print(json.dumps({"baseline_mb": round(baseline, 1), "peak_mb": round(peak, 1),
                  "findings": summary["findings"], "imported": summary["imported"]}))
"""


def measure(shape: str) -> dict[str, Any]:
    event, log_events, gzip_bytes = largest_event(shape)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as file:
        json.dump(event, file)
    try:
        result = subprocess.run(
            [sys.executable, "-c", _CHILD, file.name, str(ROOT)],
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        os.unlink(file.name)
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    return {"shape": shape, "log_events": log_events, "gzip_bytes": gzip_bytes, **figures}


def main(shapes: list[str]) -> int:
    for shape in shapes or SHAPES:
        print(json.dumps(measure(shape)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
