"""Cluster: what a reviewer checks on an EKS cluster that hosts runtime security monitoring.

pulumi-eks components are remote: the mocks see each one once, with the inputs we pass (its AWS
children never exist here), so these tests read those inputs.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pytest
from conftest import ACCOUNT_ID, RecordedResource, RecordingMocks
from program_runner import record_dependencies

from components.cluster import (
    CONTROL_PLANE_LOG_TYPES,
    Cluster,
    ClusterArgs,
    admin_access_entries,
    cluster_key_policy,
)

NAME = "falco-us-east-1"
ADMINS = [
    "arn:aws:iam::123456789012:role/platform-admin",
    "arn:aws:iam::210987654321:role/team/security-oncall",
]
EKS = "eks:index:Cluster"
NODES = "aws:eks/nodeGroup:NodeGroup"
ADMIN_POLICY = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"


@dataclass
class Declared:
    mocks: RecordingMocks
    outputs: dict[str, Any] = field(default_factory=dict)
    secrets: set[str] = field(default_factory=set)
    dependencies: dict[str, set[str]] = field(default_factory=dict)

    @property
    def eks(self) -> RecordedResource:
        return self.mocks.one(EKS)

    @property
    def nodes(self) -> RecordedResource:
        return self.mocks.one(NODES)


def args(**overrides: Any) -> ClusterArgs:
    values: dict[str, Any] = {
        "cluster_name": NAME,
        "kubernetes_version": "1.35",
        "vpc_id": "vpc-1",
        "public_subnet_ids": ["subnet-pub-a", "subnet-pub-b"],
        "private_subnet_ids": ["subnet-priv-a", "subnet-priv-b"],
        "node_instance_types": ["m6i.large"],
        "node_min_size": 2,
        "node_desired_size": 3,
        "node_max_size": 5,
        "admin_role_arns": ADMINS,
        "public_access_cidrs": ["203.0.113.0/24"],
        "tags": {"Project": "falco-securityhub"},
        "account_id": ACCOUNT_ID,
        "partition": "aws",
        "region": "us-east-1",
    }
    values.update(overrides)
    return ClusterArgs(**values)


def declare(mocks: RecordingMocks, **overrides: Any) -> Declared:
    declared = Declared(mocks=mocks, dependencies=record_dependencies())

    async def collect(cluster: Cluster) -> None:
        for key in ("cluster_arn", "kubeconfig_json"):
            output = getattr(cluster, key)
            declared.outputs[key] = await output.future()
            if await output.is_secret():
                declared.secrets.add(key)
        declared.outputs["cluster_name"] = cluster.cluster_name

    @pulumi.runtime.test
    def run() -> Any:
        return asyncio.ensure_future(collect(Cluster("cluster", args(**overrides))))

    run()
    return declared


def test_cluster_has_an_explicit_name_and_pinned_version(pulumi_mocks: RecordingMocks) -> None:
    declared = declare(pulumi_mocks)
    assert declared.eks.inputs["name"] == NAME
    assert declared.eks.inputs["version"] == "1.35"
    assert declared.eks.inputs["skipDefaultNodeGroup"] is True
    assert declared.outputs["cluster_name"] == NAME
    assert declared.outputs["cluster_arn"] == f"arn:aws:eks:us-east-1:{ACCOUNT_ID}:cluster/{NAME}"


def test_all_five_control_plane_log_types_are_on(pulumi_mocks: RecordingMocks) -> None:
    declared = declare(pulumi_mocks)
    assert sorted(declared.eks.inputs["enabledClusterLogTypes"]) == sorted(
        ["api", "audit", "authenticator", "controllerManager", "scheduler"]
    )
    assert declared.eks.inputs["enabledClusterLogTypes"] == CONTROL_PLANE_LOG_TYPES


def test_control_plane_logs_land_in_an_encrypted_group_created_first(
    pulumi_mocks: RecordingMocks,
) -> None:
    declared = declare(pulumi_mocks, log_retention_days=90)
    group = pulumi_mocks.one("aws:cloudwatch/logGroup:LogGroup")
    key = pulumi_mocks.one("aws:kms/key:Key")
    assert group.inputs["name"] == f"/aws/eks/{NAME}/cluster"
    assert group.inputs["kmsKeyId"] == key.outputs["arn"]
    assert group.inputs["retentionInDays"] == 90
    assert group.name in declared.dependencies["cluster-eks"]


def test_secrets_are_encrypted_with_a_rotating_key_the_account_keeps(
    pulumi_mocks: RecordingMocks,
) -> None:
    declared = declare(pulumi_mocks)
    key = pulumi_mocks.one("aws:kms/key:Key")
    assert declared.eks.inputs["encryptionConfigKeyArn"] == key.outputs["arn"]
    assert key.inputs["enableKeyRotation"] is True
    statements = key.policy()["Statement"]
    root = next(s for s in statements if s["Sid"] == "AccountRootAdministersTheKey")
    assert root["Principal"] == {"AWS": f"arn:aws:iam::{ACCOUNT_ID}:root"}


def test_key_lets_cloudwatch_logs_use_it_for_the_control_plane_group_only() -> None:
    policy = cluster_key_policy(ACCOUNT_ID, "aws", "eu-west-1", "falco-eu-west-1")
    logs = next(s for s in policy["Statement"] if "Service" in s["Principal"])
    assert logs["Principal"] == {"Service": "logs.eu-west-1.amazonaws.com"}
    assert logs["Condition"] == {
        "ArnEquals": {
            "kms:EncryptionContext:aws:logs:arn": (
                f"arn:aws:logs:eu-west-1:{ACCOUNT_ID}:log-group:/aws/eks/falco-eu-west-1/cluster"
            )
        }
    }


def test_access_entries_only_with_cluster_admin_for_each_admin_role(
    pulumi_mocks: RecordingMocks,
) -> None:
    declared = declare(pulumi_mocks)
    assert declared.eks.inputs["authenticationMode"] == "API"
    entries = declared.eks.inputs["accessEntries"]
    assert sorted(e["principalArn"] for e in entries.values()) == sorted(ADMINS)
    for entry in entries.values():
        (association,) = entry["accessPolicies"].values()
        assert association["policyArn"] == ADMIN_POLICY
        assert association["accessScope"] == {"type": "cluster"}


def test_access_entry_keys_do_not_depend_on_list_order() -> None:
    assert set(admin_access_entries(ADMINS, "aws")) == set(
        admin_access_entries(list(reversed(ADMINS)), "aws")
    )
    assert len(admin_access_entries(ADMINS, "aws")) == 2


def test_no_admin_roles_means_no_access_entries(pulumi_mocks: RecordingMocks) -> None:
    declared = declare(pulumi_mocks, admin_role_arns=[])
    assert not declared.eks.inputs.get("accessEntries")


def test_private_endpoint_on_public_endpoint_only_from_the_given_cidrs(
    pulumi_mocks: RecordingMocks,
) -> None:
    declared = declare(pulumi_mocks, public_access_cidrs=["203.0.113.0/24", "198.51.100.7/32"])
    assert declared.eks.inputs["endpointPrivateAccess"] is True
    assert declared.eks.inputs["endpointPublicAccess"] is True
    assert declared.eks.inputs["publicAccessCidrs"] == ["203.0.113.0/24", "198.51.100.7/32"]


def test_private_only_endpoint(pulumi_mocks: RecordingMocks) -> None:
    declared = declare(pulumi_mocks, endpoint_public_access=False, public_access_cidrs=[])
    assert declared.eks.inputs["endpointPrivateAccess"] is True
    assert declared.eks.inputs["endpointPublicAccess"] is False
    assert "publicAccessCidrs" not in declared.eks.inputs


def test_nodes_run_al2023_in_private_subnets_with_the_configured_sizes(
    pulumi_mocks: RecordingMocks,
) -> None:
    declared = declare(pulumi_mocks)
    nodes = declared.nodes.inputs
    assert nodes["subnetIds"] == ["subnet-priv-a", "subnet-priv-b"]
    assert nodes["amiType"] == "AL2023_x86_64_STANDARD"
    assert nodes["instanceTypes"] == ["m6i.large"]
    assert nodes["scalingConfig"] == {"minSize": 2, "desiredSize": 3, "maxSize": 5}
    assert nodes["clusterName"] == NAME
    assert declared.eks.inputs["nodeAssociatePublicIpAddress"] is False


def test_arm_nodes(pulumi_mocks: RecordingMocks) -> None:
    declared = declare(
        pulumi_mocks, node_ami_type="AL2023_ARM_64_STANDARD", node_instance_types=["m7g.large"]
    )
    assert declared.nodes.inputs["amiType"] == "AL2023_ARM_64_STANDARD"
    assert declared.nodes.inputs["instanceTypes"] == ["m7g.large"]


def test_nodes_require_imdsv2_with_hop_limit_1(pulumi_mocks: RecordingMocks) -> None:
    declared = declare(pulumi_mocks, node_disk_size_gb=80)
    template = pulumi_mocks.one("aws:ec2/launchTemplate:LaunchTemplate")
    metadata = template.inputs["metadataOptions"]
    assert metadata["httpTokens"] == "required"
    assert metadata["httpPutResponseHopLimit"] == 1
    assert metadata["httpEndpoint"] == "enabled"
    assert declared.nodes.inputs["launchTemplate"]["id"] == f"{template.name}-id"
    # pulumi-eks's own IMDSv2 switch would set hop limit 2 and conflicts with a launch template.
    assert "enableImdSv2" not in declared.nodes.inputs
    assert "imageId" not in template.inputs, "a custom AMI would drop EKS's AL2023 bootstrap"
    (root,) = template.inputs["blockDeviceMappings"]
    assert root["ebs"]["encrypted"] == "true"
    assert root["ebs"]["volumeSize"] == 80


def test_node_role_has_only_the_standard_worker_policies(pulumi_mocks: RecordingMocks) -> None:
    declared = declare(pulumi_mocks)
    role = pulumi_mocks.one("aws:iam/role:Role")
    trust = role.policy("assumeRolePolicy")["Statement"]
    assert [s["Principal"] for s in trust] == [{"Service": "ec2.amazonaws.com"}]
    attached = sorted(
        a.inputs["policyArn"]
        for a in pulumi_mocks.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
    )
    assert attached == [
        "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly",
        "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy",
        "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy",
    ]
    assert not pulumi_mocks.of_type("aws:iam/rolePolicy:RolePolicy")
    assert declared.nodes.inputs["nodeRoleArn"] == role.outputs["arn"]
    # The node group waits for its policies: nodes without them never join.
    assert {f"cluster-node-{p}" for p in ("AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy")} <= (
        declared.dependencies["cluster-nodes"]
    )


def test_pod_identity_agent_addon_waits_for_cluster_and_nodes(pulumi_mocks: RecordingMocks) -> None:
    declared = declare(pulumi_mocks, pod_identity_agent_version="v1.3.8-eksbuild.2")
    addon = pulumi_mocks.one("aws:eks/addon:Addon")
    assert addon.inputs["addonName"] == "eks-pod-identity-agent"
    assert addon.inputs["clusterName"] == NAME
    assert addon.inputs["addonVersion"] == "v1.3.8-eksbuild.2"
    assert {"cluster-eks", "cluster-nodes"} <= declared.dependencies[addon.name]


def test_no_oidc_provider_workloads_use_pod_identity(pulumi_mocks: RecordingMocks) -> None:
    declared = declare(pulumi_mocks)
    assert declared.eks.inputs["createOidcProvider"] is False


def test_kubeconfig_is_secret(pulumi_mocks: RecordingMocks) -> None:
    declared = declare(pulumi_mocks)
    assert "kubeconfig_json" in declared.secrets
    assert NAME in declared.outputs["kubeconfig_json"]


@pytest.mark.parametrize("partition", ["aws", "aws-us-gov"])
def test_partition_flows_into_every_arn(pulumi_mocks: RecordingMocks, partition: str) -> None:
    declared = declare(pulumi_mocks, partition=partition, admin_role_arns=[])
    assert declared.outputs["cluster_arn"].startswith(f"arn:{partition}:eks:")
    for attachment in pulumi_mocks.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment"):
        assert attachment.inputs["policyArn"].startswith(f"arn:{partition}:iam::aws:policy/")
