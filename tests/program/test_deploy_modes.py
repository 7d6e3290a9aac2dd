"""The program in both cluster modes, across regions, with the outputs operators use (issue 8).

Each run starts from the project defaults (Pulumi.yaml) plus only what a user must supply, not
from the shipped stack files' values, so the tests hold for any valid configuration.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ACCOUNT_ID, RecordingMocks
from program_runner import PROJECT, PROJECT_DIR, ProgramRun, run_program

from components.existing_cluster import ExistingClusterError
from components.home_stack import HomeStackMismatch

EXISTING = "payments-prod"
RELEASE = "kubernetes:helm.sh/v3:Release"
PROVIDER = "pulumi:providers:kubernetes"
# Resource types the stack declares only when it builds its own cluster.
OWN_CLUSTER_TYPES = {
    "aws:ec2/vpc:Vpc",
    "aws:ec2/subnet:Subnet",
    "aws:ec2/natGateway:NatGateway",
    "eks:index:Cluster",
    "aws:eks/nodeGroup:NodeGroup",
    "aws:ec2/launchTemplate:LaunchTemplate",
    "falco-securityhub:index:Network",
    "falco-securityhub:index:Cluster",
}


def project_defaults() -> dict[str, Any]:
    project = yaml.safe_load((PROJECT_DIR / "Pulumi.yaml").read_text(encoding="utf-8"))
    return {
        f"{PROJECT}:{key}": declared["default"]
        for key, declared in project["config"].items()
        if "default" in declared
    }


def config_for(region: str, **settings: Any) -> dict[str, Any]:
    """A stack file holding aws:region and ``settings`` over the project defaults. Every region
    links by default (linkedRegions empty; the shipped default may still list one)."""
    config = {**project_defaults(), "aws:region": region, f"{PROJECT}:linkedRegions": []}
    config.update({f"{PROJECT}:{key}": value for key, value in settings.items()})
    return config


def existing(region: str = "eu-west-1", **settings: Any) -> dict[str, Any]:
    return config_for(region, existingClusterName=EXISTING, **settings)


def own(region: str = "eu-west-1", **settings: Any) -> dict[str, Any]:
    return config_for(region, publicAccessCidrs=["198.18.0.0/24"], **settings)


def with_cluster(**kwargs: Any) -> Any:
    def prepare(mocks: RecordingMocks) -> None:
        mocks.add_eks_cluster(EXISTING, **kwargs)

    return prepare


def run(config: dict[str, Any], **kwargs: Any) -> ProgramRun:
    return run_program(config["aws:region"], config=config, **kwargs)


@pytest.fixture(scope="module")
def attached() -> ProgramRun:
    return run(existing(), prepare=with_cluster())


# -- existing cluster --------------------------------------------------------------------------
def test_existing_cluster_declares_no_network_cluster_or_nodes(attached: ProgramRun) -> None:
    assert not OWN_CLUSTER_TYPES & attached.mocks.types()
    assert not attached.mocks.of_type("aws:eks/addon:Addon")


def test_existing_cluster_changes_nothing_but_what_the_stack_adds(attached: ProgramRun) -> None:
    # Everything declared against the cluster is the stack's own, so destroy removes only that.
    in_cluster = sorted(
        r.type
        for r in attached.mocks.resources
        if r.custom and (r.type.startswith("kubernetes:") or r.type.startswith("aws:eks/"))
    )
    assert in_cluster == [
        "aws:eks/podIdentityAssociation:PodIdentityAssociation",
        "kubernetes:core/v1:Namespace",
        "kubernetes:helm.sh/v3:Release",
        "kubernetes:helm.sh/v3:Release",
    ]


def test_existing_cluster_gets_both_releases_through_its_own_endpoint(attached: ProgramRun) -> None:
    cluster = attached.mocks.eks_clusters[EXISTING]
    [provider] = attached.mocks.of_type(PROVIDER)
    kubeconfig = provider.inputs["kubeconfig"]
    # A secret input arrives wrapped ({<secret signature>: ..., "value": ...}).
    kubeconfig = json.loads(kubeconfig["value"] if isinstance(kubeconfig, dict) else kubeconfig)
    [entry] = kubeconfig["clusters"]
    assert entry["cluster"]["server"] == cluster["endpoint"]
    assert entry["cluster"]["certificate-authority-data"] == "TU9DSy1DQQ=="
    [user] = kubeconfig["users"]
    exec_config = user["user"]["exec"]
    assert exec_config["command"] == "aws"
    assert exec_config["args"][:4] == ["eks", "get-token", "--cluster-name", EXISTING]
    assert exec_config["args"][4:6] == ["--region", "eu-west-1"]
    releases = attached.mocks.of_type(RELEASE)
    assert sorted(r.inputs["chart"] for r in releases) == ["falco", "fluent-bit"]
    for release in releases:
        # "<provider URN>::<provider ID>": installed through the provider built above.
        assert release.provider.endswith(f"::{provider.name}::{provider.name}-id"), release.name


def test_existing_cluster_fluent_bit_role_is_bound_to_that_cluster(attached: ProgramRun) -> None:
    association = attached.mocks.one("aws:eks/podIdentityAssociation:PodIdentityAssociation")
    assert association.inputs["clusterName"] == EXISTING
    trust = attached.mocks.one("aws:iam/role:Role", "runtime-security-fluent-bit-role").policy(
        "assumeRolePolicy"
    )
    condition = trust["Statement"][0]["Condition"]["StringEquals"]
    assert condition["aws:RequestTag/eks-cluster-arn"] == (
        f"arn:aws:eks:eu-west-1:{ACCOUNT_ID}:cluster/{EXISTING}"
    )


def test_existing_cluster_keeps_the_same_findings_pipeline(attached: ProgramRun) -> None:
    assert attached.outputs["logGroupName"] == f"/falco/{EXISTING}/alerts"
    assert attached.outputs["clusterName"] == EXISTING
    assert attached.outputs["clusterArn"].endswith(f":cluster/{EXISTING}")
    attached.mocks.one("aws:lambda/function:Function", "findings-function")
    attached.mocks.one("aws:cloudwatch/logSubscriptionFilter:LogSubscriptionFilter")
    attached.mocks.one("aws:securityhub/account:Account")
    fluent_bit = attached.mocks.one(RELEASE, "runtime-security-fluent-bit")
    assert f"cluster_name {EXISTING}" in fluent_bit.inputs["values"]["config"]["filters"]


def test_pod_identity_agent_is_installed_only_when_asked(pulumi_mocks: RecordingMocks) -> None:
    run_ = run(existing(installPodIdentityAgent=True), prepare=with_cluster())
    addon = run_.mocks.one("aws:eks/addon:Addon")
    assert addon.inputs["addonName"] == "eks-pod-identity-agent"
    assert addon.inputs["clusterName"] == EXISTING
    # Never take over an agent installed another way.
    assert addon.inputs["resolveConflictsOnCreate"] == "NONE"
    assert "existing-cluster-pod-identity-agent" in run_.dependencies["runtime-security-fluent-bit"]


def test_missing_cluster_names_cluster_region_and_first_check() -> None:
    with pytest.raises(ExistingClusterError) as raised:
        run(existing())  # no cluster of that name in the mocks' account and region
    message = str(raised.value)
    assert f"'{EXISTING}' in eu-west-1" in message
    assert f"aws eks describe-cluster --name {EXISTING} --region eu-west-1" in message


def test_inactive_cluster_is_refused() -> None:
    with pytest.raises(ExistingClusterError, match="is CREATING, not ACTIVE"):
        run(existing(), prepare=with_cluster(status="CREATING"))


def test_deployer_without_an_access_entry_is_told_how_to_get_one() -> None:
    with pytest.raises(ExistingClusterError) as raised:
        run(existing(), prepare=with_cluster(authentication_mode="API"))
    message = str(raised.value)
    assert f"arn:aws:iam::{ACCOUNT_ID}:user/mock" in message
    assert f"aws eks create-access-entry --cluster-name {EXISTING} --region eu-west-1" in message


def test_deployer_with_an_access_entry_passes() -> None:
    def prepare(mocks: RecordingMocks) -> None:
        mocks.add_eks_cluster(EXISTING, authentication_mode="API")
        mocks.access_entries.add((EXISTING, f"arn:aws:iam::{ACCOUNT_ID}:user/mock"))

    assert run(existing(), prepare=prepare).outputs["clusterName"] == EXISTING


def test_own_cluster_mode_still_builds_network_cluster_and_nodes() -> None:
    built = run(own())
    assert {"aws:ec2/vpc:Vpc", "eks:index:Cluster", "aws:eks/nodeGroup:NodeGroup"} <= (
        built.mocks.types()
    )
    # Falco, Fluent Bit and the audit Falco (the created cluster sends its audit log).
    assert {r.inputs["name"] for r in built.mocks.of_type(RELEASE)} == {
        "falco",
        "fluent-bit",
        "falco-audit",
    }


# -- regions -----------------------------------------------------------------------------------
def test_a_new_region_stack_file_alone_is_aggregated_by_default() -> None:
    # Pulumi.ap-southeast-2.yaml with aws:region (and what the user must fill in), nothing else.
    home = run(own("us-east-1"))
    aggregator = home.mocks.one("aws:securityhub/findingAggregator:FindingAggregator")
    assert aggregator.inputs["linkingMode"] == "ALL_REGIONS"
    assert home.outputs["linkedRegions"] == []
    added = run(own("ap-southeast-2"), home_exports=home_exports(home))
    assert added.outputs["homeStack"] == f"organization/{PROJECT}/us-east-1"
    assert added.outputs["aggregatorArn"] is None


def home_exports(home: ProgramRun) -> dict[str, Any]:
    return {key: home.outputs[key] for key in ("homeRegion", "linkedRegions")}


def test_linked_stack_not_on_the_home_stacks_list_is_refused_saying_where_to_add_it() -> None:
    with pytest.raises(HomeStackMismatch) as raised:
        run(
            own("ap-southeast-2", linkedRegions=["ap-southeast-2"]),
            home_exports={"homeRegion": "us-east-1", "linkedRegions": ["eu-west-1"]},
        )
    message = str(raised.value)
    assert "findings from ap-southeast-2" in message
    assert "Add ap-southeast-2 to linkedRegions" in message
    assert "Pulumi.us-east-1.yaml" in message


def test_restricted_list_from_the_home_stack_holding_the_region_passes() -> None:
    linked = run(
        own("eu-west-1", linkedRegions=["eu-west-1"]),
        home_exports={"homeRegion": "us-east-1", "linkedRegions": ["eu-west-1"]},
    )
    assert linked.outputs["homeStack"].endswith("/us-east-1")
    home_ref = linked.mocks.one("pulumi:pulumi:StackReference")
    assert home_ref.inputs["name"] == f"organization/{PROJECT}/us-east-1"


def test_stacks_that_disagree_on_the_home_region_are_refused() -> None:
    with pytest.raises(HomeStackMismatch, match="every stack must name the same home region"):
        run(own("eu-west-1"), home_exports={"homeRegion": "us-west-2", "linkedRegions": []})


def test_linked_stack_before_the_home_stack_is_deployed_says_deploy_it_first() -> None:
    with pytest.raises(HomeStackMismatch, match="deploy the home stack first"):
        run(own("eu-west-1"), home_exports={})


def test_the_home_stack_references_no_other_stack() -> None:
    assert not run(own("us-east-1")).mocks.of_type("pulumi:pulumi:StackReference")


# -- outputs an operator reaches for -----------------------------------------------------------
def test_home_stack_exports_queue_topic_triage_insights_function_and_log_groups() -> None:
    home = run(own("us-east-1", triagePermissionSets=["SecurityAnalyst"]))
    queue = home.mocks.one("aws:sqs/queue:Queue", "findings-failed-events")
    assert home.outputs["deadLetterQueueUrl"] == queue.outputs["url"]
    assert home.outputs["deadLetterQueueArn"] == queue.outputs["arn"]
    assert home.outputs["alarmTopicArn"] == home.mocks.one("aws:sns/topic:Topic").outputs["arn"]
    assert (
        home.outputs["triageRoleArn"]
        == home.mocks.one("aws:iam/role:Role", "central-hub-triage-role").outputs["arn"]
    )
    assert home.outputs["triagePolicyArn"] == home.mocks.one("aws:iam/policy:Policy").outputs["arn"]
    assert len(home.outputs["insightArns"]) == 3
    assert home.outputs["functionName"] == "falco-us-east-1-falco-findings"
    assert home.outputs["logGroupName"] == "/falco/falco-us-east-1/alerts"
    assert home.outputs["functionLogGroupName"] == "/aws/lambda/falco-us-east-1-falco-findings"


def test_readme_lists_every_stack_output() -> None:
    home = run(own("us-east-1"))
    guide = (Path(PROJECT_DIR) / "README.md").read_text(encoding="utf-8")
    for name in (*home.outputs, "homeStack"):
        assert f"`{name}`" in guide, name
