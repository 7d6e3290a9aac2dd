"""Settings: each value is read strictly and every problem is reported at once, naming the key,
where the value came from (the stack file, or the default in Pulumi.yaml) and what is allowed.

No engine needed: ``load_settings`` takes the stack's config as the engine hands it over (full
keys, every value as text, lists JSON-encoded).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pulumi
import pytest
from program_runner import EGRESS_CIDR, PROJECT_DIR, REAL_STACK_FILES, stack_config, stack_name

from components.settings import (
    MemberAccount,
    Settings,
    SettingsError,
    engine_config,
    load_settings,
    render_pulumi_yaml,
    render_readme,
)

NS = "falco-securityhub"
STACK_FILE = "Pulumi.us-east-1.yaml"


def text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def config(region: str = "us-east-1", **overrides: Any) -> dict[str, str]:
    """What a user must fill in (region, egress CIDR), then ``overrides`` as the engine passes
    them."""
    values = {"aws:region": region, f"{NS}:publicAccessCidrs": json.dumps([EGRESS_CIDR])}
    values.update({f"{NS}:{key}": text(value) for key, value in overrides.items()})
    return values


def load(region: str = "us-east-1", **overrides: Any) -> Settings:
    return load_settings(config(region, **overrides), region)


def problems(**overrides: Any) -> list[str]:
    with pytest.raises(SettingsError) as raised:
        load(**overrides)
    return raised.value.problems


# -- what follows from the model -----------------------------------------------------------------
def test_pulumi_yaml_config_block_is_generated_from_the_model() -> None:
    current = (PROJECT_DIR / "Pulumi.yaml").read_text(encoding="utf-8")
    assert current == render_pulumi_yaml(current), "run `python -m components.settings`"


def test_readme_settings_table_is_generated_from_the_model() -> None:
    current = (PROJECT_DIR / "README.md").read_text(encoding="utf-8")
    assert current == render_readme(current), "run `python -m components.settings`"


@pytest.mark.parametrize("stack_file", REAL_STACK_FILES, ids=lambda p: p.name)
def test_every_shipped_stack_file_loads_once_its_egress_cidr_is_set(stack_file: Path) -> None:
    values = {key: text(value) for key, value in stack_config(stack_file).items()}
    if values.get(f"{NS}:endpointPublicAccess") != "false":
        values[f"{NS}:publicAccessCidrs"] = json.dumps([EGRESS_CIDR])
    settings = load_settings(values, stack_name(stack_file), project_dir=PROJECT_DIR)
    assert settings.region == values["aws:region"]


# -- good values ---------------------------------------------------------------------------------
def test_defaults_need_only_the_region_and_the_egress_cidr() -> None:
    settings = load(region="eu-west-1")
    assert settings.cluster_name == "falco-eu-west-1"
    assert settings.tags == {"Project": NS, "Stack": "eu-west-1"}
    assert settings.linked_regions == ()  # all regions
    assert settings.lambda_reserved_concurrency is None
    assert settings.falco_custom_rules is None


GOOD_VALUES: list[tuple[str, Any, str, Any]] = [
    ("linkedRegions", ["eu-west-1", "ap-southeast-2"], "linked_regions",
     ("eu-west-1", "ap-southeast-2")),
    ("vpcCidr", "172.16.0.0/20", "vpc_cidr", "172.16.0.0/20"),
    ("availabilityZoneCount", 4, "availability_zone_count", 4),
    ("natGateways", "single", "nat_gateways", "single"),
    ("vpcFlowLogs", False, "vpc_flow_logs", False),
    ("clusterName", "c" * 49, "cluster_name", "c" * 49),
    ("falcoMinimumPriority", "info", "falco_minimum_priority", "Informational"),
    ("falcoMinimumPriority", "WARNING", "falco_minimum_priority", "Warning"),
    ("findingsMinimumPriority", "info", "findings_minimum_priority", "Informational"),
    ("falcoChartVersion", "9.2.0", "falco_chart_version", "9.2.0"),
    ("lambdaReservedConcurrency", 5, "lambda_reserved_concurrency", 5),
    ("lambdaReservedConcurrency", 0, "lambda_reserved_concurrency", None),
    ("alarmEmail", "", "alarm_email", None),
    ("alarmEmail", "secops@example.com", "alarm_email", "secops@example.com"),
    ("podIdentityAgentVersion", "v1.3.8-eksbuild.2", "pod_identity_agent_version",
     "v1.3.8-eksbuild.2"),
    ("publicAccessCidrs", ["203.0.0.0/16"], "public_access_cidrs", ("203.0.0.0/16",)),
    ("adminRoleArns", ["arn:aws:iam::123456789012:role/team/admin"], "admin_role_arns",
     ("arn:aws:iam::123456789012:role/team/admin",)),
    ("triagePrincipalArns", ["arn:aws:iam::111122223333:root"], "triage_principal_arns",
     ("arn:aws:iam::111122223333:root",)),
    ("memberAccounts", ["111122223333:sec@example.com"], "member_accounts",
     (MemberAccount("111122223333", "sec@example.com"),)),
    ("delegatedAdminAccountId", "111122223333", "delegated_admin_account_id", "111122223333"),
    ("logRetentionDays", 3653, "log_retention_days", 3653),
]  # fmt: skip


@pytest.mark.parametrize(("key", "value", "attr", "expected"), GOOD_VALUES)
def test_good_value_reaches_the_components(key: str, value: Any, attr: str, expected: Any) -> None:
    assert getattr(load(**{key: value}), attr) == expected


def test_the_stack_region_need_not_be_listed_in_linked_regions() -> None:
    # A restricted list is checked against the home stack's list (StackReference), not here.
    assert load(region="ap-south-1", linkedRegions=["eu-west-1"]).region == "ap-south-1"


def test_open_public_endpoint_needs_the_explicit_opt_in() -> None:
    settings = load(publicAccessCidrs=["0.0.0.0/0"], allowPublicEndpointFromAnywhere=True)
    assert settings.public_access_cidrs == ("0.0.0.0/0",)


def test_private_endpoint_only_needs_no_cidrs() -> None:
    settings = load(endpointPublicAccess=False, publicAccessCidrs=[])
    assert settings.public_access_cidrs == ()


def test_graviton_instance_types_with_the_arm_ami() -> None:
    settings = load(nodeAmiType="AL2023_ARM_64_STANDARD", nodeInstanceTypes=["m7g.large"])
    assert settings.node_instance_types == ("m7g.large",)


def test_custom_rules_file_is_read_relative_to_the_project(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "custom.yaml").write_text("- rule: x\n  condition: evt.type=open\n")
    values = config(falcoCustomRulesFile="rules/custom.yaml")
    settings = load_settings(values, "us-east-1", project_dir=tmp_path)
    assert settings.falco_custom_rules is not None
    assert "evt.type=open" in settings.falco_custom_rules


def test_engine_config_includes_the_clis_pulumi_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps({f"{NS}:falcoMinimumPriorty": "Warning"}))
    with pytest.raises(SettingsError, match="did you mean falcoMinimumPriority"):
        load_settings({**config(), **engine_config()}, "us-east-1")


# -- bad values: one line each, naming key, stack file and what is allowed -----------------------
BAD_VALUES: list[tuple[str, Any, str]] = [
    ("homeRegion", "us-east", "not an AWS region name"),
    ("linkedRegions", ["us-east-1"], "contains the home region us-east-1"),
    ("linkedRegions", ["eu-west-1", "eu-west-1"], "duplicates: eu-west-1"),
    ("linkedRegions", ["eu_west_1"], "eu_west_1: not an AWS region name"),
    ("linkedRegions", ["cn-north-1"], "not in us-east-1's partition"),
    ("vpcCidr", "10.0.0.0/33", "not an IPv4 network"),
    ("vpcCidr", "10.0.0.1/16", "not an IPv4 network"),
    ("vpcCidr", "8.8.0.0/16", "not inside 10.0.0.0/8"),
    ("vpcCidr", "10.0.0.0/24", "prefix length outside /16../20"),
    ("availabilityZoneCount", 1, "out of range"),
    ("availabilityZoneCount", 5, "out of range"),
    ("natGateways", "perAZ", "not one of the allowed values"),
    ("clusterName", "falco cluster", "not a valid EKS cluster name"),
    ("clusterName", "c" * 50, "too long for the findings function name"),
    ("kubernetesVersion", "1.35.2", "not a Kubernetes minor version"),
    ("nodeAmiType", "AL2_x86_64", "not one of the allowed values"),
    ("nodeInstanceTypes", [], "empty"),
    ("nodeInstanceTypes", ["large"], "large: not an instance type"),
    ("nodeInstanceTypes", ["m7g.large"], "m7g.large cannot boot AL2023_x86_64_STANDARD"),
    ("nodeMinSize", 0, "out of range"),
    ("nodeDesiredSize", 1, "below nodeMinSize (2)"),
    ("nodeMaxSize", 1, "below nodeDesiredSize (2)"),
    ("nodeDiskSizeGb", 10, "out of range"),
    ("publicAccessCidrs", ["0.0.0.0/0"], "set allowPublicEndpointFromAnywhere to true"),
    ("publicAccessCidrs", ["10.0.0.0/8"], "a private range"),
    ("publicAccessCidrs", ["100.24.0.7/24"], "not an IPv4 network"),
    ("publicAccessCidrs", [f"100.24.{i}.0/24" for i in range(41)], "41 entries"),
    ("adminRoleArns", ["arn:aws:iam::12345:role/admin"], "not an IAM principal ARN"),
    ("adminRoleArns", ["arn:aws:sts::123456789012:assumed-role/a/me"], "an STS session"),
    ("adminRoleArns", ["arn:aws:iam::123456789012:root"], "not an IAM principal ARN"),
    ("triagePrincipalArns", ["admin"], "not an IAM principal ARN"),
    ("podIdentityAgentVersion", "latest", "not an add-on version"),
    ("falcoChartVersion", "9.1.0-rc.1", "not an exact chart version"),
    ("falcoChartVersion", "latest", "not an exact chart version"),
    ("fluentBitChartVersion", "^0.54", "not an exact chart version"),
    ("falcoMinimumPriority", "High", "unknown Falco priority"),
    ("findingsMinimumPriority", "severe", "unknown Falco priority"),
    ("falcoCustomRulesFile", "rules/missing.yaml", "cannot be read"),
    ("falcoCustomRulesFile", "rules.txt", "not a .yaml/.yml file"),
    ("logRetentionDays", 100, "not one of the allowed values"),
    ("lambdaMemoryMb", 64, "out of range"),
    ("lambdaTimeoutSeconds", 901, "out of range"),
    ("lambdaReservedConcurrency", -1, "out of range"),
    ("alarmEmail", "secops-at-example.com", "not an e-mail address"),
    ("memberAccounts", ["111122223333"], "not <12-digit account id>:<e-mail>"),
    ("memberAccounts", ["111122223333: sec@example.com"], "not <12-digit account id>:<e-mail>"),
    ("memberAccounts", ["111122223333:a@example.com", "111122223333:b@example.com"],
     "duplicates: 111122223333"),
    ("delegatedAdminAccountId", "abc", "not a 12-digit account id"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("key", "value", "reason"), BAD_VALUES, ids=[f"{k}={v!r}"[:60] for k, v, _ in BAD_VALUES]
)
def test_bad_value_names_key_stack_file_and_what_is_allowed(
    key: str, value: Any, reason: str
) -> None:
    (line,) = problems(**{key: value})
    assert line.startswith(f"{NS}:{key} ({STACK_FILE}): got ")
    assert reason in line
    assert "(allowed: " in line


@pytest.mark.parametrize("cidr", ["192.0.2.0/24", "198.51.100.128/25", "203.0.113.7/32"])
def test_documentation_ranges_are_refused_asking_for_the_real_egress_cidr(cidr: str) -> None:
    (line,) = problems(publicAccessCidrs=[EGRESS_CIDR, cidr])
    assert f"{cidr}: a documentation range" in line
    assert "put in the real egress CIDR" in line


# Pulumi hands every value over as text: only the exact text of the setting's type is accepted.
STRICTNESS: list[tuple[str, str, str]] = [
    ("vpcFlowLogs", "yes", "not a boolean"),
    ("vpcFlowLogs", "True", "not a boolean"),
    ("vpcFlowLogs", "1", "not a boolean"),
    ("nodeMinSize", "2.0", "not an integer"),
    ("nodeMinSize", " 2", "not an integer"),
    ("nodeMinSize", "true", "not an integer"),
    ("nodeMinSize", "two", "not an integer"),
    ("linkedRegions", "eu-west-1", "not a list of strings"),
    ("linkedRegions", '{"region": "eu-west-1"}', "not a list of strings"),
    ("nodeInstanceTypes", "[1]", "not a list of strings"),
]


@pytest.mark.parametrize(("key", "raw", "reason"), STRICTNESS)
def test_values_are_read_strictly_by_type(key: str, raw: str, reason: str) -> None:
    (line,) = problems(**{key: raw})
    assert line.startswith(f"{NS}:{key} ({STACK_FILE}): got {json.dumps(raw)}: {reason}")


def test_a_bad_default_is_attributed_to_pulumi_yaml() -> None:
    # The engine merges Pulumi.yaml's defaults into the stack's config: a value equal to the
    # default is reported as the default.
    values = config()
    del values[f"{NS}:publicAccessCidrs"]
    with pytest.raises(SettingsError) as raised:
        load_settings(values, "us-east-1")
    (line,) = raised.value.problems
    assert line.startswith(f"{NS}:publicAccessCidrs (default in Pulumi.yaml): got []")


def test_unknown_keys_in_the_project_namespace_name_the_closest_setting() -> None:
    values = {**config(), f"{NS}:falcoMinimumPriorty": "Warning", f"{NS}:flux": "on"}
    with pytest.raises(SettingsError) as raised:
        load_settings(values, "us-east-1")
    assert raised.value.problems == [
        f"{NS}:falcoMinimumPriorty ({STACK_FILE}): not a setting of this project; "
        "did you mean falcoMinimumPriority?",
        f"{NS}:flux ({STACK_FILE}): not a setting of this project; "
        "see the README's Settings section",
    ]


def test_other_namespaces_are_left_alone() -> None:
    values = {**config(), "aws:profile": "x", "kubernetes:context": "y", "aws:defaultTags": "{}"}
    assert load_settings(values, "us-east-1").region == "us-east-1"


def test_missing_stack_region_is_named() -> None:
    values = config()
    del values["aws:region"]
    with pytest.raises(SettingsError) as raised:
        load_settings(values, "prod")
    assert raised.value.problems[0].startswith("aws:region (Pulumi.prod.yaml)")


def test_every_problem_is_reported_at_once_in_one_error() -> None:
    values = {
        **config(nodeMinSize=0, falcoMinimumPriority="loud", vpcFlowLogs="yes", nodeMaxSize=1),
        f"{NS}:nodeMinSiz": "1",
    }
    with pytest.raises(SettingsError) as raised:
        load_settings(values, "us-east-1")
    error = raised.value
    assert len(error.problems) == 5
    message = str(error)
    assert message.startswith(
        f"5 invalid setting(s) for stack 'us-east-1'; fix them in {STACK_FILE}"
    )
    for key in ("nodeMinSiz", "nodeMinSize", "falcoMinimumPriority", "vpcFlowLogs", "nodeMaxSize"):
        assert f"  - {NS}:{key} ({STACK_FILE})" in message
    # RunError: the CLI prints the list without a Python stack trace.
    assert isinstance(error, pulumi.RunError)


def test_audit_detections_default_to_auto() -> None:
    assert load().audit_detections == "auto"
    assert load(auditDetections="off").audit_detections == "off"


def test_an_unknown_audit_detections_mode_is_named() -> None:
    (problem,) = problems(auditDetections="sometimes")
    assert problem.startswith(f'{NS}:auditDetections (Pulumi.us-east-1.yaml): got "sometimes"')
    assert "`auto`, `on` or `off`" in problem


def test_coverage_defaults_and_a_grace_shorter_than_one_heartbeat_is_refused() -> None:
    settings = load()
    assert (
        settings.heartbeat_interval_minutes,
        settings.coverage_check_minutes,
        settings.coverage_grace_minutes,
        settings.coverage_drop_threshold_percent,
    ) == (15, 5, 30, 1)
    # Falco's first snapshot comes one interval after it starts: every new node would be silent.
    [line] = problems(heartbeatIntervalMinutes="60", coverageGraceMinutes="31")
    assert line.startswith(f"{NS}:coverageGraceMinutes (Pulumi.us-east-1.yaml): got 31")


def test_a_custom_rules_item_that_is_not_a_mapping_is_named(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text("- rule: a\n  condition: x\n- just text\n")
    with pytest.raises(SettingsError) as raised:
        load_settings(config(falcoCustomRulesFile="rules.yaml"), "us-east-1", project_dir=tmp_path)
    (problem,) = raised.value.problems
    assert problem.startswith(f"{NS}:falcoCustomRulesFile (Pulumi.us-east-1.yaml)")
    assert "item 2 is not a rule, macro or list" in problem
