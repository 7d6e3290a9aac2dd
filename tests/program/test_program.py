"""The whole program, run from the fixture stacks in tests/program/stacks/ (home and linked).

Each fixture stack runs once per module (tests/program_runner.py) and the tests read what it
declared: the aggregator only in the home region, encryption everywhere, IAM without wildcards,
the alert path from Fluent Bit to the Lambda, and the stack outputs. The shipped stack files are
only run, whatever values a user gives them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ACCOUNT_ID, RecordedResource
from program_runner import (
    EGRESS_CIDR,
    HOME_STACK,
    LINKED_STACK,
    REAL_STACK_FILES,
    ProgramRun,
    run_program,
    stack_config,
)

from components.central_hub import FALCO_PRODUCT_NAME
from components.settings import SettingsError
from handlers.names import parse_priority

NS = "falco-securityhub"
HOME = "us-east-1"

CONTRACT_OUTPUTS = {
    "clusterName",
    "kubeconfig",
    "logGroupName",
    "functionName",
    "deadLetterQueueUrl",
    "hubArn",
    "aggregatorArn",
    "findingsConsoleUrl",
}

# AWS-managed policies the program attaches, and why each is acceptable. Their documents are
# AWS's (some use Resource "*", e.g. ec2:Describe*), so they are reviewed here by name.
MANAGED_POLICIES = {
    "AmazonEKSWorkerNodePolicy": "nodes join the cluster (EKS requirement)",
    "AmazonEKS_CNI_Policy": "the VPC CNI on the nodes assigns pod IPs (EKS requirement)",
    "AmazonEC2ContainerRegistryReadOnly": "nodes pull images, e.g. the EKS add-ons' (ECR)",
    "AWSSecurityHubReadOnlyAccess": "the triage role reads findings (CentralHub)",
}

# Statement types the program declares, by input key.
POLICY_INPUTS = ("policy", "assumeRolePolicy")


@pytest.fixture(scope="module", params=[HOME_STACK, LINKED_STACK], ids=lambda p: p.name)
def program(request: pytest.FixtureRequest) -> ProgramRun:
    return run_program(request.param)


@pytest.fixture(scope="module")
def home() -> ProgramRun:
    return run_program(HOME_STACK)


@pytest.fixture(scope="module")
def linked() -> ProgramRun:
    return run_program(LINKED_STACK)


def region_of(run: ProgramRun) -> str:
    return run.config["aws:region"]


def setting(run: ProgramRun, key: str) -> Any:
    return run.config[f"{NS}:{key}"]


def policy_statements(run: ProgramRun) -> Iterator[tuple[RecordedResource, str, dict[str, Any]]]:
    """Every statement of every policy document the program declares (IAM, KMS, SQS, SNS)."""
    for resource in run.mocks.resources:
        if not resource.type.startswith("aws:"):
            continue
        for key in POLICY_INPUTS:
            if resource.inputs.get(key):
                statements = resource.policy(key)["Statement"]
                for statement in statements if isinstance(statements, list) else [statements]:
                    yield resource, key, statement


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def is_wildcard_action(action: str) -> bool:
    """'*' or a whole service ('kms:*'); prefixes such as 'kms:Describe*' are reviewed names."""
    return action == "*" or action.endswith(":*")


def is_account_root_key_admin(resource: RecordedResource, statement: dict[str, Any]) -> bool:
    """AWS's default key-policy statement: the account root administers the key, and IAM
    policies decide who else uses it. Without it a key can become unmanageable."""
    return (
        resource.type == "aws:kms/key:Key"
        and statement["Effect"] == "Allow"
        and statement.get("Principal") == {"AWS": f"arn:aws:iam::{ACCOUNT_ID}:root"}
        and as_list(statement["Action"]) == ["kms:*"]
    )


# -- stacks and Security Hub aggregation ---------------------------------------------------------
def test_the_aggregator_exists_only_in_the_home_region(program: ProgramRun) -> None:
    aggregators = program.mocks.of_type("aws:securityhub/findingAggregator:FindingAggregator")
    central = program.mocks.of_type(f"{NS}:index:CentralHub")
    if region_of(program) == HOME:
        assert len(aggregators) == 1
        assert len(central) == 1
    else:
        assert aggregators == []
        assert central == []


def test_the_aggregator_links_all_regions_unless_restricted(home: ProgramRun) -> None:
    aggregator = home.mocks.one("aws:securityhub/findingAggregator:FindingAggregator")
    assert aggregator.inputs["linkingMode"] == "ALL_REGIONS"
    restricted = run_program(HOME_STACK, {f"{NS}:linkedRegions": ["eu-west-1", "ap-southeast-2"]})
    aggregator = restricted.mocks.one("aws:securityhub/findingAggregator:FindingAggregator")
    assert aggregator.inputs["linkingMode"] == "SPECIFIED_REGIONS"
    assert sorted(aggregator.inputs["specifiedRegions"]) == ["ap-southeast-2", "eu-west-1"]


def test_a_stack_file_added_alone_runs(tmp_path: Path) -> None:
    added = tmp_path / "Pulumi.ap-southeast-2.yaml"
    added.write_text(
        "config:\n"
        "  aws:region: ap-southeast-2\n"
        f"  falco-securityhub:publicAccessCidrs: [{EGRESS_CIDR}]\n",
        encoding="utf-8",
    )
    run = run_program(added)
    assert run.outputs["clusterName"] == "falco-ap-southeast-2"
    assert run.mocks.of_type("aws:securityhub/findingAggregator:FindingAggregator") == []


@pytest.mark.parametrize("stack_file", REAL_STACK_FILES, ids=lambda p: p.name)
def test_every_shipped_stack_file_runs_once_its_egress_cidr_is_set(stack_file: Path) -> None:
    # What a user must fill in before the first `pulumi up`; any other value is theirs.
    config = stack_config(stack_file)
    overrides = (
        {}
        if config.get(f"{NS}:endpointPublicAccess") is False
        else {f"{NS}:publicAccessCidrs": [EGRESS_CIDR]}
    )
    run = run_program(stack_file, overrides)
    run.mocks.one("aws:lambda/function:Function", "findings-function")
    assert len(run.mocks.of_type("kubernetes:helm.sh/v3:Release")) >= 2


def test_every_stack_enables_security_hub_before_the_pipeline_imports(program: ProgramRun) -> None:
    program.mocks.one("aws:securityhub/account:Account")
    assert "hub-account" in program.dependencies["findings-function"]


def test_a_misspelled_key_stops_the_program_naming_the_closest_setting() -> None:
    with pytest.raises(SettingsError) as raised:
        run_program(LINKED_STACK, {f"{NS}:falcoMinimumPriorty": "Warning"})
    (problem,) = raised.value.problems
    assert problem.startswith(f"{NS}:falcoMinimumPriorty (Pulumi.eu-west-1.yaml)")
    assert problem.endswith("did you mean falcoMinimumPriority?")


def test_a_documentation_cidr_stops_the_program_naming_what_to_put_in() -> None:
    with pytest.raises(SettingsError) as raised:
        run_program(HOME_STACK, {f"{NS}:publicAccessCidrs": ["203.0.113.0/24"]})
    (problem,) = raised.value.problems
    assert problem.startswith(f"{NS}:publicAccessCidrs (Pulumi.us-east-1.yaml)")
    assert "documentation range" in problem
    assert "real egress CIDR" in problem


# -- encryption ----------------------------------------------------------------------------------
def declared_key_arns(run: ProgramRun) -> set[str]:
    return {key.outputs["arn"] for key in run.mocks.of_type("aws:kms/key:Key")}


def test_every_log_group_is_encrypted_with_a_declared_key(program: ProgramRun) -> None:
    groups = program.mocks.of_type("aws:cloudwatch/logGroup:LogGroup")
    names = {g.inputs["name"] for g in groups}
    cluster = f"falco-{region_of(program)}"
    # Alerts, the Lambda's own logs, the EKS control plane and VPC flow logs.
    assert {f"/aws/eks/{cluster}/cluster", f"/aws/vpc/{cluster}/flow-logs"} <= names
    assert program.outputs["logGroupName"] in names
    for group in groups:
        assert group.inputs.get("kmsKeyId") in declared_key_arns(program), group.name
        assert group.inputs.get("retentionInDays") == setting(program, "logRetentionDays")


def test_every_kms_key_rotates(program: ProgramRun) -> None:
    keys = program.mocks.of_type("aws:kms/key:Key")
    assert keys
    for key in keys:
        assert key.inputs["enableKeyRotation"] is True, key.name


def test_queues_and_topics_are_encrypted(program: ProgramRun) -> None:
    queues = program.mocks.of_type("aws:sqs/queue:Queue")
    topics = program.mocks.of_type("aws:sns/topic:Topic")
    assert queues
    for resource in [*queues, *topics]:
        assert resource.inputs.get("kmsMasterKeyId") in declared_key_arns(program), resource.name


def test_eks_secrets_and_node_volumes_are_encrypted(program: ProgramRun) -> None:
    cluster = program.mocks.one("eks:index:Cluster")
    assert cluster.inputs["encryptionConfigKeyArn"] in declared_key_arns(program)
    template = program.mocks.one("aws:ec2/launchTemplate:LaunchTemplate")
    for mapping in template.inputs["blockDeviceMappings"]:
        assert mapping["ebs"]["encrypted"] == "true"


# -- IAM and resource policies -------------------------------------------------------------------
def test_policies_are_declared_and_read(program: ProgramRun) -> None:
    kinds = {resource.type for resource, _, _ in policy_statements(program)}
    assert {"aws:iam/role:Role", "aws:iam/rolePolicy:RolePolicy", "aws:kms/key:Key"} <= kinds


def test_no_allow_statement_has_a_wildcard_action(program: ProgramRun) -> None:
    for resource, key, statement in policy_statements(program):
        if statement["Effect"] != "Allow" or is_account_root_key_admin(resource, statement):
            continue
        assert "NotAction" not in statement, f"{resource.name}.{key}: Allow with NotAction"
        wildcards = [a for a in as_list(statement.get("Action")) if is_wildcard_action(a)]
        assert not wildcards, f"{resource.name}.{key} {statement.get('Sid')}: {wildcards}"


# Actions that support no resource-level permissions: "*" is the only Resource AWS accepts, so
# the statement must narrow them with a condition instead.
RESOURCE_STAR_ONLY_ACTIONS = {"ec2:DescribeInstances"}


def test_wildcard_resources_only_in_kms_key_policies(program: ProgramRun) -> None:
    # In a key policy, Resource "*" means "this key": there is no other way to write it. Anywhere
    # else an Allow on "*" would reach every resource of the account.
    for resource, key, statement in policy_statements(program):
        if statement["Effect"] != "Allow" or resource.type == "aws:kms/key:Key":
            continue
        if set(as_list(statement["Action"])) <= RESOURCE_STAR_ONLY_ACTIONS:
            assert statement.get("Condition"), f"{resource.name}.{key}: {statement['Action']}"
            continue
        assert "NotResource" not in statement, f"{resource.name}.{key}"
        assert "*" not in as_list(statement.get("Resource")), (
            f"{resource.name}.{key} {statement.get('Sid')}: Resource *"
        )


def test_anyone_principals_are_always_conditioned(program: ProgramRun) -> None:
    for resource, key, statement in policy_statements(program):
        principal = statement.get("Principal")
        if statement["Effect"] == "Allow" and principal in ("*", {"AWS": "*"}):
            assert statement.get("Condition"), f"{resource.name}.{key}: open to anyone"


def test_roles_trust_only_services_or_named_principals(program: ProgramRun) -> None:
    for role in program.mocks.of_type("aws:iam/role:Role"):
        for statement in role.policy("assumeRolePolicy")["Statement"]:
            assert statement["Effect"] == "Allow"
            principal = statement["Principal"]
            assert principal not in ("*", {"AWS": "*"}), role.name
            assert set(principal) <= {"Service", "AWS"}, role.name


def test_only_reviewed_managed_policies_are_attached(program: ProgramRun) -> None:
    attached = {
        attachment.inputs["policyArn"].rsplit("/", 1)[-1]
        for attachment in program.mocks.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
    }
    assert attached <= set(MANAGED_POLICIES), attached - set(MANAGED_POLICIES)
    # Customer-managed policies: no wildcard action, no "*" resource (an ARN with a wildcard
    # region, the account's hubs in every aggregated region, is still scoped to the account).
    for policy in program.mocks.of_type("aws:iam/policy:Policy"):
        for statement in policy.policy()["Statement"]:
            actions = statement["Action"]
            assert not any("*" in action for action in _listed(actions)), policy.name
            assert "*" not in _listed(statement["Resource"]), policy.name


def _listed(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


# -- the alert path: Fluent Bit -> log group -> subscription -> Lambda -> Security Hub -----------
def test_the_lambda_is_subscribed_to_the_pipelines_log_group(program: ProgramRun) -> None:
    function = program.mocks.one("aws:lambda/function:Function", "findings-function")
    subscription = program.mocks.one("aws:cloudwatch/logSubscriptionFilter:LogSubscriptionFilter")
    assert subscription.inputs["destinationArn"] == function.outputs["arn"]
    assert subscription.inputs["logGroup"] == program.outputs["logGroupName"]
    assert function.outputs["name"] == program.outputs["functionName"]


def test_only_cloudwatch_logs_from_that_group_may_invoke_the_lambda(program: ProgramRun) -> None:
    function = program.mocks.one("aws:lambda/function:Function", "findings-function")
    (permission,) = [
        p
        for p in program.mocks.of_type("aws:lambda/permission:Permission")
        if p.inputs["principal"] == f"logs.{region_of(program)}.amazonaws.com"
    ]
    assert permission.inputs["function"] in (function.outputs["name"], function.outputs["arn"])
    group = next(
        g
        for g in program.mocks.of_type("aws:cloudwatch/logGroup:LogGroup")
        if g.inputs["name"] == program.outputs["logGroupName"]
    )
    assert permission.inputs["sourceArn"].startswith(group.outputs["arn"])
    subscription = program.mocks.one("aws:cloudwatch/logSubscriptionFilter:LogSubscriptionFilter")
    assert permission.name in program.dependencies[subscription.name]


def test_failed_invocations_land_in_the_on_failure_queue(program: ProgramRun) -> None:
    queue = program.mocks.one("aws:sqs/queue:Queue", "findings-failed-events")
    config = program.mocks.one(
        "aws:lambda/functionEventInvokeConfig:FunctionEventInvokeConfig", "findings-async"
    )
    assert config.inputs["destinationConfig"]["onFailure"]["destination"] == queue.outputs["arn"]
    assert program.outputs["deadLetterQueueUrl"] == queue.outputs["url"]


def releases(run: ProgramRun) -> dict[str, RecordedResource]:
    return {r.inputs["chart"]: r for r in run.mocks.of_type("kubernetes:helm.sh/v3:Release")}


def test_falco_and_fluent_bit_are_installed_at_the_pinned_versions(program: ProgramRun) -> None:
    installed = releases(program)
    assert set(installed) == {"falco", "fluent-bit"}
    assert installed["falco"].inputs["version"] == setting(program, "falcoChartVersion")
    assert installed["fluent-bit"].inputs["version"] == setting(program, "fluentBitChartVersion")
    for release in installed.values():
        assert re.fullmatch(r"\d+\.\d+\.\d+", release.inputs["version"])
        assert release.inputs["repositoryOpts"]["repo"].startswith("https://")


def test_fluent_bit_ships_to_the_pipelines_log_group_in_its_region(program: ProgramRun) -> None:
    outputs = releases(program)["fluent-bit"].inputs["values"]["config"]["outputs"]
    assert re.findall(r"^\s*log_group_name\s+(\S+)\s*$", outputs, flags=re.MULTILINE) == [
        program.outputs["logGroupName"]
    ]
    assert re.findall(r"^\s*region\s+(\S+)\s*$", outputs, flags=re.MULTILINE) == [
        region_of(program)
    ]


def test_runtime_security_waits_for_nodes_and_the_pod_identity_agent(program: ProgramRun) -> None:
    for release in releases(program).values():
        waits_for = program.dependencies[release.name]
        assert {"cluster-eks", "cluster-nodes", "cluster-pod-identity-agent"} <= waits_for


def test_the_pipeline_is_configured_from_the_settings(program: ProgramRun) -> None:
    function = program.mocks.one("aws:lambda/function:Function", "findings-function")
    assert function.inputs["memorySize"] == setting(program, "lambdaMemoryMb")
    assert function.inputs["timeout"] == setting(program, "lambdaTimeoutSeconds")
    # 0 means no reservation: the argument is left out (a reservation of 0 stops the function).
    reserved = setting(program, "lambdaReservedConcurrency") or None
    assert function.inputs.get("reservedConcurrentExecutions") == reserved
    variables = function.inputs["environment"]["variables"]
    assert variables["MIN_PRIORITY"] == parse_priority(setting(program, "findingsMinimumPriority"))
    assert variables["CLUSTER_NAME"] == program.outputs["clusterName"]


# -- network and cluster wiring ------------------------------------------------------------------
def test_nodes_run_in_the_networks_private_subnets(program: ProgramRun) -> None:
    nodes = program.mocks.one("aws:eks/nodeGroup:NodeGroup")
    private = [
        f"{s.name}-id"
        for s in program.mocks.of_type("aws:ec2/subnet:Subnet")
        if s.name.startswith("network-private-")
    ]
    assert sorted(nodes.inputs["subnetIds"]) == sorted(private)
    assert len(private) == setting(program, "availabilityZoneCount")
    cluster = program.mocks.one("eks:index:Cluster")
    assert cluster.inputs["vpcId"] == f"{program.mocks.one('aws:ec2/vpc:Vpc').name}-id"


def test_the_cluster_api_is_reachable_only_as_configured(program: ProgramRun) -> None:
    cluster = program.mocks.one("eks:index:Cluster")
    assert cluster.inputs["endpointPrivateAccess"] is True
    assert cluster.inputs["publicAccessCidrs"] == setting(program, "publicAccessCidrs")
    assert "0.0.0.0/0" not in cluster.inputs["publicAccessCidrs"]


def test_regional_resources_stay_in_the_stacks_region(program: ProgramRun) -> None:
    for resource in program.mocks.resources:
        if "region" in resource.inputs and resource.type.startswith("aws:"):
            assert resource.inputs["region"] == region_of(program), resource.name
    zones = {s.inputs["availabilityZone"] for s in program.mocks.of_type("aws:ec2/subnet:Subnet")}
    assert all(zone.startswith(region_of(program)) for zone in zones)


def test_resources_given_tags_carry_project_and_stack(program: ProgramRun) -> None:
    for resource in program.mocks.resources:
        tags = resource.inputs.get("tags")
        if resource.type.startswith("aws:") and isinstance(tags, dict):
            assert tags.get("Project") == NS, resource.name
            assert tags.get("Stack") == region_of(program), resource.name


# -- stack outputs -------------------------------------------------------------------------------
def test_stack_outputs_are_the_contracts(program: ProgramRun) -> None:
    # The contract's outputs at least; the operator outputs: tests/program/test_deploy_modes.py.
    assert set(program.outputs) >= CONTRACT_OUTPUTS
    region = region_of(program)
    assert program.outputs["clusterName"] == f"falco-{region}"
    assert program.outputs["hubArn"].startswith(f"arn:aws:securityhub:{region}:")
    for name in CONTRACT_OUTPUTS - {"aggregatorArn"}:
        assert program.outputs[name], name


def test_kubeconfig_is_a_secret_output(program: ProgramRun) -> None:
    assert program.secret_outputs == {"kubeconfig"}
    assert json.loads(program.outputs["kubeconfig"])["kind"] == "Config"


def test_aggregator_arn_only_in_the_home_region(home: ProgramRun, linked: ProgramRun) -> None:
    assert home.outputs["aggregatorArn"].startswith(f"arn:aws:securityhub:{HOME}:")
    assert linked.outputs["aggregatorArn"] is None


def test_findings_console_url_opens_falco_findings_in_the_home_region(program: ProgramRun) -> None:
    url = program.outputs["findingsConsoleUrl"]
    assert url.startswith(f"https://{HOME}.console.aws.amazon.com/securityhub/home?region={HOME}#")
    encoded_name = FALCO_PRODUCT_NAME.replace(" ", "%2520")
    assert url.endswith(
        f"#/findings?search=ProductName%3D%255Coperator%255C%253AEQUALS%255C%253A{encoded_name}"
    )


def _urns(value: Any) -> Iterator[str]:
    if isinstance(value, str) and value.startswith("urn:pulumi:"):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _urns(item)
    elif isinstance(value, list):
        for item in value:
            yield from _urns(item)


def test_remote_components_get_no_resource_typed_inputs(program: ProgramRun) -> None:
    # A resource passed as an input to a remote (multi-language) component, such as pulumi-eks's
    # ManagedNodeGroup(cluster=...), arrives here as its URN; under Pulumi's default mock monitor
    # the same input fails intermittently ("attached to a different loop"), so any mock-based
    # check of this program, ours or a reviewer's, would be flaky.
    for resource in program.mocks.resources:
        if resource.type.startswith("eks:index:"):
            assert not list(_urns(resource.inputs)), f"{resource.type} {resource.name}"
