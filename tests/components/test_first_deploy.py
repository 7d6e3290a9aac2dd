"""A first deploy that works in any account (issue 8): zones EKS accepts, Identity Center triage.

The subscription-filter ordering and the alarm topic's own key are tested with the rest of the
pipeline (tests/components/test_findings_pipeline.py); the stack outputs in
tests/program/test_deploy_modes.py.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pytest
from conftest import ACCOUNT_ID, RecordingMocks

from components import central_hub
from components.network import EKS_UNSUPPORTED_ZONE_IDS, Network, NetworkArgs
from components.regional_hub import RegionalHub, RegionalHubArgs

SUBNET = "aws:ec2/subnet:Subnet"
ROLE = "aws:iam/role:Role"
POLICY = "aws:iam/policy:Policy"
ANALYST = f"arn:aws:iam::{ACCOUNT_ID}:user/analyst"


# -- availability zones ----------------------------------------------------------------------
def declare_network(mocks: RecordingMocks, zone_count: int = 2) -> None:
    @pulumi.runtime.test
    def run() -> pulumi.Output[Any]:
        network = Network(
            "net",
            NetworkArgs(
                cluster_name="falco-us-east-1",
                cidr_block="10.0.0.0/16",
                availability_zone_count=zone_count,
                tags={},
                account_id=ACCOUNT_ID,
                partition="aws",
                region="us-east-1",
            ),
        )
        return network.private_subnet_ids

    run()


def test_zone_ids_eks_refuses_are_skipped_whatever_name_they_have(
    pulumi_mocks: RecordingMocks,
) -> None:
    # In this account us-east-1a is use1-az3, where EKS refuses cluster subnets.
    pulumi_mocks.availability_zones = {
        "us-east-1a": "use1-az3",
        "us-east-1b": "use1-az4",
        "us-east-1c": "use1-az6",
    }
    declare_network(pulumi_mocks)
    zones = {s.inputs["availabilityZone"] for s in pulumi_mocks.of_type(SUBNET)}
    assert zones == {"us-east-1b", "us-east-1c"}
    [(_, lookup)] = [c for c in pulumi_mocks.calls if c[0].endswith("getAvailabilityZones")]
    assert set(lookup["excludeZoneIds"]) == {"use1-az3", "usw1-az2", "cac1-az3"}


def test_too_few_accepted_zones_is_a_clear_error(pulumi_mocks: RecordingMocks) -> None:
    pulumi_mocks.availability_zones = {"us-east-1a": "use1-az3", "us-east-1b": "use1-az4"}
    with pytest.raises(ValueError, match="only 1 available zones EKS accepts: us-east-1b"):
        declare_network(pulumi_mocks)


def test_the_refused_zone_ids_are_the_documented_ones() -> None:
    assert set(EKS_UNSUPPORTED_ZONE_IDS) == {"use1-az3", "usw1-az2", "cac1-az3"}


# -- triage with IAM Identity Center ---------------------------------------------------------
def declare_central(mocks: RecordingMocks, **overrides: Any) -> central_hub.CentralHub:
    declared: list[central_hub.CentralHub] = []

    @pulumi.runtime.test
    def run() -> pulumi.Output[Any]:
        regional = RegionalHub("hub", RegionalHubArgs(enable_default_standards=False))
        values: dict[str, Any] = {
            "home_region": "us-east-1",
            "linked_regions": (),
            "account_id": ACCOUNT_ID,
            "partition": "aws",
            "triage_principal_arns": (),
            "triage_permission_sets": (),
            "member_accounts": (),
            "delegated_admin_account_id": None,
            "hub": regional.account,
        }
        values.update(overrides)
        hub = central_hub.CentralHub("central", central_hub.CentralHubArgs(**values))
        declared.append(hub)
        return pulumi.Output.all(hub.triage_role_arn, hub.triage_policy_arn)

    run()
    return declared[0]


def trust_statements(mocks: RecordingMocks) -> dict[str, dict[str, Any]]:
    role = mocks.one(ROLE)
    return {s["Sid"]: s for s in role.policy("assumeRolePolicy")["Statement"]}


def test_permission_set_roles_may_assume_the_triage_role_without_an_mfa_key(
    pulumi_mocks: RecordingMocks,
) -> None:
    declare_central(pulumi_mocks, triage_permission_sets=("SecurityAnalyst",))
    trusted = trust_statements(pulumi_mocks)
    assert set(trusted) == {"SecurityTeamThroughIdentityCenter"}
    statement = trusted["SecurityTeamThroughIdentityCenter"]
    assert statement["Principal"] == {"AWS": f"arn:aws:iam::{ACCOUNT_ID}:root"}
    assert statement["Action"] == "sts:AssumeRole"
    # Identity Center sessions never carry aws:MultiFactorAuthPresent (MFA is at sign-in).
    assert set(statement["Condition"]) == {"ArnLike"}
    [pattern] = statement["Condition"]["ArnLike"]["aws:PrincipalArn"]
    assert pattern == (
        f"arn:aws:iam::{ACCOUNT_ID}:role/aws-reserved/sso.amazonaws.com/"
        "*AWSReservedSSO_SecurityAnalyst_*"
    )


@pytest.mark.parametrize(
    ("role_arn", "matches"),
    [
        # Identity Center outside us-east-1: the region is in the path.
        ("role/aws-reserved/sso.amazonaws.com/eu-west-1/AWSReservedSSO_SecurityAnalyst_0a1b", True),
        # Identity Center in us-east-1: no region in the path.
        ("role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_SecurityAnalyst_0a1b", True),
        ("role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_SecurityAnalystAdmin_0a1b", False),
        ("role/AWSReservedSSO_SecurityAnalyst_0a1b", False),
    ],
)
def test_the_pattern_matches_the_roles_identity_center_creates(
    role_arn: str, matches: bool
) -> None:
    import fnmatch

    pattern = central_hub.identity_center_role_pattern("aws", ACCOUNT_ID, "SecurityAnalyst")
    # ArnLike: `*` matches any characters, `/` included, within the resource part.
    assert fnmatch.fnmatchcase(f"arn:aws:iam::{ACCOUNT_ID}:{role_arn}", pattern) is matches


def test_iam_principals_and_permission_sets_both_trusted_each_their_way(
    pulumi_mocks: RecordingMocks,
) -> None:
    declare_central(
        pulumi_mocks, triage_principal_arns=(ANALYST,), triage_permission_sets=("SecOps",)
    )
    trusted = trust_statements(pulumi_mocks)
    assert trusted["SecurityTeamWithMfa"]["Principal"] == {"AWS": [ANALYST]}
    assert trusted["SecurityTeamWithMfa"]["Condition"]["Bool"] == {
        "aws:MultiFactorAuthPresent": "true"
    }
    assert "SecurityTeamThroughIdentityCenter" in trusted


def test_triage_policy_is_customer_managed_under_a_fixed_name_for_permission_sets(
    pulumi_mocks: RecordingMocks,
) -> None:
    declare_central(pulumi_mocks)
    policy = pulumi_mocks.one(POLICY)
    # A permission set references a customer-managed policy by name: it must not be generated.
    assert policy.inputs["name"] == "falco-findings-triage"
    document = json.loads(policy.inputs["policy"])
    allow = [s for s in document["Statement"] if s["Effect"] == "Allow"]
    assert [s["Action"] for s in allow] == ["securityhub:BatchUpdateFindings"]
    # Every region linked (no list): this account's hub in any region, nobody else's.
    assert allow[0]["Resource"] == [f"arn:aws:securityhub:*:{ACCOUNT_ID}:hub/default"]
    assert pulumi_mocks.of_type(ROLE) == []
