"""RegionalHub and CentralHub under Pulumi mocks.

Ordering and resource options (`depends_on`, `retain_on_delete`) are read from the engine's
RegisterResource requests, which the mock monitor receives but `new_resource` does not show:
`declare` wraps the monitor to record them (see tests/test_component_findings_pipeline.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pulumi
import pytest
from conftest import ACCOUNT_ID, RecordedResource, RecordingMocks, configure_pulumi_mocks
from pulumi.runtime import settings as pulumi_settings

from components import central_hub
from components.central_hub import CentralHub, CentralHubArgs
from components.regional_hub import RegionalHub, RegionalHubArgs
from components.settings import MemberAccount

ACCOUNT = "aws:securityhub/account:Account"
AGGREGATOR = "aws:securityhub/findingAggregator:FindingAggregator"
INSIGHT = "aws:securityhub/insight:Insight"
MEMBER = "aws:securityhub/member:Member"
ADMIN = "aws:securityhub/organizationAdminAccount:OrganizationAdminAccount"
ROLE = "aws:iam/role:Role"
POLICY = "aws:iam/policy:Policy"
ATTACHMENT = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"

ANALYST = f"arn:aws:iam::{ACCOUNT_ID}:user/analyst"
ONCALL = f"arn:aws:iam::{ACCOUNT_ID}:role/secops-oncall"


@dataclass
class Declared:
    mocks: RecordingMocks
    dependencies: dict[str, set[str]] = field(default_factory=dict)  # name -> names it waits for
    retained: set[str] = field(default_factory=set)  # names declared with retain_on_delete
    outputs: dict[str, Any] = field(default_factory=dict)

    def one(self, typ: str, name: str | None = None) -> RecordedResource:
        return self.mocks.one(typ, name)

    def of_type(self, typ: str) -> list[RecordedResource]:
        return self.mocks.of_type(typ)


def declare(mocks: RecordingMocks, build: Callable[[], dict[str, pulumi.Output[Any]]]) -> Declared:
    declared = Declared(mocks=mocks)
    monitor = pulumi_settings.get_monitor()
    register = monitor.RegisterResource

    def recording_register(request: Any) -> Any:
        response = register(request)
        declared.dependencies[request.name] = {urn.split("::")[-1] for urn in request.dependencies}
        if request.retainOnDelete:
            declared.retained.add(request.name)
        return response

    monitor.RegisterResource = recording_register

    @pulumi.runtime.test
    def run() -> pulumi.Output[Any]:
        return pulumi.Output.all(**build()).apply(declared.outputs.update)

    run()
    return declared


def declare_regional(mocks: RecordingMocks, region: str, standards: bool) -> Declared:
    def build() -> dict[str, pulumi.Output[Any]]:
        hub = RegionalHub("hub", RegionalHubArgs(enable_default_standards=standards))
        return {"hub_arn": hub.hub_arn, "account_urn": hub.account.urn}

    return declare(mocks, build)


def central_args(**overrides: Any) -> CentralHubArgs:
    args = CentralHubArgs(
        home_region="us-east-1",
        linked_regions=("eu-west-1",),
        account_id=ACCOUNT_ID,
        partition="aws",
        triage_principal_arns=(ONCALL, ANALYST),
        triage_permission_sets=(),
        member_accounts=(),
        delegated_admin_account_id=None,
        hub=None,  # type: ignore[arg-type]  # filled in by declare_central
        tags={"project": "falco-securityhub"},
    )
    return replace(args, **overrides)


def declare_central(mocks: RecordingMocks, **overrides: Any) -> Declared:
    def build() -> dict[str, pulumi.Output[Any]]:
        regional = RegionalHub("hub", RegionalHubArgs(enable_default_standards=False))
        hub = CentralHub("central", central_args(hub=regional.account, **overrides))
        return {
            "aggregator_arn": hub.aggregator_arn,
            "triage_role_arn": hub.triage_role_arn,
            "triage_policy_arn": hub.triage_policy_arn,
            "insight_arns": hub.insight_arns,
        }

    return declare(mocks, build)


@pytest.fixture
def central(pulumi_mocks: RecordingMocks) -> Declared:
    return declare_central(pulumi_mocks)


def statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    return document["Statement"]


def as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


# -- RegionalHub -------------------------------------------------------------------------------
@pytest.mark.parametrize("standards", [True, False])
def test_regional_hub_enables_security_hub_cspm_with_standards_from_args(
    pulumi_mocks: RecordingMocks, standards: bool
) -> None:
    declared = declare_regional(pulumi_mocks, "us-east-1", standards)
    account = declared.one(ACCOUNT)  # the CSPM (ASFF) resource, not AccountV2
    assert declared.of_type("aws:securityhub/accountV2:AccountV2") == []
    assert account.inputs["enableDefaultStandards"] is standards
    assert account.inputs["autoEnableControls"] is True


def test_regional_hub_outputs_its_hub_arn_in_its_region(pulumi_mocks: RecordingMocks) -> None:
    mocks = configure_pulumi_mocks(region="eu-west-1", stack="eu-west-1")
    declared = declare_regional(mocks, "eu-west-1", standards=False)
    assert declared.outputs["hub_arn"] == f"arn:aws:securityhub:eu-west-1:{ACCOUNT_ID}:hub/default"
    assert declared.outputs["hub_arn"] == declared.one(ACCOUNT).outputs["arn"]


def test_destroying_the_stack_leaves_security_hub_enabled(pulumi_mocks: RecordingMocks) -> None:
    # Disabling Security Hub would delete every finding in the region, not only ours.
    declared = declare_regional(pulumi_mocks, "us-east-1", standards=False)
    assert "hub-account" in declared.retained


# -- aggregation -------------------------------------------------------------------------------
def test_aggregator_links_exactly_the_listed_regions(central: Declared) -> None:
    aggregator = central.one(AGGREGATOR)
    assert aggregator.inputs["linkingMode"] == "SPECIFIED_REGIONS"
    assert aggregator.inputs["specifiedRegions"] == ["eu-west-1"]
    assert central.outputs["aggregator_arn"] == aggregator.outputs["arn"]


def test_aggregator_links_several_regions_in_a_stable_order(pulumi_mocks: RecordingMocks) -> None:
    declared = declare_central(pulumi_mocks, linked_regions=("eu-west-1", "ap-southeast-2"))
    regions = declared.one(AGGREGATOR).inputs["specifiedRegions"]
    assert regions == ["ap-southeast-2", "eu-west-1"]
    assert "us-east-1" not in regions


def test_aggregator_without_a_list_links_every_region(pulumi_mocks: RecordingMocks) -> None:
    # A region added later (a new stack file) is aggregated without an edit to the home stack.
    aggregator = declare_central(pulumi_mocks, linked_regions=()).one(AGGREGATOR)
    assert aggregator.inputs["linkingMode"] == "ALL_REGIONS"
    assert not aggregator.inputs.get("specifiedRegions")


def test_central_resources_wait_for_the_hub(pulumi_mocks: RecordingMocks) -> None:
    declared = declare_central(
        pulumi_mocks,
        member_accounts=(MemberAccount("210987654321", "sec@example.com"),),
        delegated_admin_account_id="111122223333",
    )
    for typ in (AGGREGATOR, INSIGHT, MEMBER, ADMIN):
        for resource in declared.of_type(typ):
            assert "hub-account" in declared.dependencies[resource.name], resource.name


# -- insights ----------------------------------------------------------------------------------
def test_three_insights_group_falco_findings_by_cluster_rule_and_severity(
    central: Declared,
) -> None:
    insights = {i.inputs["groupByAttribute"]: i for i in central.of_type(INSIGHT)}
    assert set(insights) == {"ResourceId", "GeneratorId", "SeverityLabel"}
    assert insights["ResourceId"].inputs["filters"]["resourceTypes"] == [
        {"comparison": "EQUALS", "value": "AwsEksCluster"}
    ]
    assert sorted(central.outputs["insight_arns"]) == sorted(
        i.outputs["arn"] for i in central.of_type(INSIGHT)
    )


def test_every_insight_shows_only_open_falco_findings(central: Declared) -> None:
    for insight in central.of_type(INSIGHT):
        filters = insight.inputs["filters"]
        assert filters["generatorIds"] == [{"comparison": "PREFIX", "value": "falco/rule/"}]
        assert filters["productNames"] == [
            {"comparison": "EQUALS", "value": "Falco runtime security"}
        ]
        assert filters["recordStates"] == [{"comparison": "EQUALS", "value": "ACTIVE"}]
        assert sorted(f["value"] for f in filters["workflowStatuses"]) == ["NEW", "NOTIFIED"]


def test_insight_filters_match_what_the_handler_writes() -> None:
    from handlers import alerts, findings  # imported here: the module may not exist yet

    alert = {
        "time": "2026-01-01T00:00:00.000000000Z",
        "rule": "Terminal shell in container",
        "priority": "Notice",
        "source": "syscall",
        "hostname": "ip-10-0-1-23",
        "output": "A shell was spawned in a container",
        "output_fields": {"container.id": "abc123def456", "k8s.pod.name": "web"},
    }
    record = alerts.parse_log_event(alerts.LogEvent("1", 1767225600000, json.dumps(alert)))
    assert isinstance(record, alerts.AlertRecord)
    ctx = findings.FindingContext(
        account_id=ACCOUNT_ID, region="eu-west-1", cluster_name="falco-demo"
    )
    finding = findings.to_finding(record, ctx)
    assert finding["GeneratorId"].startswith(central_hub.FALCO_GENERATOR_PREFIX)
    assert finding["ProductName"] == central_hub.FALCO_PRODUCT_NAME
    clusters = [r for r in finding["Resources"] if r["Type"] == central_hub.CLUSTER_RESOURCE_TYPE]
    assert [r["Id"] for r in clusters] == [f"arn:aws:eks:eu-west-1:{ACCOUNT_ID}:cluster/falco-demo"]


# -- triage role -------------------------------------------------------------------------------
def test_triage_role_is_assumable_only_by_the_configured_principals_with_mfa(
    central: Declared,
) -> None:
    role = central.one(ROLE)
    [statement] = statements(role.policy("assumeRolePolicy"))
    assert statement["Effect"] == "Allow"
    assert statement["Action"] == "sts:AssumeRole"
    assert sorted(as_list(statement["Principal"]["AWS"])) == sorted([ANALYST, ONCALL])
    assert set(statement["Principal"]) == {"AWS"}
    # Bool, not BoolIfExists: a request without MFA context must not match.
    assert statement["Condition"]["Bool"] == {"aws:MultiFactorAuthPresent": "true"}
    assert "BoolIfExists" not in statement["Condition"]
    assert int(statement["Condition"]["NumericLessThan"]["aws:MultiFactorAuthAge"]) <= 3600


def test_triage_sessions_are_short(central: Declared) -> None:
    assert central.one(ROLE).inputs["maxSessionDuration"] <= 3600
    assert central.outputs["triage_role_arn"] == central.one(ROLE).outputs["arn"]


def test_triage_role_reads_security_hub_and_triages_through_attached_policies(
    central: Declared,
) -> None:
    attached = {a.inputs["policyArn"] for a in central.of_type(ATTACHMENT)}
    assert attached == {
        "arn:aws:iam::aws:policy/AWSSecurityHubReadOnlyAccess",
        central.one(POLICY).outputs["arn"],
    }
    for attachment in central.of_type(ATTACHMENT):
        assert attachment.inputs["role"] == central.one(ROLE).inputs["name"]


def test_triage_role_may_only_update_findings_on_this_accounts_hubs(central: Declared) -> None:
    policy = central.one(POLICY).policy()
    hubs = sorted(
        f"arn:aws:securityhub:{region}:{ACCOUNT_ID}:hub/default"
        for region in ("us-east-1", "eu-west-1")
    )
    allows = [s for s in statements(policy) if s["Effect"] == "Allow"]
    assert allows == [
        {
            "Sid": "TriageFindings",
            "Effect": "Allow",
            "Action": "securityhub:BatchUpdateFindings",
            "Resource": hubs,
        }
    ]
    for statement in statements(policy):
        assert as_list(statement["Action"]) == ["securityhub:BatchUpdateFindings"]
        assert "*" not in as_list(statement["Resource"])


def test_triage_cannot_change_the_providers_severity_or_types(central: Declared) -> None:
    policy = central.one(POLICY).policy()
    denied = set()
    for statement in statements(policy):
        if statement["Effect"] == "Deny":
            # One field per statement: keys in one Null block would all have to be present.
            [(key, value)] = statement["Condition"]["Null"].items()
            assert value == "false"
            denied.add(key.removeprefix("securityhub:ASFFSyntaxPath/"))
    assert denied == {
        "Severity.Label",
        "Severity.Normalized",
        "Severity.Product",
        "Criticality",
        "Confidence",
        "Types",
    }
    assert not denied & {"Workflow.Status", "Note.Text", "VerificationState"}


def test_no_triage_role_nobody_could_assume(pulumi_mocks: RecordingMocks) -> None:
    declared = declare_central(pulumi_mocks, triage_principal_arns=())
    assert declared.of_type(ROLE) == []
    assert declared.of_type(ATTACHMENT) == []
    assert declared.outputs["triage_role_arn"] is None
    # The policy stays, for Identity Center permission sets to attach by name.
    assert declared.one(POLICY).inputs["name"] == "falco-findings-triage"


def test_trust_policy_refuses_an_empty_principal_list() -> None:
    with pytest.raises(ValueError, match="at least one principal or permission set"):
        central_hub.triage_trust_policy([])


# -- accounts ----------------------------------------------------------------------------------
def test_no_members_or_delegated_admin_unless_configured(central: Declared) -> None:
    assert central.of_type(MEMBER) == []
    assert central.of_type(ADMIN) == []


def test_members_are_invited_when_configured(pulumi_mocks: RecordingMocks) -> None:
    members = (
        MemberAccount("210987654321", "sec-a@example.com"),
        MemberAccount("210987654322", "sec-b@example.com"),
    )
    declared = declare_central(pulumi_mocks, member_accounts=members)
    recorded = {m.inputs["accountId"]: m.inputs for m in declared.of_type(MEMBER)}
    assert recorded == {
        "210987654321": {"accountId": "210987654321", "email": "sec-a@example.com", "invite": True},
        "210987654322": {"accountId": "210987654322", "email": "sec-b@example.com", "invite": True},
    }
    assert declared.of_type(ADMIN) == []


def test_delegated_admin_when_configured(pulumi_mocks: RecordingMocks) -> None:
    declared = declare_central(pulumi_mocks, delegated_admin_account_id="111122223333")
    assert declared.one(ADMIN).inputs["adminAccountId"] == "111122223333"
    assert declared.of_type(MEMBER) == []
