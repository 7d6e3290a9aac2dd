"""The coverage checker against moto: EC2 instances, the heartbeat table, Security Hub.

Each test runs the real check (handlers.coverage.check) at chosen moments after the instances'
launch, with heartbeats written the way the ingest Lambda writes them.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import redirect_stdout
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from asff_limits import assert_within_asff_limits
from aws_fakes import ACCOUNT_ID, REGION, FakeLambdaContext, moto_security_hub, stored_findings

from handlers import coverage, heartbeat, securityhub
from handlers.names import heartbeat_table_name

CLUSTER = "shop-prod-use1"
TABLE = heartbeat_table_name(CLUSTER)
POLICY = coverage.Policy(
    cluster=CLUSTER,
    heartbeat_interval=timedelta(minutes=15),
    grace=timedelta(minutes=30),
    drop_threshold_pct=1.0,
)
CTX = coverage.Context(account_id=ACCOUNT_ID, region=REGION, partition="aws")
MANAGED = [
    {"Key": "eks:cluster-name", "Value": CLUSTER},
    {"Key": "eks:nodegroup-name", "Value": "ng-1"},
]
SELF_MANAGED = [{"Key": f"kubernetes.io/cluster/{CLUSTER}", "Value": "owned"}]
KARPENTER = [*SELF_MANAGED, {"Key": "karpenter.sh/nodepool", "Value": "default"}]


@dataclass
class World:
    ec2: Any
    dynamodb: Any
    clients: coverage.Clients

    def launch(self, tags: list[dict[str, str]]) -> tuple[str, str, datetime]:
        """A running instance with these tags: (instance id, private DNS name, launch time)."""
        [instance] = self.ec2.run_instances(
            ImageId="ami-12c6146b",
            MinCount=1,
            MaxCount=1,
            InstanceType="m6i.large",
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
        )["Instances"]
        return instance["InstanceId"], instance["PrivateDnsName"], instance["LaunchTime"]

    def heartbeat(self, node: str, at: datetime, drops: float = 0.0) -> None:
        beat = heartbeat.Heartbeat(CLUSTER, node, at, "0.44.1", drops, 1000)
        assert heartbeat.record_heartbeats(self.dynamodb, TABLE, [beat]).written == 1

    def check(self, at: datetime) -> coverage.CheckResult:
        result = coverage.check(self.clients, CTX, POLICY, at, sleep=lambda _: None)
        assert result.failed == []
        return result


@pytest.fixture
def world() -> Iterator[World]:
    with moto_security_hub(REGION):
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        dynamodb.create_table(
            TableName=TABLE,
            BillingMode="PAY_PER_REQUEST",
            KeySchema=[
                {"AttributeName": "cluster", "KeyType": "HASH"},
                {"AttributeName": "node", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "cluster", "AttributeType": "S"},
                {"AttributeName": "node", "AttributeType": "S"},
            ],
        )
        ec2 = boto3.client("ec2", region_name=REGION)
        clients = coverage.Clients(ec2, dynamodb, securityhub.new_client(REGION))
        yield World(ec2, dynamodb, clients)
        for finding in stored_findings():
            assert_within_asff_limits(finding)


def coverage_findings() -> dict[str, dict[str, Any]]:
    return {f["Id"]: f for f in stored_findings() if f["Id"].startswith("falco/coverage/")}


def test_a_node_that_stops_reporting_becomes_a_high_finding_naming_instance_and_cluster(
    world: World,
) -> None:
    instance, node, launched = world.launch(MANAGED)
    world.heartbeat(node, launched + timedelta(minutes=5))
    last = launched + timedelta(minutes=20)
    world.heartbeat(node, last)

    assert world.check(last + timedelta(minutes=29)).opened == []  # one heartbeat late: not yet
    result = world.check(last + timedelta(minutes=31))

    [finding_id] = result.opened
    finding = coverage_findings()[finding_id]
    assert finding_id == f"falco/coverage/{CLUSTER}/{instance}/not-reporting"
    assert finding["Severity"]["Label"] == "HIGH"
    assert finding["RecordState"] == "ACTIVE"
    assert finding["Title"] == (
        f"Falco is not reporting from node {node} in cluster {CLUSTER} "
        f"since {coverage.timestamp(last)}"
    )
    resources = {r["Type"]: r for r in finding["Resources"]}
    assert resources["AwsEc2Instance"]["Id"].endswith(f":instance/{instance}")
    assert resources["AwsEksCluster"]["Details"]["AwsEksCluster"]["Name"] == CLUSTER
    assert finding["ProductFields"]["falco/coverage/found_by"] == "managed node group ng-1"
    assert result.coverage.percent == 0.0


def test_it_is_archived_when_the_node_reports_again(world: World) -> None:
    _, node, launched = world.launch(MANAGED)
    silent_at = launched + timedelta(hours=2)
    [finding_id] = world.check(silent_at).opened
    assert "since its launch" in coverage_findings()[finding_id]["Title"]

    world.heartbeat(node, silent_at + timedelta(minutes=1))
    result = world.check(silent_at + timedelta(minutes=5))

    assert result.closed == [finding_id]
    finding = coverage_findings()[finding_id]
    assert finding["RecordState"] == "ARCHIVED"
    assert finding["ProductFields"]["falco/coverage/closed_because"] == (
        "Falco reports from the node again"
    )
    assert result.coverage.percent == 100.0


def test_it_is_archived_when_the_instance_is_terminated(world: World) -> None:
    instance, _, launched = world.launch(MANAGED)
    moment = launched + timedelta(hours=1)
    [finding_id] = world.check(moment).opened
    world.ec2.terminate_instances(InstanceIds=[instance])

    result = world.check(moment + timedelta(minutes=5))

    assert result.closed == [finding_id]
    assert coverage_findings()[finding_id]["RecordState"] == "ARCHIVED"
    assert result.coverage.expected == 0


def test_a_node_that_just_joined_has_a_grace_period(world: World) -> None:
    _, node, launched = world.launch(MANAGED)
    result = world.check(launched + timedelta(minutes=25))
    assert result.opened == []
    assert [n.node_name for n in result.coverage.starting] == [node]
    assert result.coverage.expected == 0
    assert world.check(launched + timedelta(minutes=31)).opened != []  # grace is over


def test_high_drop_rate_opens_a_medium_finding_and_closes_when_it_recovers(world: World) -> None:
    instance, node, launched = world.launch(MANAGED)
    moment = launched + timedelta(hours=1)
    world.heartbeat(node, moment, drops=7.5)
    [finding_id] = world.check(moment + timedelta(minutes=1)).opened
    finding = coverage_findings()[finding_id]
    assert finding_id.endswith(f"{instance}/event-drops")
    assert finding["Severity"]["Label"] == "MEDIUM"
    assert "7.50%" in finding["Title"]

    world.heartbeat(node, moment + timedelta(minutes=15), drops=0.2)
    result = world.check(moment + timedelta(minutes=16))
    assert result.closed == [finding_id]
    assert result.coverage.percent == 100.0  # dropping nodes still report


def test_reruns_import_nothing_new_and_never_duplicate(world: World) -> None:
    world.launch(MANAGED)
    _, _, launched = world.launch(SELF_MANAGED)
    moment = launched + timedelta(hours=1)
    first = world.check(moment)
    assert len(first.opened) == 2
    before = coverage_findings()

    for minutes in (5, 10, 15):
        again = world.check(moment + timedelta(minutes=minutes))
        assert (again.opened, again.closed) == ([], [])
    assert coverage_findings().keys() == before.keys()
    assert len(stored_findings()) == 2


def test_self_managed_and_karpenter_nodes_are_found_and_other_clusters_ignored(
    world: World,
) -> None:
    world.launch(SELF_MANAGED)
    world.launch(KARPENTER)
    world.launch([{"Key": "eks:cluster-name", "Value": "someone-else"}])
    world.launch([{"Key": "Name", "Value": "bastion"}])
    _, _, launched = world.launch(MANAGED)

    result = world.check(launched + timedelta(hours=1))

    found_by = sorted(gap.node.found_by for gap in result.coverage.silent)
    assert found_by == [
        "Karpenter node pool default",
        "managed node group ng-1",
        "self-managed node",
    ]


def test_the_checker_records_each_nodes_instance_for_alert_enrichment(world: World) -> None:
    instance, node, launched = world.launch(MANAGED)
    world.heartbeat(node, launched + timedelta(minutes=10))
    world.check(launched + timedelta(minutes=11))
    directory = heartbeat.InstanceDirectory(world.dynamodb, TABLE, CLUSTER)
    assert directory.instance_of(node) == instance


def test_a_heartbeat_from_a_previous_instance_with_the_same_name_does_not_count(
    world: World,
) -> None:
    _, node, launched = world.launch(MANAGED)
    world.heartbeat(node, launched - timedelta(minutes=5))  # the IP's previous owner
    assert len(world.check(launched + timedelta(minutes=31)).opened) == 1


def test_refused_findings_fail_the_check_after_the_rest_is_done(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.launch(MANAGED)
    world.launch(MANAGED)

    def refuse_all(client: Any, found: list[dict[str, Any]], **_: Any) -> Any:
        failed = [securityhub.FailedFinding(f["Id"], "AccessDenied", "no") for f in found]
        return securityhub.ImportResult(imported=0, failed=failed, calls=1)

    monkeypatch.setattr(securityhub, "import_findings", refuse_all)
    monkeypatch.setattr(coverage, "_clients", lambda region: world.clients)
    monkeypatch.setenv("CLUSTER_NAME", CLUSTER)
    monkeypatch.setenv("HEARTBEAT_INTERVAL_SECONDS", "900")
    monkeypatch.setenv("GRACE_SECONDS", "0")
    monkeypatch.setenv("DROP_THRESHOLD_PERCENT", "1")
    with pytest.raises(coverage.CheckFailed, match="2 coverage updates failed"):
        coverage.handler({}, FakeLambdaContext())


def test_handler_emits_coverage_metrics_per_cluster(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, node, _ = world.launch(MANAGED)
    world.launch(MANAGED)
    world.heartbeat(node, datetime.now(UTC))
    monkeypatch.setattr(coverage, "_clients", lambda region: world.clients)
    monkeypatch.setenv("CLUSTER_NAME", CLUSTER)
    monkeypatch.setenv("HEARTBEAT_INTERVAL_SECONDS", "900")
    monkeypatch.setenv("GRACE_SECONDS", "0")
    monkeypatch.setenv("DROP_THRESHOLD_PERCENT", "1")
    out = io.StringIO()
    with redirect_stdout(out):
        summary = coverage.handler({}, FakeLambdaContext())
    emf = json.loads(out.getvalue().splitlines()[0])
    assert emf["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["Cluster"]]
    assert (emf["Cluster"], emf["ExpectedNodes"], emf["ReportingNodes"]) == (CLUSTER, 2, 1)
    assert emf["CoveragePercent"] == 50.0
    assert summary["silent"] != []


def test_malformed_environment_is_named() -> None:
    with pytest.raises(ValueError, match="HEARTBEAT_INTERVAL_SECONDS"):
        coverage.policy_from_environment({"CLUSTER_NAME": CLUSTER})
