"""``python -m handlers demo`` (``make demo``): the real handler, emulated AWS, two Regions.

What it does, in order:

1. Fake credentials and an in-process moto (no network, nothing real can be reached); Security
   Hub enabled in us-east-1 and eu-west-1 (real AWS refuses imports before that).
2. Reads ``demo/falco-alerts.jsonl``: what this program's Fluent Bit writes to the log group
   ``/falco/<cluster>/alerts`` of two clusters (``falco-us-east-1``, ``falco-eu-west-1``), one
   per Region: the alert as a JSON string in ``log``, ``cluster_name`` and ``kubernetes.host``
   beside it (components/runtime_security.py, ``fluent_bit_pipeline``). The clusters run Falco
   with ``falcoMinimumPriority: Debug`` so everything reaches the log group; the mix holds a Falco
   internal event, an alert below ``MIN_PRIORITY`` (findingsMinimumPriority) and a line cut
   short. A record goes to the Region of its ``cluster_name``; records that name no cluster go
   to the first Region, whose function's ``CLUSTER_NAME`` names them.
3. Wraps each Region's records in one CloudWatch Logs subscription event (gzip + base64) and
   calls ``handlers.ingest.handler`` with a Lambda context for that Region, ``MIN_PRIORITY=Notice``.
4. Delivers the same event again (CloudWatch Logs and Lambda both re-deliver) and shows that the
   number of findings does not change.
5. Reads the findings back with GetFindings and prints them with the handler's summaries.
6. Sensor coverage (handlers/coverage_demo.py), then an alert storm folded into one finding with
   its exact count across deliveries and re-deliveries (handlers/storm_demo.py).

Not shipped in the Lambda (moto is a development dependency).
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import io
import json
import os
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEMO_FILE = Path(__file__).resolve().parent.parent / "demo" / "falco-alerts.jsonl"
ACCOUNT_ID = "123456789012"
MIN_PRIORITY = "Notice"


@dataclass(frozen=True, slots=True)
class Site:
    """One Region's deployment: its cluster and its findings function."""

    region: str
    cluster_name: str

    @property
    def log_group(self) -> str:
        return f"/falco/{self.cluster_name}/alerts"

    @property
    def function_name(self) -> str:
        return f"{self.cluster_name}-falco-findings"


# The program's default cluster names (clusterName empty: falco-<region>).
SITES = (Site("us-east-1", "falco-us-east-1"), Site("eu-west-1", "falco-eu-west-1"))


@dataclass(frozen=True, slots=True)
class DemoContext:
    """The attributes of the Lambda context the handler and Powertools read."""

    invoked_function_arn: str
    function_name: str = "falco-findings"
    memory_limit_in_mb: int = 256
    aws_request_id: str = "00000000-0000-4000-8000-000000000000"


def subscription_event(site: Site, messages: Sequence[str], first_id: int) -> dict[str, Any]:
    """A CloudWatch Logs subscription event carrying one log event per message."""
    timestamp_ms = 1_773_457_200_000  # 2026-03-14T03:00:00Z, the demo's alerts are from then
    payload = {
        "messageType": "DATA_MESSAGE",
        "owner": ACCOUNT_ID,
        "logGroup": site.log_group,
        # Fluent Bit writes one stream per node, "<node name>/falco".
        "logStream": "ip-10-20-1-37.ec2.internal/falco",
        "subscriptionFilters": [f"{site.function_name}-subscription"],
        "logEvents": [
            {"id": f"{first_id + n:056d}", "timestamp": timestamp_ms + n, "message": message}
            for n, message in enumerate(messages)
        ],
    }
    data = gzip.compress(json.dumps(payload).encode())
    return {"awslogs": {"data": base64.b64encode(data).decode()}}


def route(lines: Sequence[str]) -> dict[Site, list[str]]:
    """Each line to the Site of its record's cluster_name (unreadable lines: the first Site)."""
    by_cluster = {site.cluster_name: site for site in SITES}
    routed: dict[Site, list[str]] = {site: [] for site in SITES}
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        cluster = record.get("cluster_name") if isinstance(record, dict) else None
        routed[by_cluster.get(str(cluster), SITES[0])].append(line)
    return routed


@contextlib.contextmanager
def emulated_aws() -> Iterator[None]:
    """Fake credentials in this process only, and moto for every AWS call."""
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",  # noqa: S106 - moto dummy value
        AWS_SESSION_TOKEN="testing",  # noqa: S106 - moto dummy value
        AWS_DEFAULT_REGION=SITES[0].region,
    )
    os.environ.pop("AWS_PROFILE", None)  # a real profile must not be picked up
    from moto import mock_aws

    with mock_aws():
        yield


def _stored(region: str) -> list[dict[str, Any]]:
    import boto3

    client = boto3.client("securityhub", region_name=region)
    return [f for page in client.get_paginator("get_findings").paginate() for f in page["Findings"]]


def _resource_details(finding: dict[str, Any], kind: str) -> dict[str, Any]:
    for resource in finding.get("Resources", []):
        if resource.get("Type") == kind:
            return resource.get("Details", {}).get(kind, {}) or {}
    return {}


def _where(finding: dict[str, Any]) -> str:
    """cluster/namespace/pod (image), from the finding's resources and Falco's output fields."""
    fields = finding.get("ProductFields", {})

    def field(*names: str) -> str:
        return next(
            (
                fields[f"falco/output_fields/{n}"]
                for n in names
                if f"falco/output_fields/{n}" in fields
            ),
            "-",
        )

    cluster = _resource_details(finding, "AwsEksCluster").get("Name", "-")
    namespace = field("k8s.ns.name", "ka.target.namespace")
    pod = field("k8s.pod.name", "ka.target.name", "ka.resp.name")
    image = _resource_details(finding, "Container").get("ImageName", "-")
    return f"{cluster}/{namespace}/{pod} ({image})"


_SEVERITY_ORDER = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "INFORMATIONAL")


def _severity_rank(finding: dict[str, Any]) -> int:
    label = finding.get("Severity", {}).get("Label", "")
    return _SEVERITY_ORDER.index(label) if label in _SEVERITY_ORDER else len(_SEVERITY_ORDER)


def print_findings(region: str, found: list[dict[str, Any]], out: Any) -> None:
    """A table: severity (from Falco's priority), occurrences, rule, where, ASFF types."""
    out.write(f"\nSecurity Hub findings in {region} ({len(found)}):\n")
    out.write(
        f"  {'SEVERITY (FALCO PRIORITY)':<26} {'N':>2}  {'RULE':<44} CLUSTER/NS/POD (IMAGE)\n"
    )
    for finding in sorted(found, key=_severity_rank):
        severity = finding.get("Severity", {})
        label = f"{severity.get('Label', '?')} ({severity.get('Original', '?')})"
        fields = finding.get("ProductFields", {})
        rule = fields.get("falco/rule", finding.get("Title", "?"))
        out.write(
            f"  {label:<26} {fields.get('falco/occurrences', '1'):>2}  {rule[:44]:<44} "
            f"{_where(finding)}\n"
        )
        out.write(f"  {'':<26} {'':>2}  types: {', '.join(finding.get('Types', []))}\n")


def main(*, verbose: bool = False) -> int:
    # The handler logs JSON lines and EMF metrics to stdout (what CloudWatch Logs ingests);
    # the demo prints its own table instead unless asked. Set before handlers.ingest is imported:
    # Powertools reads the level when the Logger is created.
    if not verbose:
        os.environ["POWERTOOLS_LOG_LEVEL"] = "WARNING"
    os.environ["MIN_PRIORITY"] = MIN_PRIORITY
    out = sys.stdout
    lines = [line for line in DEMO_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]
    out.write(f"Replaying {len(lines)} Fluent Bit records from {DEMO_FILE.name} through ")
    out.write("handlers.ingest.handler into emulated Security Hub (moto), MIN_PRIORITY=Notice\n")

    with emulated_aws():
        import boto3

        from handlers import ingest

        for site in SITES:
            boto3.client("securityhub", region_name=site.region).enable_security_hub()
        first_id = 37_000_000_000
        totals: Counter[str] = Counter()
        skipped: Counter[str] = Counter()
        for site, messages in route(lines).items():
            os.environ["AWS_REGION"] = site.region
            os.environ["CLUSTER_NAME"] = site.cluster_name
            context = DemoContext(
                invoked_function_arn=(
                    f"arn:aws:lambda:{site.region}:{ACCOUNT_ID}:function:{site.function_name}"
                ),
                function_name=site.function_name,
            )
            event = subscription_event(site, messages, first_id)
            first_id += len(messages)
            captured = io.StringIO()
            with contextlib.redirect_stdout(out if verbose else captured):
                summary = ingest.handler(event, context)
                count = len(_stored(site.region))
                again = ingest.handler(event, context)  # the same event, delivered twice
            recount = len(_stored(site.region))
            out.write(
                f"\n{site.region} ({site.cluster_name}): {len(messages)} log events -> "
                f"received {summary['received']}, imported {summary['imported']} findings, "
                f"coalesced {summary['coalesced']}, failed {summary['failed']}\n"
            )
            for reason, n in sorted(summary["skipped"].items()):
                out.write(f"  skipped {reason}: {n}\n")
            totals.update({k: summary[k] for k in ("received", "imported", "coalesced", "failed")})
            skipped.update(summary["skipped"])
            verdict = "no duplicates" if recount == count else "DUPLICATED"
            out.write(
                f"  re-delivered the same event: imported {again['imported']} again, findings "
                f"in Security Hub {count} -> {recount} ({verdict})\n"
            )
            if recount != count:
                return 1
        for site in SITES:
            print_findings(site.region, _stored(site.region), out)
        from handlers import coverage_demo  # a node that stopped reporting: docs/coverage.md

        if coverage_demo.run(SITES[0].region, SITES[0].cluster_name, out):
            return 1
        from handlers import storm_demo  # repeats across invocations: docs/storms.md

        site = SITES[0]
        arn = f"arn:aws:lambda:{site.region}:{ACCOUNT_ID}:function:{site.function_name}"
        if storm_demo.run(site.region, site.cluster_name, DemoContext(arn), out):
            return 1
    out.write(
        f"\nSummary: {totals['received']} log events received, {totals['imported']} findings "
        f"imported ({totals['coalesced']} repeats coalesced), {totals['failed']} failed; skipped "
        + ", ".join(f"{reason} {n}" for reason, n in sorted(skipped.items()))
        + "\n"
    )
    out.write(
        "\nEach finding's Id is derived from the alert, so re-delivery updates instead of "
        "duplicating.\nSee docs/handler.md for what the handler logs and measures, and "
        "`python -m handlers replay --help` to try your own alerts.\n"
    )
    return 0
