"""CentralHub: what only the Security Hub home (aggregation) region has.

- A finding aggregator that links every region (ALL_REGIONS, regions enabled later included), or
  exactly the configured ones when `linkedRegions` lists them, so the home region's console,
  insights and APIs see every region's Falco findings (updates replicate both ways).
- Three insights over Falco findings: by cluster, by rule, by severity.
- Triage for the security team: a customer-managed policy (BatchUpdateFindings for workflow
  status and notes) that an IAM Identity Center permission set can attach by name, and a role with
  it plus read-only Security Hub, assumable by the configured IAM principals with MFA and by the
  configured permission sets' roles (Identity Center enforces MFA at sign-in).
- Optionally, Security Hub member invitations and an Organizations delegated administrator.

Policy documents are built by the pure functions below so tests read them back.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from components.settings import MemberAccount
from handlers.names import GENERATOR_PREFIX, PRODUCT_NAME

COMPONENT_TYPE = "falco-securityhub:index:CentralHub"

# What handlers/findings.py writes into every Falco finding (a test checks they agree):
# GeneratorId = "falco/rule/<slug of the rule name>", ProductName = PRODUCT_NAME, and the EKS
# cluster as a resource of type AwsEksCluster whose Id is the cluster ARN.
FALCO_GENERATOR_PREFIX = GENERATOR_PREFIX
FALCO_PRODUCT_NAME = PRODUCT_NAME
CLUSTER_RESOURCE_TYPE = "AwsEksCluster"

TRIAGE_ROLE_NAME = "falco-findings-triage"
# A permission set attaches a customer-managed policy by name (and path), the same in every
# account it is provisioned to: the name is fixed for that reason.
TRIAGE_POLICY_NAME = "falco-findings-triage"
# One hour: long enough for a triage session, short enough that a left-open shell expires soon.
TRIAGE_MAX_SESSION_SECONDS = 3600
# The MFA sign-in behind the assume-role call must be at most this old.
TRIAGE_MAX_MFA_AGE_SECONDS = 3600
READ_ONLY_POLICY_NAME = "AWSSecurityHubReadOnlyAccess"

# Finding fields an analyst may not change with BatchUpdateFindings through the triage role:
# severity, criticality, confidence and types are the provider's judgment (the mapping in
# handlers/findings.py) and are changed there, in review. Workflow.Status, Note,
# VerificationState, RelatedFindings and UserDefinedFields stay open for triage.
PROVIDER_JUDGMENT_FIELDS = (
    "Severity.Label",
    "Severity.Normalized",
    "Severity.Product",
    "Criticality",
    "Confidence",
    "Types",
)


@dataclass
class CentralHubArgs:
    home_region: str
    linked_regions: Sequence[str]
    account_id: str
    partition: str
    triage_principal_arns: Sequence[str]
    triage_permission_sets: Sequence[str]
    member_accounts: Sequence[MemberAccount]
    delegated_admin_account_id: str | None
    hub: pulumi.Resource  # the home region's RegionalHub.account: everything here needs it
    tags: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Pure builders
# --------------------------------------------------------------------------------------------
def aggregated_regions(home_region: str, linked_regions: Sequence[str]) -> list[str]:
    """The regions the aggregator links when restricted (empty: all regions, see
    `linking_mode`)."""
    return sorted(linked_regions)


def hub_arn(partition: str, region: str, account_id: str) -> str:
    return f"arn:{partition}:securityhub:{region}:{account_id}:hub/default"


def linking_mode(linked_regions: Sequence[str]) -> str:
    """ALL_REGIONS unless the user restricted aggregation to a list (SPECIFIED_REGIONS).

    ALL_REGIONS by default so that adding a region is adding its stack file: the aggregator links
    it without an edit to the home stack, and a region no stack deploys to only adds findings
    that region produces on its own.
    """
    return "SPECIFIED_REGIONS" if linked_regions else "ALL_REGIONS"


def identity_center_role_pattern(partition: str, account_id: str, permission_set: str) -> str:
    """The ARN of the role Identity Center provisions for a permission set in this account.

    `arn:aws:iam::<acct>:role/aws-reserved/sso.amazonaws.com/[<region>/]AWSReservedSSO_<set>_<id>`:
    the region is in the path unless Identity Center lives in us-east-1, so `*` covers both; the
    trailing `_*` is the random suffix. ArnLike matches `*` across `/` within the resource part.
    """
    return (
        f"arn:{partition}:iam::{account_id}:role/aws-reserved/sso.amazonaws.com/"
        f"*AWSReservedSSO_{permission_set}_*"
    )


def triage_trust_policy(
    principal_arns: Sequence[str],
    permission_sets: Sequence[str] = (),
    *,
    partition: str = "aws",
    account_id: str = "",
) -> dict[str, Any]:
    """Who may assume the triage role: IAM principals with MFA, and Identity Center users.

    IAM principals: `Bool` (not `BoolIfExists`), so a request without MFA context, such as
    long-term access keys used without a session token, has no `aws:MultiFactorAuthPresent` key
    and is refused; the MFA sign-in must be at most an hour old.
    Identity Center sessions carry no `aws:MultiFactorAuthPresent` (MFA is enforced when the user
    signs in to the access portal), so the permission sets' roles are trusted by name instead:
    the account is the principal and `aws:PrincipalArn` must match one of their role ARNs.
    """
    if not principal_arns and not permission_sets:
        raise ValueError(
            "a triage role needs at least one principal or permission set allowed to assume it"
        )
    trusted: list[dict[str, Any]] = []
    if principal_arns:
        trusted.append(
            {
                "Sid": "SecurityTeamWithMfa",
                "Effect": "Allow",
                "Principal": {"AWS": sorted(principal_arns)},
                "Action": "sts:AssumeRole",
                "Condition": {
                    "Bool": {"aws:MultiFactorAuthPresent": "true"},
                    "NumericLessThan": {"aws:MultiFactorAuthAge": str(TRIAGE_MAX_MFA_AGE_SECONDS)},
                },
            }
        )
    if permission_sets:
        trusted.append(
            {
                "Sid": "SecurityTeamThroughIdentityCenter",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:{partition}:iam::{account_id}:root"},
                "Action": "sts:AssumeRole",
                "Condition": {
                    "ArnLike": {
                        "aws:PrincipalArn": [
                            identity_center_role_pattern(partition, account_id, name)
                            for name in sorted(permission_sets)
                        ]
                    }
                },
            }
        )
    return {"Version": "2012-10-17", "Statement": trusted}


def triage_policy(partition: str, account_id: str, regions: Sequence[str]) -> dict[str, Any]:
    """BatchUpdateFindings on this account's hubs, except the provider-judgment fields.

    The Service Authorization Reference lists `hub` as BatchUpdateFindings' resource type, so the
    grant names the hub of every region the team triages in (home and linked: updates replicate
    through the aggregator either way) instead of `*`; with no list (every region linked), this
    account's hub in any region. Field restrictions use the documented
    `securityhub:ASFFSyntaxPath/<field>` condition keys; a `Null` condition matches one key, so
    each field gets its own Deny (several keys in one `Null` block would all have to be present).
    """
    hubs = [hub_arn(partition, region, account_id) for region in sorted(regions)] or [
        hub_arn(partition, "*", account_id)
    ]
    denies = [
        {
            "Sid": "KeepProviderJudgment" + field_name.replace(".", ""),
            "Effect": "Deny",
            "Action": "securityhub:BatchUpdateFindings",
            "Resource": hubs,
            "Condition": {"Null": {f"securityhub:ASFFSyntaxPath/{field_name}": "false"}},
        }
        for field_name in PROVIDER_JUDGMENT_FIELDS
    ]
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "TriageFindings",
                "Effect": "Allow",
                "Action": "securityhub:BatchUpdateFindings",
                "Resource": hubs,
            },
            *denies,
        ],
    }


@dataclass(frozen=True)
class InsightSpec:
    role: str
    name: str
    group_by: str
    only_cluster_resources: bool = False


INSIGHTS = (
    # Grouped by resource id, restricted to findings that name an EKS cluster: the cluster rows
    # are the `arn:...:eks:<region>:<account>:cluster/<name>` ids. ASFF has no cluster-name field
    # to group by; Security Hub may also list the findings' other resources (containers, nodes),
    # so read the rows whose id is a cluster ARN.
    InsightSpec("by-cluster", "Falco findings by EKS cluster", "ResourceId", True),
    # GeneratorId is falco/rule/<slug of the rule name>: one row per Falco rule.
    InsightSpec("by-rule", "Falco findings by rule", "GeneratorId"),
    InsightSpec("by-severity", "Falco findings by severity", "SeverityLabel"),
)


def insight_filters(only_cluster_resources: bool) -> aws.securityhub.InsightFiltersArgs:
    """Open Falco findings: active, not yet resolved or suppressed by triage."""
    sh = aws.securityhub
    return sh.InsightFiltersArgs(
        generator_ids=[
            sh.InsightFiltersGeneratorIdArgs(comparison="PREFIX", value=FALCO_GENERATOR_PREFIX)
        ],
        product_names=[
            sh.InsightFiltersProductNameArgs(comparison="EQUALS", value=FALCO_PRODUCT_NAME)
        ],
        record_states=[sh.InsightFiltersRecordStateArgs(comparison="EQUALS", value="ACTIVE")],
        # Several EQUALS values of one field are OR-ed.
        workflow_statuses=[
            sh.InsightFiltersWorkflowStatusArgs(comparison="EQUALS", value=status)
            for status in ("NEW", "NOTIFIED")
        ],
        resource_types=(
            [sh.InsightFiltersResourceTypeArgs(comparison="EQUALS", value=CLUSTER_RESOURCE_TYPE)]
            if only_cluster_resources
            else None
        ),
    )


class CentralHub(pulumi.ComponentResource):
    """Aggregation, insights and triage access in the Security Hub home region."""

    aggregator_arn: pulumi.Output[str]
    # None when no triage principals are configured: no role is created that nobody can assume.
    triage_role_arn: pulumi.Output[str | None]
    triage_policy_arn: pulumi.Output[str]
    insight_arns: pulumi.Output[list[str]]

    def __init__(
        self, name: str, args: CentralHubArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(COMPONENT_TYPE, name, None, opts)
        linked = aggregated_regions(args.home_region, args.linked_regions)
        after_hub = pulumi.ResourceOptions(parent=self, depends_on=[args.hub])

        # -- aggregation --------------------------------------------------------------------
        # All regions unless restricted: a region added later (a new stack file) is aggregated
        # without an edit here or in another stack.
        self.aggregator = aws.securityhub.FindingAggregator(
            f"{name}-aggregator",
            linking_mode=linking_mode(linked),
            specified_regions=linked or None,
            opts=after_hub,
        )

        # -- insights -----------------------------------------------------------------------
        self.insights = [
            aws.securityhub.Insight(
                f"{name}-insight-{spec.role}",
                name=spec.name,
                group_by_attribute=spec.group_by,
                filters=insight_filters(spec.only_cluster_resources),
                opts=after_hub,
            )
            for spec in INSIGHTS
        ]

        # -- triage -------------------------------------------------------------------------
        # The policy exists even without a role: a permission set can attach it by name.
        regions = [args.home_region, *linked] if linked else []
        self.triage_policy = aws.iam.Policy(
            f"{name}-triage-policy",
            name=TRIAGE_POLICY_NAME,
            description="Falco findings triage: set workflow status and notes on Security Hub "
            "findings, never their severity or types.",
            policy=json.dumps(
                triage_policy(args.partition, args.account_id, regions), sort_keys=True
            ),
            tags=dict(args.tags),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.triage_role: aws.iam.Role | None = None
        if args.triage_principal_arns or args.triage_permission_sets:
            self.triage_role = self._declare_triage_role(name, args, self.triage_policy)

        # -- accounts -----------------------------------------------------------------------
        self.members = [
            aws.securityhub.Member(
                f"{name}-member-{member.account_id}",
                account_id=member.account_id,
                email=member.email,
                # Invitations are for accounts outside the organization; inside one, prefer the
                # delegated administrator (AWS's recommendation).
                invite=True,
                opts=after_hub,
            )
            for member in args.member_accounts
        ]
        self.delegated_admin: aws.securityhub.OrganizationAdminAccount | None = None
        if args.delegated_admin_account_id:
            # Must be deployed from the organization's management account.
            self.delegated_admin = aws.securityhub.OrganizationAdminAccount(
                f"{name}-delegated-admin",
                admin_account_id=args.delegated_admin_account_id,
                opts=after_hub,
            )

        self.aggregator_arn = self.aggregator.arn
        self.triage_role_arn = (
            self.triage_role.arn if self.triage_role else pulumi.Output.from_input(None)
        )
        self.triage_policy_arn = self.triage_policy.arn
        self.insight_arns = pulumi.Output.all(*[insight.arn for insight in self.insights])
        self.register_outputs(
            {
                "aggregator_arn": self.aggregator_arn,
                "triage_role_arn": self.triage_role_arn,
                "triage_policy_arn": self.triage_policy_arn,
                "insight_arns": self.insight_arns,
            }
        )

    def _declare_triage_role(
        self, name: str, args: CentralHubArgs, policy: aws.iam.Policy
    ) -> aws.iam.Role:
        role = aws.iam.Role(
            f"{name}-triage-role",
            name=TRIAGE_ROLE_NAME,
            description="Security team: read Security Hub, set workflow status and notes on "
            "findings. MFA required (IAM) or enforced at sign-in (Identity Center).",
            assume_role_policy=json.dumps(
                triage_trust_policy(
                    args.triage_principal_arns,
                    args.triage_permission_sets,
                    partition=args.partition,
                    account_id=args.account_id,
                ),
                sort_keys=True,
            ),
            max_session_duration=TRIAGE_MAX_SESSION_SECONDS,
            tags=dict(args.tags),
            opts=pulumi.ResourceOptions(parent=self),
        )
        aws.iam.RolePolicyAttachment(
            f"{name}-triage-read-only",
            role=role.name,
            policy_arn=f"arn:{args.partition}:iam::aws:policy/{READ_ONLY_POLICY_NAME}",
            opts=pulumi.ResourceOptions(parent=self),
        )
        aws.iam.RolePolicyAttachment(
            f"{name}-triage-update-findings",
            role=role.name,
            policy_arn=policy.arn,
            opts=pulumi.ResourceOptions(parent=self),
        )
        return role
