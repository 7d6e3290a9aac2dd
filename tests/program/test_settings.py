"""Settings: every bad value is named with its key, the stack file and what is allowed.

No engine needed: ``load_settings`` takes a reader, here a dict's ``get`` holding raw strings the
way the engine hands them over (lists JSON-encoded, numbers and booleans as text).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml
from program_runner import PROJECT_DIR, STACKS, stack_config

from components.settings import (
    FALCO_PRIORITIES,
    SETTINGS,
    MemberAccount,
    Settings,
    SettingsError,
    load_settings,
)

NS = "falco-securityhub"
SPECS = {spec.key: spec for spec in SETTINGS}


def raw(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def load(stack: str = "us-east-1", region: str = "us-east-1", **overrides: Any) -> Settings:
    """Settings from the defaults in code plus a valid public CIDR, then ``overrides``."""
    config = {"aws:region": region, f"{NS}:publicAccessCidrs": '["203.0.113.0/24"]'}
    config.update({f"{NS}:{key}": raw(value) for key, value in overrides.items()})
    return load_settings(config.get, stack)


def problems(**overrides: Any) -> list[str]:
    with pytest.raises(SettingsError) as raised:
        load(**overrides)
    return raised.value.problems


# -- the real stack files ------------------------------------------------------------------------
@pytest.mark.parametrize("stack", STACKS)
def test_real_stack_files_load(stack: str) -> None:
    config = {key: raw(value) for key, value in stack_config(stack).items()}
    settings = load_settings(config.get, stack, project_dir=PROJECT_DIR)
    assert settings.region == stack
    assert settings.cluster_name == f"falco-{stack}"
    assert settings.is_home_region == (stack == "us-east-1")
    assert settings.home_region == "us-east-1"
    assert settings.linked_regions == ("eu-west-1",)


def test_pulumi_yaml_declares_every_setting_with_type_default_and_description() -> None:
    project = yaml.safe_load((PROJECT_DIR / "Pulumi.yaml").read_text(encoding="utf-8"))
    assert project["name"] == "falco-securityhub"
    assert project["runtime"] == {
        "name": "python",
        "options": {"toolchain": "pip", "virtualenv": ".venv"},
    }
    declared = project["config"]
    assert set(declared) == set(SPECS)
    for key, spec in SPECS.items():
        assert declared[key]["type"] == spec.type, key
        assert declared[key]["default"] == spec.default, key
        assert declared[key]["description"] == spec.description, key
        if spec.type == "array":
            assert declared[key]["items"] == {"type": "string"}, key


def test_stack_files_only_set_declared_keys() -> None:
    for stack in STACKS:
        stack_file = yaml.safe_load((PROJECT_DIR / f"Pulumi.{stack}.yaml").read_text())
        for key in stack_file["config"]:
            namespace, _, name = key.partition(":")
            assert namespace in ("aws", NS), key
            if namespace == NS:
                assert name in SPECS, f"{key} in Pulumi.{stack}.yaml is not declared"


def test_readme_documents_every_setting_with_its_default() -> None:
    guide = (PROJECT_DIR / "README.md").read_text(encoding="utf-8")
    rows = {
        match.group(1): match.group(0)
        for match in re.finditer(r"^\| `([A-Za-z]+)` \|.*$", guide, flags=re.MULTILINE)
    }
    assert set(rows) == set(SPECS)
    for key, spec in SPECS.items():
        assert f"| {spec.type} |" in rows[key], key
        assert f"`{json.dumps(spec.default)}`" in rows[key], key


# -- good values ---------------------------------------------------------------------------------
def test_defaults_load_and_derive_the_cluster_name_from_the_region() -> None:
    settings = load(stack="eu-west-1", region="eu-west-1")
    assert settings.cluster_name == "falco-eu-west-1"
    assert not settings.is_home_region
    assert settings.node_instance_types == ("m6i.large",)
    assert settings.falco_custom_rules is None
    assert settings.alarm_email is None
    assert settings.tags == {"Project": NS, "Stack": "eu-west-1"}


def test_settings_are_frozen() -> None:
    settings = load()
    with pytest.raises(AttributeError):
        settings.node_min_size = 0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("given", "canonical"),
    [("warning", "Warning"), ("CRITICAL", "Critical"), ("informational", "Informational")],
)
def test_falco_priority_is_case_insensitive_and_canonicalized(given: str, canonical: str) -> None:
    settings = load(falcoMinimumPriority=given, findingsMinimumPriority=given)
    assert settings.falco_minimum_priority == canonical
    assert settings.findings_minimum_priority == canonical


def test_open_public_endpoint_needs_the_explicit_opt_in() -> None:
    settings = load(publicAccessCidrs=["0.0.0.0/0"], allowPublicEndpointFromAnywhere=True)
    assert settings.public_access_cidrs == ("0.0.0.0/0",)


def test_private_endpoint_only_needs_no_cidrs() -> None:
    settings = load(endpointPublicAccess=False, publicAccessCidrs=[])
    assert not settings.endpoint_public_access
    assert settings.public_access_cidrs == ()


def test_member_accounts_and_principals_parse() -> None:
    settings = load(
        memberAccounts=["111122223333:sec@example.com", "444455556666: ops@example.org"],
        triagePrincipalArns=["arn:aws:iam::111122223333:root"],
        adminRoleArns=["arn:aws:iam::123456789012:role/team/platform-admin"],
        delegatedAdminAccountId="111122223333",
    )
    assert settings.member_accounts == (
        MemberAccount("111122223333", "sec@example.com"),
        MemberAccount("444455556666", "ops@example.org"),
    )
    assert settings.delegated_admin_account_id == "111122223333"


def test_graviton_instance_types_with_the_arm_ami() -> None:
    settings = load(
        nodeAmiType="AL2023_ARM_64_STANDARD", nodeInstanceTypes=["m7g.large", "c7gn.xlarge"]
    )
    assert settings.node_ami_type == "AL2023_ARM_64_STANDARD"


def test_custom_rules_file_is_read_relative_to_the_project(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "custom.yaml").write_text("- rule: x\n  condition: evt.type=open\n")
    config = {
        "aws:region": "us-east-1",
        f"{NS}:publicAccessCidrs": '["203.0.113.0/24"]',
        f"{NS}:falcoCustomRulesFile": "rules/custom.yaml",
    }
    settings = load_settings(config.get, "us-east-1", project_dir=tmp_path)
    assert settings.falco_custom_rules is not None
    assert "evt.type=open" in settings.falco_custom_rules


# -- bad values: one clear line each -------------------------------------------------------------
BAD_VALUES: list[tuple[str, Any, str]] = [
    ("homeRegion", "us-east", "not an AWS region name"),
    ("linkedRegions", ["us-east-1"], "contains the home region us-east-1"),
    ("linkedRegions", ["eu-west-1", "eu-west-1"], "duplicates: eu-west-1"),
    ("linkedRegions", ["eu_west_1"], "not AWS region names"),
    ("linkedRegions", "eu-west-1", "not a list of strings"),
    ("linkedRegions", ["cn-north-1"], "not in us-east-1's partition"),
    ("vpcCidr", "10.0.0.0/33", "not an IPv4 network"),
    ("vpcCidr", "10.0.0.1/16", "not an IPv4 network"),
    ("vpcCidr", "8.8.0.0/16", "not inside 10.0.0.0/8"),
    ("vpcCidr", "10.0.0.0/24", "prefix length outside /16../20"),
    ("availabilityZoneCount", 1, "EKS needs at least 2 AZs"),
    ("availabilityZoneCount", "two", "not an integer"),
    ("natGateways", "perAZ", "unknown NAT gateway mode"),
    ("vpcFlowLogs", "yes", "not a boolean"),
    ("clusterName", "falco cluster", "not a valid EKS cluster name"),
    ("kubernetesVersion", "1.35.2", "not a Kubernetes minor version"),
    ("kubernetesVersion", "v1.35", "not a Kubernetes minor version"),
    ("nodeAmiType", "AL2_x86_64", "not an AL2023 AMI type"),
    ("nodeInstanceTypes", [], "empty"),
    ("nodeInstanceTypes", ["large"], "not instance types: large"),
    ("nodeInstanceTypes", ["m7g.large"], "cannot boot AL2023_x86_64_STANDARD"),
    ("nodeMinSize", 0, "must be at least 1"),
    ("nodeDesiredSize", 1, "below nodeMinSize (2)"),
    ("nodeMaxSize", 1, "below nodeDesiredSize (2)"),
    ("nodeDiskSizeGb", 10, "out of range"),
    ("publicAccessCidrs", [], "empty while endpointPublicAccess is true"),
    ("publicAccessCidrs", ["0.0.0.0/0"], "set allowPublicEndpointFromAnywhere to true"),
    ("publicAccessCidrs", ["10.0.0.0/8"], "a private range"),
    ("publicAccessCidrs", ["203.0.113.7/24"], "not an IPv4 network"),
    ("publicAccessCidrs", [f"198.51.{i}.0/24" for i in range(41)], "41 entries"),
    ("adminRoleArns", ["arn:aws:iam::12345:role/admin"], "not an IAM principal ARN"),
    (
        "adminRoleArns",
        ["arn:aws:sts::123456789012:assumed-role/admin/me"],
        "an STS session, not the role",
    ),
    ("adminRoleArns", ["arn:aws:iam::123456789012:root"], "not an IAM principal ARN"),
    ("triagePrincipalArns", ["admin"], "not an IAM principal ARN"),
    ("falcoChartVersion", "latest", "not an exact chart version"),
    ("fluentBitChartVersion", "^0.54", "not an exact chart version"),
    ("falcoMinimumPriority", "High", "unknown Falco priority"),
    ("findingsMinimumPriority", "Info", "unknown Falco priority"),
    ("falcoCustomRulesFile", "rules/missing.yaml", "cannot be read"),
    ("falcoCustomRulesFile", "rules.txt", "not a .yaml/.yml file"),
    ("logRetentionDays", 100, "not a CloudWatch Logs retention period"),
    ("lambdaMemoryMb", 64, "out of range"),
    ("lambdaMemoryMb", 10241, "out of range"),
    ("lambdaTimeoutSeconds", 0, "out of range"),
    ("lambdaTimeoutSeconds", 901, "out of range"),
    ("lambdaReservedConcurrency", 0, "out of range"),
    ("alarmEmail", "secops-at-example.com", "not an e-mail address"),
    ("memberAccounts", ["111122223333"], "not <12-digit account id>:<e-mail>"),
    ("memberAccounts", ["1111:sec@example.com"], "not <12-digit account id>:<e-mail>"),
    (
        "memberAccounts",
        ["111122223333:a@example.com", "111122223333:b@example.com"],
        "duplicate account ids: 111122223333",
    ),
    ("delegatedAdminAccountId", "abc", "not a 12-digit account id"),
]


@pytest.mark.parametrize(
    ("key", "value", "reason"), BAD_VALUES, ids=[f"{k}={v!r}"[:60] for k, v, _ in BAD_VALUES]
)
def test_bad_value_names_key_stack_file_and_allowed_values(
    key: str, value: Any, reason: str
) -> None:
    found = problems(**{key: value})
    assert len(found) == 1, found
    line = found[0]
    assert line.startswith(f"{NS}:{key} in Pulumi.us-east-1.yaml: got ")
    assert reason in line
    assert f"(allowed: {SPECS[key].allowed})" in line


def test_stack_region_must_be_home_or_linked() -> None:
    with pytest.raises(SettingsError) as raised:
        load(stack="ap-south-1", region="ap-south-1")
    (line,) = raised.value.problems
    assert line.startswith(f"{NS}:linkedRegions in Pulumi.ap-south-1.yaml")
    assert "ap-south-1 (aws:region) is neither homeRegion (us-east-1) nor linked" in line


def test_missing_stack_region_is_named() -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({f"{NS}:publicAccessCidrs": '["203.0.113.0/24"]'}.get, "prod")
    assert raised.value.problems[0].startswith("aws:region in Pulumi.prod.yaml")


def test_several_bad_values_are_reported_together_in_one_error() -> None:
    with pytest.raises(SettingsError) as raised:
        load(nodeMinSize=0, falcoMinimumPriority="loud", lambdaMemoryMb=1, alarmEmail="x")
    error = raised.value
    assert len(error.problems) == 4
    message = str(error)
    assert message.startswith("4 invalid setting(s) for stack 'us-east-1'; fix them in ")
    assert "Pulumi.us-east-1.yaml" in message.splitlines()[0]
    for key in ("nodeMinSize", "falcoMinimumPriority", "lambdaMemoryMb", "alarmEmail"):
        assert f"{NS}:{key} in Pulumi.us-east-1.yaml" in message


def test_settings_error_stops_the_program_without_a_stack_trace() -> None:
    # pulumi.RunError is reported as its message alone: the user sees the list, not Python.
    assert issubclass(SettingsError, pulumi.RunError)


def test_every_priority_named_in_the_allowed_text() -> None:
    for priority in FALCO_PRIORITIES:
        assert priority in SPECS["falcoMinimumPriority"].allowed


def test_coverage_defaults_and_a_grace_shorter_than_one_heartbeat_is_refused() -> None:
    settings = load()
    assert (
        settings.heartbeat_interval_minutes,
        settings.coverage_check_minutes,
        settings.coverage_grace_minutes,
        settings.coverage_drop_threshold_percent,
    ) == (15, 5, 30, 1)
    # Falco's first snapshot comes one interval after it starts: every new node would be silent.
    [line] = problems(heartbeatIntervalMinutes=60, coverageGraceMinutes=30)
    assert line.startswith(f"{NS}:coverageGraceMinutes in Pulumi.us-east-1.yaml: got 30")
