"""ExistingCluster: an EKS cluster the stack did not create, looked up by name, to install into.

The other half of components/cluster.py: the same outputs RuntimeSecurity needs (cluster name and
ARN, a kubeconfig, what to wait for), but nothing of the cluster is declared. The stack adds only
what RuntimeSecurity declares (namespace, two Helm releases, Fluent Bit's role and its EKS Pod
Identity association) and, when asked, the eks-pod-identity-agent add-on; `pulumi destroy`
removes exactly those.

The kubeconfig carries no credential: kubectl's exec plugin runs `aws eks get-token` with the
identity running `pulumi up`, so that identity needs API access to the cluster (an access entry,
or the aws-auth ConfigMap on older clusters). The lookup checks what the EKS API can tell before
anything is declared (the cluster exists and is ACTIVE; with API-only authentication, the deployer
has an access entry) and stops with an error that names the cluster, the region and what to check.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

COMPONENT_TYPE = "falco-securityhub:index:ExistingCluster"

# The client.authentication API version `aws eks get-token` answers with (AWS CLI v2).
EXEC_API_VERSION = "client.authentication.k8s.io/v1beta1"


class ExistingClusterError(pulumi.RunError):
    """The named cluster cannot be used; RunError prints without a stack trace."""


@dataclass
class ExistingClusterArgs:
    cluster_name: str
    region: str
    account_id: str
    partition: str
    deployer_arn: str
    """The identity running the program (get_caller_identity().arn): its access is checked."""
    install_pod_identity_agent: bool = False
    pod_identity_agent_version: str | None = None
    aws_profile: str | None = None
    """The AWS provider's profile (aws:profile), handed to `aws eks get-token`."""
    tags: dict[str, str] = field(default_factory=dict)


def exec_kubeconfig(
    cluster_name: str,
    cluster_arn: str,
    region: str,
    endpoint: str,
    certificate_authority: str,
    aws_profile: str | None = None,
) -> dict[str, Any]:
    """A kubeconfig whose user is `aws eks get-token` for this cluster and region.

    Tokens last 15 minutes and are fetched per request, so a long Helm install never holds an
    expired one, and nothing secret is stored in the state.
    """
    exec_config: dict[str, Any] = {
        "apiVersion": EXEC_API_VERSION,
        "command": "aws",
        "args": [
            "eks",
            "get-token",
            "--cluster-name",
            cluster_name,
            "--region",
            region,
            "--output",
            "json",
        ],
        "interactiveMode": "Never",
    }
    if aws_profile:
        exec_config["env"] = [{"name": "AWS_PROFILE", "value": aws_profile}]
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster_arn,
                "cluster": {
                    "server": endpoint,
                    "certificate-authority-data": certificate_authority,
                },
            }
        ],
        "contexts": [
            {"name": cluster_arn, "context": {"cluster": cluster_arn, "user": cluster_arn}}
        ],
        "current-context": cluster_arn,
        "users": [{"name": cluster_arn, "user": {"exec": exec_config}}],
    }


def _where(cluster_name: str, region: str) -> str:
    return f"EKS cluster {cluster_name!r} in {region} (existingClusterName)"


def lookup_failed_message(cluster_name: str, region: str, error: object) -> str:
    return (
        f"{_where(cluster_name, region)} cannot be read: {error}. First check that it exists in "
        f"this stack's region (aws:region) and that the identity running pulumi may call "
        f"eks:DescribeCluster: `aws eks describe-cluster --name {cluster_name} --region {region}`."
    )


def inactive_message(cluster_name: str, region: str, status: str) -> str:
    return (
        f"{_where(cluster_name, region)} is {status}, not ACTIVE. First check "
        f"`aws eks describe-cluster --name {cluster_name} --region {region} --query "
        f"cluster.status` and deploy once it is ACTIVE."
    )


def no_access_entry_message(cluster_name: str, region: str, principal: str, error: object) -> str:
    return (
        f"{_where(cluster_name, region)} authenticates through access entries only, and the "
        f"identity running pulumi ({principal}) has none ({error}). First check `aws eks "
        f"list-access-entries --cluster-name {cluster_name} --region {region}`; a cluster admin "
        f"adds one: `aws eks create-access-entry --cluster-name {cluster_name} --region {region} "
        f"--principal-arn {principal}` and `aws eks associate-access-policy ... --policy-arn "
        f"arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy --access-scope "
        f"type=cluster` (README, 'Monitor an existing cluster')."
    )


class ExistingCluster(pulumi.ComponentResource):
    """A cluster found by name; exposes what RuntimeSecurity needs, declares nothing of it."""

    cluster_name: str
    cluster_arn: pulumi.Output[str]
    kubeconfig_json: pulumi.Output[str]
    runtime_dependencies: list[pulumi.Resource]
    pod_identity_agent: aws.eks.Addon | None
    enabled_log_types: list[str]

    def __init__(
        self, name: str, args: ExistingClusterArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(COMPONENT_TYPE, name, None, opts)
        invoke = pulumi.InvokeOptions(parent=self)
        # Plain (not Output) lookups: a missing or unusable cluster stops the preview before
        # anything is declared, with our message instead of a Helm connection error later.
        try:
            found = aws.eks.get_cluster(name=args.cluster_name, opts=invoke)
        except Exception as error:  # the invoke's own error says AWS's reason; we add where
            raise ExistingClusterError(
                lookup_failed_message(args.cluster_name, args.region, error)
            ) from None
        if found.status != "ACTIVE":
            raise ExistingClusterError(
                inactive_message(args.cluster_name, args.region, found.status)
            )
        self._check_deployer_access(args, found, invoke)
        if not found.vpc_config.endpoint_public_access:
            pulumi.log.warn(
                f"{_where(args.cluster_name, args.region)} has a private API endpoint only: run "
                "`pulumi up` from a network that reaches it (inside the VPC, VPN, peering).",
                resource=self,
            )

        self.pod_identity_agent = None
        if args.install_pod_identity_agent:
            # NONE: if the agent is already there (installed another way), fail instead of
            # taking over its configuration; the cluster's other settings stay as they are.
            self.pod_identity_agent = aws.eks.Addon(
                f"{name}-pod-identity-agent",
                cluster_name=args.cluster_name,
                addon_name="eks-pod-identity-agent",
                addon_version=args.pod_identity_agent_version,
                resolve_conflicts_on_create="NONE",
                resolve_conflicts_on_update="NONE",
                tags=args.tags,
                opts=pulumi.ResourceOptions(parent=self),
            )

        self.cluster_name = args.cluster_name
        self.cluster_arn = pulumi.Output.from_input(found.arn)
        self.kubeconfig_json = pulumi.Output.secret(
            json.dumps(
                exec_kubeconfig(
                    args.cluster_name,
                    found.arn,
                    args.region,
                    found.endpoint,
                    found.certificate_authorities[0].data,
                    args.aws_profile,
                )
            )
        )
        self.runtime_dependencies = [self.pod_identity_agent] if self.pod_identity_agent else []
        # The control-plane logs the cluster sends (audit detections need "audit").
        self.enabled_log_types = list(found.enabled_cluster_log_types or [])
        self.register_outputs(
            {
                "cluster_name": self.cluster_name,
                "cluster_arn": self.cluster_arn,
                "kubeconfig_json": self.kubeconfig_json,
            }
        )

    @staticmethod
    def _check_deployer_access(
        args: ExistingClusterArgs, found: aws.eks.GetClusterResult, invoke: pulumi.InvokeOptions
    ) -> None:
        """With API-only authentication, an access entry is the only way in: check it exists.

        In the other modes the aws-auth ConfigMap may grant access, which the EKS API cannot see.
        """
        modes = [c.authentication_mode for c in found.access_configs or []]
        if modes != ["API"]:
            return
        # An assumed-role session's ARN is not what access entries name: its role is.
        principal = aws.iam.get_session_context(arn=args.deployer_arn, opts=invoke).issuer_arn
        try:
            aws.eks.get_access_entry(
                cluster_name=args.cluster_name, principal_arn=principal, opts=invoke
            )
        except Exception as error:
            raise ExistingClusterError(
                no_access_entry_message(args.cluster_name, args.region, principal, error)
            ) from None
