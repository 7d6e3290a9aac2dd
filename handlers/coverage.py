"""The coverage checker (``handlers.coverage.handler``): is every node of the cluster watched?

Every few minutes (EventBridge Scheduler) it compares the cluster's running EC2 instances with
the heartbeats in the heartbeat table (handlers/heartbeat.py) and keeps Security Hub in step:

* a node that has not reported for ``silent_after`` (two heartbeat intervals) and is older than
  the grace period gets a "Falco is not reporting" finding (HIGH);
* a reporting node whose latest snapshot shows more than ``drop_threshold_pct`` % of kernel
  events dropped gets an "event drops" finding (MEDIUM);
* an open coverage finding whose node reports again, recovers, or is gone is archived
  (``RecordState: ARCHIVED``), so the console shows today's gaps, not history.

Finding Ids are ``falco/coverage/<cluster>/<instance id>/<check>``: re-runs, retries and two
overlapping runs import the same Ids, so nothing is duplicated; a finding is only sent when it
opens or closes (the open ones are read back with GetFindings), so a steady cluster costs no
imports. It also writes each node's instance id into the table (for alert enrichment) and emits
EMF metrics per cluster: ExpectedNodes, ReportingNodes, CoveragePercent, SilentNodes,
StartingNodes, DroppingNodes.

Failure policy, as for the ingest Lambda: an AWS error that survives botocore's retries, or a
finding Security Hub refuses, fails the invocation after everything else was done; Lambda
retries it and then hands it to the on-failure queue, and the next scheduled run starts afresh.
Pure functions first; the shell (``check``, ``handler``) at the end.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from handlers import heartbeat
from handlers.names import (
    COMPANY_NAME,
    COVERAGE_GENERATOR_PREFIX,
    COVERAGE_ID_PREFIX,
    METRICS_NAMESPACE,
    PRODUCT_NAME,
    custom_product_arn,
    eks_cluster_arn,
    heartbeat_table_name,
)

NOT_REPORTING = "not-reporting"
EVENT_DROPS = "event-drops"
CHECKS = (NOT_REPORTING, EVENT_DROPS)

# Why these severities: docs/coverage.md ("Severity"). A node without a sensor hides everything
# that happens on it, and stopping the sensor is what an intruder does first (MITRE T1562.001);
# dropped events hide part of it.
SEVERITY = {NOT_REPORTING: "HIGH", EVENT_DROPS: "MEDIUM"}
TYPES = {
    NOT_REPORTING: [
        "Software and Configuration Checks/AWS Security Best Practices/Runtime Sensor Coverage",
        "TTPs/Defense Evasion/T1562.001",
    ],
    EVENT_DROPS: [
        "Software and Configuration Checks/AWS Security Best Practices/Runtime Sensor Coverage",
    ],
}
RUNBOOK = "See docs/coverage.md in the falco-securityhub repository: what to check, in order."

# How each way of running nodes tags its EC2 instances (docs/coverage.md, "Which nodes"):
# managed node groups: eks:cluster-name (and eks:nodegroup-name); self-managed nodes and
# Karpenter: kubernetes.io/cluster/<name> = owned (Karpenter adds karpenter.sh/nodepool).
MANAGED_CLUSTER_TAG = "eks:cluster-name"
MANAGED_NODEGROUP_TAG = "eks:nodegroup-name"
KARPENTER_NODEPOOL_TAG = "karpenter.sh/nodepool"
SCHEMA_VERSION = "2018-10-08"


def cluster_ownership_tag(cluster: str) -> str:
    return f"kubernetes.io/cluster/{cluster}"


# -- inputs ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Node:
    """A running EC2 instance of the cluster: a node Falco should be watching."""

    instance_id: str
    node_name: str  # the private DNS name: the Kubernetes node name on EKS
    launched_at: datetime
    found_by: str  # "managed node group <name>", "Karpenter node pool <name>", "self-managed"
    instance_type: str | None = None
    image_id: str | None = None
    vpc_id: str | None = None
    subnet_id: str | None = None
    private_ip: str | None = None


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """One item of the heartbeat table."""

    node: str
    seen_at: datetime | None
    falco_version: str | None = None
    drop_pct: float | None = None
    instance_id: str | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    cluster: str
    heartbeat_interval: timedelta
    grace: timedelta  # a node younger than this is "starting", not "silent"
    drop_threshold_pct: float

    @property
    def silent_after(self) -> timedelta:
        """Two heartbeat intervals: one late or lost snapshot alone never opens a finding."""
        return 2 * self.heartbeat_interval


@dataclass(frozen=True, slots=True)
class Context:
    account_id: str
    region: str
    partition: str


# -- evaluation --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Silent:
    node: Node
    since: datetime  # the last heartbeat, or the launch when it never reported
    last: NodeRecord | None


@dataclass(frozen=True, slots=True)
class Dropping:
    node: Node
    record: NodeRecord


@dataclass
class Coverage:
    cluster: str
    reporting: list[Node] = field(default_factory=list)
    starting: list[Node] = field(default_factory=list)
    silent: list[Silent] = field(default_factory=list)
    dropping: list[Dropping] = field(default_factory=list)

    @property
    def expected(self) -> int:
        """Nodes that should be reporting: all but those still in their grace period."""
        return len(self.reporting) + len(self.silent)

    @property
    def percent(self) -> float:
        return 100.0 if not self.expected else 100.0 * len(self.reporting) / self.expected


def latest_record(node: Node, records: Sequence[NodeRecord]) -> NodeRecord | None:
    """The node's latest heartbeat since it launched, matched by node name or instance id.

    Heartbeats from before the launch belong to an earlier instance that had the same private
    IP (and so the same DNS name): they are ignored.
    """
    names = {node.node_name, node.instance_id}
    candidates = [
        r
        for r in records
        if r.seen_at is not None
        and r.seen_at >= node.launched_at
        and (r.node in names or r.instance_id == node.instance_id)
    ]
    return max(candidates, key=lambda r: r.seen_at or node.launched_at, default=None)


def evaluate(
    nodes: Iterable[Node], records: Sequence[NodeRecord], now: datetime, policy: Policy
) -> Coverage:
    coverage = Coverage(policy.cluster)
    for node in sorted(nodes, key=lambda n: n.instance_id):
        record = latest_record(node, records)
        if record is not None and record.seen_at and now - record.seen_at <= policy.silent_after:
            coverage.reporting.append(node)
            if record.drop_pct is not None and record.drop_pct > policy.drop_threshold_pct:
                coverage.dropping.append(Dropping(node, record))
        elif now - node.launched_at < policy.grace:
            coverage.starting.append(node)
        else:
            since = record.seen_at if record and record.seen_at else node.launched_at
            coverage.silent.append(Silent(node, since, record))
    return coverage


# -- findings ----------------------------------------------------------------------------------
def timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def finding_id(cluster: str, instance_id: str, check: str) -> str:
    return f"{COVERAGE_ID_PREFIX}{cluster}/{instance_id}/{check}"


def cluster_prefix(cluster: str) -> str:
    return f"{COVERAGE_ID_PREFIX}{cluster}/"


def _resources(node: Node, ctx: Context, cluster: str) -> list[dict[str, Any]]:
    details: dict[str, Any] = {"LaunchedAt": timestamp(node.launched_at)}
    for key, value in (
        ("Type", node.instance_type),
        ("ImageId", node.image_id),
        ("VpcId", node.vpc_id),
        ("SubnetId", node.subnet_id),
    ):
        if value:
            details[key] = value
    if node.private_ip:
        details["IpV4Addresses"] = [node.private_ip]
    cluster_arn = eks_cluster_arn(ctx.partition, ctx.region, ctx.account_id, cluster)
    return [
        {
            "Type": "AwsEc2Instance",
            "Id": f"arn:{ctx.partition}:ec2:{ctx.region}:{ctx.account_id}:instance/"
            f"{node.instance_id}",
            "Partition": ctx.partition,
            "Region": ctx.region,
            "Details": {"AwsEc2Instance": details},
        },
        {
            "Type": "AwsEksCluster",
            "Id": cluster_arn,
            "Partition": ctx.partition,
            "Region": ctx.region,
            "Details": {"AwsEksCluster": {"Name": cluster, "Arn": cluster_arn}},
        },
    ]


def _finding(
    check: str,
    node: Node,
    ctx: Context,
    cluster: str,
    now: datetime,
    first_seen: datetime,
    title: str,
    description: str,
    fields: Mapping[str, str],
) -> dict[str, Any]:
    label = SEVERITY[check]
    return {
        "SchemaVersion": SCHEMA_VERSION,
        "Id": finding_id(cluster, node.instance_id, check),
        "ProductArn": custom_product_arn(ctx.partition, ctx.region, ctx.account_id),
        "CompanyName": COMPANY_NAME,
        "ProductName": PRODUCT_NAME,
        "GeneratorId": COVERAGE_GENERATOR_PREFIX + check,
        "AwsAccountId": ctx.account_id,
        "Region": ctx.region,
        "Types": TYPES[check],
        "CreatedAt": timestamp(now),
        "UpdatedAt": timestamp(now),
        "FirstObservedAt": timestamp(first_seen),
        "LastObservedAt": timestamp(now),
        "Severity": {"Label": label, "Original": label},
        "FindingProviderFields": {
            "Severity": {"Label": label, "Original": label},
            "Types": TYPES[check],
        },
        "Title": title[:256],
        "Description": description[:1024],
        "Remediation": {"Recommendation": {"Text": RUNBOOK}},
        "ProductFields": {
            "falco/coverage/check": check,
            "falco/coverage/cluster": cluster,
            "falco/coverage/node": node.node_name,
            "falco/coverage/found_by": node.found_by,
            **fields,
        },
        "Resources": _resources(node, ctx, cluster),
        "RecordState": "ACTIVE",
    }


def silent_finding(gap: Silent, ctx: Context, policy: Policy, now: datetime) -> dict[str, Any]:
    node, cluster = gap.node, policy.cluster
    never = gap.last is None
    since = timestamp(gap.since)
    title = f"Falco is not reporting from node {node.node_name} in cluster {cluster}"
    if never:
        title += f" since its launch at {since}"
        what = (
            f"Falco has sent no heartbeat from node {node.node_name} since it launched at {since}"
        )
    else:
        title += f" since {since}"
        what = f"Falco's last heartbeat from node {node.node_name} was at {since}"
    description = (
        f"{what} (instance {node.instance_id}, {node.found_by}; heartbeats are expected every "
        f"{_minutes(policy.heartbeat_interval)}). Nothing that happens on this node is being "
        "watched: Falco may have crashed, been evicted or stopped, or its alerts cannot reach "
        "CloudWatch Logs. An intruder who stops the sensor looks exactly like this."
    )
    fields = {"falco/coverage/since": since}
    if gap.last is not None and gap.last.falco_version:
        fields["falco/coverage/falco_version"] = gap.last.falco_version
    return _finding(NOT_REPORTING, node, ctx, cluster, now, gap.since, title, description, fields)


def drops_finding(gap: Dropping, ctx: Context, policy: Policy, now: datetime) -> dict[str, Any]:
    node, record, cluster = gap.node, gap.record, policy.cluster
    pct = record.drop_pct or 0.0
    title = (
        f"Falco dropped {pct:.2f}% of kernel events on node {node.node_name} in cluster {cluster}"
    )
    description = (
        f"Falco's metrics snapshot of {timestamp(record.seen_at or now)} from node "
        f"{node.node_name} (instance {node.instance_id}) shows {pct:.2f}% of kernel events "
        f"dropped since the previous snapshot, above the {policy.drop_threshold_pct:g}% "
        "threshold: Falco is blind to part of what happens on this node (an attacker can also "
        "cause drops on purpose by flooding syscalls)."
    )
    fields = {"falco/coverage/drop_percent": f"{pct:.4f}"}
    first = record.seen_at or now
    return _finding(EVENT_DROPS, node, ctx, cluster, now, first, title, description, fields)


def _minutes(interval: timedelta) -> str:
    minutes = int(interval.total_seconds() // 60)
    return f"{minutes} minutes" if minutes != 1 else "minute"


def desired_findings(
    coverage: Coverage, ctx: Context, policy: Policy, now: datetime
) -> dict[str, dict[str, Any]]:
    """The coverage findings that should be open now, by Id."""
    found = [silent_finding(gap, ctx, policy, now) for gap in coverage.silent]
    found += [drops_finding(gap, ctx, policy, now) for gap in coverage.dropping]
    return {f["Id"]: f for f in found}


# What a provider may send back when it archives one of its findings: the required members and
# what describes the finding; not what Security Hub or analysts own (Workflow, Note, ...).
_KEPT_ON_ARCHIVE = (
    "SchemaVersion",
    "Id",
    "ProductArn",
    "CompanyName",
    "ProductName",
    "GeneratorId",
    "AwsAccountId",
    "Region",
    "Types",
    "CreatedAt",
    "FirstObservedAt",
    "LastObservedAt",
    "Severity",
    "FindingProviderFields",
    "Title",
    "Description",
    "Remediation",
    "Resources",
)


def archived(finding: Mapping[str, Any], now: datetime, reason: str) -> dict[str, Any]:
    """The open finding, closed: same Id, ``RecordState: ARCHIVED``, a later UpdatedAt."""
    closed = {key: finding[key] for key in _KEPT_ON_ARCHIVE if key in finding}
    if isinstance(closed.get("Severity"), Mapping):
        closed["Severity"] = {
            k: v for k, v in closed["Severity"].items() if k in ("Label", "Original")
        }
    fields = finding.get("ProductFields") or {}
    closed["ProductFields"] = {
        **{k: v for k, v in fields.items() if not k.startswith("aws/")},
        "falco/coverage/closed_because": reason,
        "falco/coverage/closed_at": timestamp(now),
    }
    closed["UpdatedAt"] = timestamp(now)
    closed["RecordState"] = "ARCHIVED"
    return closed


@dataclass
class Plan:
    opened: list[dict[str, Any]] = field(default_factory=list)
    closed: list[dict[str, Any]] = field(default_factory=list)

    @property
    def findings(self) -> list[dict[str, Any]]:
        return self.opened + self.closed


def plan(
    desired: Mapping[str, dict[str, Any]],
    open_findings: Iterable[Mapping[str, Any]],
    coverage: Coverage,
    now: datetime,
) -> Plan:
    """What to import: findings to open (not open yet) and open ones to archive."""
    prefix = cluster_prefix(coverage.cluster)
    still_open = {
        f["Id"]: f
        for f in open_findings
        if str(f.get("Id", "")).startswith(prefix) and f.get("RecordState") == "ACTIVE"
    }
    result = Plan()
    result.opened = [f for finding_id_, f in desired.items() if finding_id_ not in still_open]
    present = {n.instance_id for n in coverage.reporting + coverage.starting}
    present |= {gap.node.instance_id for gap in coverage.silent}
    for finding_id_, finding in sorted(still_open.items()):
        if finding_id_ in desired:
            continue
        instance = finding_id_[len(prefix) :].split("/", 1)[0]
        if instance not in present:
            reason = "the instance is no longer running in the cluster"
        elif finding_id_.endswith("/" + NOT_REPORTING):
            reason = "Falco reports from the node again"
        else:
            reason = "the drop rate is back under the threshold"
        result.closed.append(archived(finding, now, reason))
    return result


def metrics_document(coverage: Coverage, now: datetime) -> dict[str, Any]:
    """One CloudWatch EMF document with the cluster's coverage numbers (dimension Cluster)."""
    values = {
        "ExpectedNodes": (coverage.expected, "Count"),
        "ReportingNodes": (len(coverage.reporting), "Count"),
        "CoveragePercent": (round(coverage.percent, 2), "Percent"),
        "SilentNodes": (len(coverage.silent), "Count"),
        "StartingNodes": (len(coverage.starting), "Count"),
        "DroppingNodes": (len(coverage.dropping), "Count"),
    }
    return {
        "_aws": {
            "Timestamp": int(now.timestamp() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": METRICS_NAMESPACE,
                    "Dimensions": [["Cluster"]],
                    "Metrics": [{"Name": k, "Unit": unit} for k, (_, unit) in values.items()],
                }
            ],
        },
        "Cluster": coverage.cluster,
        **{k: v for k, (v, _) in values.items()},
    }


def instance_updates(
    nodes: Iterable[Node], records: Sequence[NodeRecord], now: datetime
) -> list[Node]:
    """Nodes whose instance id the table does not hold yet (enrichment reads it from there)."""
    known = {r.node: r.instance_id for r in records}
    return [n for n in nodes if known.get(n.node_name) != n.instance_id]


# -- reading AWS's answers (pure) ----------------------------------------------------------------
def node_from_instance(instance: Mapping[str, Any], cluster: str) -> Node | None:
    instance_id = instance.get("InstanceId")
    launched = instance.get("LaunchTime")
    if not isinstance(instance_id, str) or not isinstance(launched, datetime):
        return None
    tags = {t.get("Key"): t.get("Value") for t in instance.get("Tags") or []}
    if tags.get(KARPENTER_NODEPOOL_TAG):
        found_by = f"Karpenter node pool {tags[KARPENTER_NODEPOOL_TAG]}"
    elif tags.get(MANAGED_CLUSTER_TAG) == cluster:
        found_by = f"managed node group {tags.get(MANAGED_NODEGROUP_TAG) or '?'}"
    else:
        found_by = "self-managed node"
    return Node(
        instance_id=instance_id,
        node_name=instance.get("PrivateDnsName") or instance_id,
        launched_at=launched.astimezone(UTC),
        found_by=found_by,
        instance_type=instance.get("InstanceType"),
        image_id=instance.get("ImageId"),
        vpc_id=instance.get("VpcId"),
        subnet_id=instance.get("SubnetId"),
        private_ip=instance.get("PrivateIpAddress"),
    )


def record_from_item(item: Mapping[str, Any]) -> NodeRecord | None:
    node = item.get(heartbeat.NODE, {}).get("S")
    if not isinstance(node, str):
        return None
    seen = item.get(heartbeat.SEEN_AT, {}).get("S")
    drops = item.get(heartbeat.DROP_PCT, {}).get("N")
    try:
        drop_pct = float(drops) if drops is not None else None
    except ValueError:
        drop_pct = None
    return NodeRecord(
        node=node,
        seen_at=heartbeat.parse_time(seen) if isinstance(seen, str) else None,
        falco_version=item.get(heartbeat.FALCO_VERSION, {}).get("S"),
        drop_pct=drop_pct,
        instance_id=item.get(heartbeat.INSTANCE_ID, {}).get("S"),
    )


def inventory_filters(cluster: str) -> list[list[dict[str, Any]]]:
    """One DescribeInstances filter set per way of running nodes (EC2 ANDs the filters of one
    call, so the two tags need two calls); running instances only."""
    running = {"Name": "instance-state-name", "Values": ["running"]}
    return [
        [{"Name": f"tag:{MANAGED_CLUSTER_TAG}", "Values": [cluster]}, running],
        [{"Name": f"tag:{cluster_ownership_tag(cluster)}", "Values": ["owned", "shared"]}, running],
    ]


def context_from_arn(function_arn: str, region: str | None) -> Context:
    parts = str(function_arn).split(":")
    if len(parts) < 7 or parts[0] != "arn" or not parts[4].isdigit():
        raise ValueError(f"cannot read the account from invoked_function_arn {function_arn!r}")
    return Context(account_id=parts[4], region=region or parts[3], partition=parts[1])


def policy_from_environment(environ: Mapping[str, str]) -> Policy:
    """CLUSTER_NAME, HEARTBEAT_INTERVAL_SECONDS, GRACE_SECONDS, DROP_THRESHOLD_PERCENT."""
    try:
        return Policy(
            cluster=environ["CLUSTER_NAME"],
            heartbeat_interval=timedelta(seconds=int(environ["HEARTBEAT_INTERVAL_SECONDS"])),
            grace=timedelta(seconds=int(environ["GRACE_SECONDS"])),
            drop_threshold_pct=float(environ["DROP_THRESHOLD_PERCENT"]),
        )
    except (KeyError, ValueError) as exc:
        raise ValueError(
            f"coverage checker environment is incomplete or malformed: {exc!r}"
        ) from None


# -- the shell ---------------------------------------------------------------------------------
class CheckFailed(RuntimeError):
    """Part of the check could not be done; everything else was. Lambda retries the event."""


@dataclass
class Clients:
    ec2: Any
    dynamodb: Any
    securityhub: Any


def read_inventory(ec2: Any, cluster: str) -> list[Node]:
    nodes: dict[str, Node] = {}
    paginator = ec2.get_paginator("describe_instances")
    for filters in inventory_filters(cluster):
        for page in paginator.paginate(Filters=filters):
            for reservation in page.get("Reservations", []):
                for instance in reservation.get("Instances", []):
                    node = node_from_instance(instance, cluster)
                    if node is not None:
                        nodes.setdefault(node.instance_id, node)
    return list(nodes.values())


def read_records(dynamodb: Any, table: str, cluster: str) -> list[NodeRecord]:
    records: list[NodeRecord] = []
    request = {
        "TableName": table,
        "KeyConditionExpression": "#cluster = :cluster",
        "ExpressionAttributeNames": {"#cluster": heartbeat.CLUSTER},
        "ExpressionAttributeValues": {":cluster": {"S": cluster}},
    }
    for page in dynamodb.get_paginator("query").paginate(**request):
        for item in page.get("Items", []):
            record = record_from_item(item)
            if record is not None:
                records.append(record)
    return records


def read_open_findings(securityhub_client: Any, ctx: Context, cluster: str) -> list[dict[str, Any]]:
    """This cluster's ACTIVE coverage findings (filtered again here: emulators ignore Filters)."""
    filters = {
        "ProductArn": [
            {
                "Value": custom_product_arn(ctx.partition, ctx.region, ctx.account_id),
                "Comparison": "EQUALS",
            }
        ],
        "Id": [{"Value": cluster_prefix(cluster), "Comparison": "PREFIX"}],
        "RecordState": [{"Value": "ACTIVE", "Comparison": "EQUALS"}],
    }
    found: list[dict[str, Any]] = []
    paginator = securityhub_client.get_paginator("get_findings")
    for page in paginator.paginate(Filters=filters, PaginationConfig={"PageSize": 100}):
        found.extend(
            f
            for f in page.get("Findings", [])
            if str(f.get("Id", "")).startswith(cluster_prefix(cluster))
            and f.get("RecordState") == "ACTIVE"
        )
    return found


def write_instance_ids(
    dynamodb: Any, table: str, cluster: str, nodes: Iterable[Node], now: datetime
) -> list[str]:
    """Record node -> instance id; returns the nodes that could not be written."""
    from botocore.exceptions import BotoCoreError, ClientError

    failed: list[str] = []
    expires = str(int((now + heartbeat.RETENTION).timestamp()))
    for node in nodes:
        try:
            dynamodb.update_item(
                TableName=table,
                Key={heartbeat.CLUSTER: {"S": cluster}, heartbeat.NODE: {"S": node.node_name}},
                # The TTL only moves forward: a heartbeat may already have set a later one.
                UpdateExpression="SET #instance = :instance, #expires = "
                "if_not_exists(#expires, :expires)",
                ExpressionAttributeNames={
                    "#instance": heartbeat.INSTANCE_ID,
                    "#expires": heartbeat.EXPIRES_AT,
                },
                ExpressionAttributeValues={
                    ":instance": {"S": node.instance_id},
                    ":expires": {"N": expires},
                },
            )
        except (ClientError, BotoCoreError):
            failed.append(node.node_name)
    return failed


@dataclass
class CheckResult:
    coverage: Coverage
    opened: list[str]
    closed: list[str]
    failed: list[str]  # finding Ids Security Hub refused, and nodes whose instance id was not saved


def check(
    clients: Clients, ctx: Context, policy: Policy, now: datetime, *, sleep: Any = None
) -> CheckResult:
    """One coverage check of one cluster. AWS read errors raise (nothing is half-decided)."""
    from handlers import securityhub

    table = heartbeat_table_name(policy.cluster)
    nodes = read_inventory(clients.ec2, policy.cluster)
    records = read_records(clients.dynamodb, table, policy.cluster)
    coverage = evaluate(nodes, records, now, policy)
    open_findings = read_open_findings(clients.securityhub, ctx, policy.cluster)
    decided = plan(desired_findings(coverage, ctx, policy, now), open_findings, coverage, now)
    kwargs = {"sleep": sleep} if sleep is not None else {}
    result = securityhub.import_findings(clients.securityhub, decided.findings, **kwargs)
    unsaved = write_instance_ids(
        clients.dynamodb, table, policy.cluster, instance_updates(nodes, records, now), now
    )
    return CheckResult(
        coverage=coverage,
        opened=[f["Id"] for f in decided.opened],
        closed=[f["Id"] for f in decided.closed],
        failed=[f.id for f in result.failed] + [f"node:{n}" for n in unsaved],
    )


def _clients(region: str) -> Clients:  # pragma: no cover - real AWS only
    import boto3
    from botocore.config import Config

    from handlers import securityhub

    config = Config(retries={"mode": "standard", "total_max_attempts": 5})
    return Clients(
        ec2=boto3.client("ec2", region_name=region, config=config),
        dynamodb=boto3.client("dynamodb", region_name=region, config=config),
        securityhub=securityhub.new_client(region),
    )


def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """Scheduled entry point; the event carries nothing the check needs."""
    policy = policy_from_environment(os.environ)
    ctx = context_from_arn(context.invoked_function_arn, os.environ.get("AWS_REGION"))
    now = datetime.now(UTC)
    result = check(_clients(ctx.region), ctx, policy, now)
    print(json.dumps(metrics_document(result.coverage, now)))  # EMF: CloudWatch reads stdout
    summary = summarize(result)
    print(json.dumps({"level": "INFO", "message": "coverage check", **summary}))
    if result.failed:
        raise CheckFailed(
            f"{len(result.failed)} coverage updates failed ({', '.join(result.failed[:10])}); "
            "the rest was done. Ids are deterministic: the retry and the next run re-send them."
        )
    return summary


def summarize(result: CheckResult) -> dict[str, Any]:
    coverage = result.coverage
    return {
        "cluster": coverage.cluster,
        "expected": coverage.expected,
        "reporting": len(coverage.reporting),
        "starting": len(coverage.starting),
        "silent": [gap.node.node_name for gap in coverage.silent],
        "dropping": [gap.node.node_name for gap in coverage.dropping],
        "coverage_percent": round(coverage.percent, 2),
        "opened": result.opened,
        "closed": result.closed,
        "failed": result.failed,
    }
