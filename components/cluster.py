"""Cluster: the EKS cluster Falco watches, its managed AL2023 nodes and EKS Pod Identity.

Hardening, and why:
- Secrets envelope-encrypted with a rotating customer-managed KMS key; the same key encrypts the
  control-plane log group, created here so it has a retention and a key (EKS would otherwise
  create it unencrypted, kept forever).
- All five control-plane log types, `audit` included: Falco sees syscalls on nodes, the audit log
  sees who did what through the API; an investigation needs both.
- Authentication by EKS access entries only (`API`): no aws-auth ConfigMap to drift.
- Private endpoint always on; the public one (needed by whoever runs `pulumi up`) only from
  `public_access_cidrs`.
- Nodes in private subnets, from a launch template that requires IMDSv2 with a hop limit of 1,
  so pods without host networking cannot reach the node role's credentials; workloads get their
  own roles through EKS Pod Identity instead.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_eks as eks

from components.key_policy import (
    account_root_statement,
    cloudwatch_logs_statement,
    customer_managed_key,
)
from handlers.names import eks_cluster_arn

CONTROL_PLANE_LOG_TYPES = ["api", "audit", "authenticator", "controllerManager", "scheduler"]

# The only managed policies a worker node needs: join the cluster, run the VPC CNI, pull images.
NODE_MANAGED_POLICIES = (
    "AmazonEKSWorkerNodePolicy",
    "AmazonEKS_CNI_Policy",
    "AmazonEC2ContainerRegistryReadOnly",
)


@dataclass
class ClusterArgs:
    cluster_name: str
    kubernetes_version: str
    vpc_id: pulumi.Input[str]
    public_subnet_ids: pulumi.Input[list[str]]
    private_subnet_ids: pulumi.Input[list[str]]
    node_instance_types: list[str]
    node_min_size: int
    node_desired_size: int
    node_max_size: int
    admin_role_arns: list[str]
    public_access_cidrs: list[str]
    tags: dict[str, str]
    account_id: str
    partition: str
    region: str
    # Beyond the contract: settings with safe defaults.
    node_ami_type: str = "AL2023_x86_64_STANDARD"
    node_disk_size_gb: int = 50
    endpoint_public_access: bool = True
    log_retention_days: int = 365
    pod_identity_agent_version: str | None = None


cluster_arn = eks_cluster_arn


def cluster_key_policy(
    account_id: str, partition: str, region: str, cluster_name: str
) -> dict[str, Any]:
    """Account root administers the key (AWS's default key policy: the key can never become
    unmanageable, and IAM policies decide who else may use it — EKS gets its grant from the
    identity creating the cluster). CloudWatch Logs may use it for this cluster's control-plane
    log group only."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            account_root_statement(partition, account_id, "AccountRootAdministersTheKey"),
            cloudwatch_logs_statement(
                partition,
                region,
                account_id,
                [f"/aws/eks/{cluster_name}/cluster"],
                "CloudWatchLogsEncryptsTheControlPlaneLogGroup",
            ),
        ],
    }


def node_trust_policy() -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "ec2.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }


def admin_access_entries(
    admin_role_arns: list[str], partition: str
) -> dict[str, eks.AccessEntryArgs]:
    """One cluster-scoped AmazonEKSClusterAdminPolicy entry per principal.

    Keys come from the ARN (account + name), not the list position, so reordering the setting
    replaces nothing.
    """
    policy_arn = f"arn:{partition}:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
    entries: dict[str, eks.AccessEntryArgs] = {}
    for arn in admin_role_arns:
        account = arn.split(":")[4]
        principal = re.sub(r"[^A-Za-z0-9-]", "-", arn.split(":", 5)[5])
        entries[f"admin-{account}-{principal}"] = eks.AccessEntryArgs(
            principal_arn=arn,
            access_policies={
                "cluster-admin": eks.AccessPolicyAssociationArgs(
                    policy_arn=policy_arn,
                    access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"),
                )
            },
        )
    return entries


class Cluster(pulumi.ComponentResource):
    cluster_name: str
    cluster_arn: pulumi.Output[str]
    kubeconfig_json: pulumi.Output[str]
    eks_cluster: eks.Cluster
    node_group: aws.eks.NodeGroup
    pod_identity_agent: aws.eks.Addon
    secrets_key_arn: pulumi.Output[str]
    # What RuntimeSecurity waits for (components/existing_cluster.py exposes the same).
    runtime_dependencies: list[pulumi.Resource]
    enabled_log_types: list[str]

    def __init__(
        self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("falco-securityhub:index:Cluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = {**args.tags, "eks-cluster": args.cluster_name}

        key = customer_managed_key(
            f"{name}-key",
            description=f"EKS secrets and control-plane logs of {args.cluster_name}",
            policy=json.dumps(
                cluster_key_policy(args.account_id, args.partition, args.region, args.cluster_name)
            ),
            tags=tags,
            parent=self,
        )
        # EKS writes control-plane logs to exactly this name; owning it gives it a key and a
        # retention. It must exist before the cluster starts logging.
        control_plane_logs = aws.cloudwatch.LogGroup(
            f"{name}-control-plane-logs",
            name=f"/aws/eks/{args.cluster_name}/cluster",
            kms_key_id=key.arn,
            retention_in_days=args.log_retention_days,
            tags=tags,
            opts=child,
        )

        self.eks_cluster = eks.Cluster(
            f"{name}-eks",
            name=args.cluster_name,
            version=args.kubernetes_version,
            vpc_id=args.vpc_id,
            public_subnet_ids=args.public_subnet_ids,
            private_subnet_ids=args.private_subnet_ids,
            node_associate_public_ip_address=False,
            skip_default_node_group=True,
            # Workload identity is EKS Pod Identity; no IAM OIDC provider to trust.
            create_oidc_provider=False,
            authentication_mode=eks.AuthenticationMode.API,
            access_entries=admin_access_entries(args.admin_role_arns, args.partition),
            encryption_config_key_arn=key.arn,
            enabled_cluster_log_types=CONTROL_PLANE_LOG_TYPES,
            endpoint_private_access=True,
            endpoint_public_access=args.endpoint_public_access,
            public_access_cidrs=args.public_access_cidrs if args.endpoint_public_access else None,
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[control_plane_logs]),
        )

        node_role = aws.iam.Role(
            f"{name}-node-role",
            description=f"EKS worker nodes of {args.cluster_name}",
            assume_role_policy=json.dumps(node_trust_policy()),
            tags=tags,
            opts=child,
        )
        attachments = [
            aws.iam.RolePolicyAttachment(
                f"{name}-node-{policy}",
                role=node_role.name,
                policy_arn=f"arn:{args.partition}:iam::aws:policy/{policy}",
                opts=child,
            )
            for policy in NODE_MANAGED_POLICIES
        ]

        # pulumi-eks's `enable_imd_sv2` sets a hop limit of 2 (pods could then reach IMDS); our own
        # launch template pins 1. Without an image id, EKS still supplies the AL2023 AMI and its
        # bootstrap user data.
        launch_template = aws.ec2.LaunchTemplate(
            f"{name}-node-template",
            description=f"EKS nodes of {args.cluster_name}: IMDSv2 only, hop limit 1",
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                http_endpoint="enabled",
                http_tokens="required",
                http_put_response_hop_limit=1,
                instance_metadata_tags="disabled",
            ),
            block_device_mappings=[
                aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                    device_name="/dev/xvda",
                    ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                        volume_size=args.node_disk_size_gb,
                        volume_type="gp3",
                        # The account's EBS key (aws/ebs): a customer key here would also need
                        # grants for the Auto Scaling service-linked role.
                        encrypted="true",
                        delete_on_termination="true",
                    ),
                )
            ],
            tag_specifications=[
                aws.ec2.LaunchTemplateTagSpecificationArgs(resource_type=kind, tags=tags)
                for kind in ("instance", "volume")
            ],
            update_default_version=True,
            tags=tags,
            opts=child,
        )
        # The EKS managed node group API itself (aws.eks.NodeGroup), not pulumi-eks's
        # ManagedNodeGroup wrapper: every input is a plain value (cluster name, role ARN), so the
        # node group shows in `pulumi preview` as it is, and tests see it under any mocks. With
        # the API authentication mode, EKS creates the node role's access entry itself.
        self.node_group = aws.eks.NodeGroup(
            f"{name}-nodes",
            cluster_name=args.cluster_name,
            node_role_arn=node_role.arn,
            subnet_ids=args.private_subnet_ids,
            ami_type=args.node_ami_type,
            instance_types=args.node_instance_types,
            capacity_type="ON_DEMAND",
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                min_size=args.node_min_size,
                desired_size=args.node_desired_size,
                max_size=args.node_max_size,
            ),
            launch_template=aws.eks.NodeGroupLaunchTemplateArgs(
                id=launch_template.id,
                version=launch_template.latest_version.apply(str),
            ),
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.eks_cluster, *attachments]),
        )

        # The agent is a DaemonSet: the add-on only turns healthy once nodes have joined.
        self.pod_identity_agent = aws.eks.Addon(
            f"{name}-pod-identity-agent",
            cluster_name=args.cluster_name,
            addon_name="eks-pod-identity-agent",
            addon_version=args.pod_identity_agent_version,
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="OVERWRITE",
            tags=tags,
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[self.eks_cluster, self.node_group]
            ),
        )

        self.cluster_name = args.cluster_name
        arn = cluster_arn(args.partition, args.region, args.account_id, args.cluster_name)
        # Derived from the URN so consumers of the ARN still wait for the cluster.
        self.cluster_arn = self.eks_cluster.urn.apply(lambda _: arn)
        self.kubeconfig_json = pulumi.Output.secret(self.eks_cluster.kubeconfig_json)
        self.secrets_key_arn = key.arn
        self.runtime_dependencies = [self.eks_cluster, self.node_group, self.pod_identity_agent]
        self.enabled_log_types = list(CONTROL_PLANE_LOG_TYPES)
        self.register_outputs(
            {
                "cluster_name": self.cluster_name,
                "cluster_arn": self.cluster_arn,
                "kubeconfig_json": self.kubeconfig_json,
                "secrets_key_arn": self.secrets_key_arn,
            }
        )
