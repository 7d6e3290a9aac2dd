"""The real program, for every stack file, passes its own policy pack.

Each Pulumi.<stack>.yaml runs under the mocks (tests/program_runner.py) and every policy of the
pack is applied to what the program declared: resource policies to each resource's inputs (what a
preview sends), stack policies to the resources' outputs. The stack files' documentation CIDR is
replaced by a public one, as a user must before the first `pulumi up`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from program_runner import PROJECT, PROJECT_DIR, ProgramRun, run_program

from components.runtime_security import FALCO_RULES_VERSION
from components.settings import SettingsError, load_settings
from policy.ci_stacks import stacks
from policy.posture import RESOURCE_POLICIES, STACK_POLICIES, Resource
from policy.stack_config import pack_config

STACKS = sorted(
    p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in PROJECT_DIR.glob("Pulumi.*.yaml")
)
# A public range (not a documentation one) standing in for a CI runner's egress.
EGRESS_CIDR = "18.204.0.0/16"
OVERRIDES = {f"{PROJECT}:publicAccessCidrs": [EGRESS_CIDR]}

# What each policy must have seen in every stack, so a pass is not a pass over nothing.
GOVERNED = {
    "aws:kms/key:Key",
    "aws:cloudwatch/logGroup:LogGroup",
    "aws:sqs/queue:Queue",
    "aws:sns/topic:Topic",
    "eks:index:Cluster",
    "aws:iam/role:Role",
    "aws:iam/rolePolicy:RolePolicy",
    "aws:lambda/function:Function",
    "aws:lambda/permission:Permission",
    "kubernetes:helm.sh/v3:Release",
}


def policy_config(run: ProgramRun, stack: str) -> dict:
    project = yaml.safe_load((PROJECT_DIR / "Pulumi.yaml").read_text(encoding="utf-8"))
    stack_file = {"config": {k: v for k, v in run.config.items() if k.startswith(f"{PROJECT}:")}}
    return pack_config(project, stack_file)


def violations(run: ProgramRun, config: dict) -> list[str]:
    found = []
    for resource in run.mocks.resources:
        for policy in RESOURCE_POLICIES:
            for message in policy.check(
                resource.type, resource.inputs, config.get(policy.name, {})
            ):
                found.append(f"{policy.name}: {resource.type} {resource.name}: {message}")
    stack = [Resource(r.type, r.name, r.outputs, urn=r.name) for r in run.mocks.resources]
    for policy in STACK_POLICIES:
        for message, _ in policy.check(stack, config.get(policy.name, {})):
            found.append(f"{policy.name}: {message}")
    return found


@pytest.fixture(scope="module", params=STACKS)
def stack_run(request: pytest.FixtureRequest) -> tuple[str, ProgramRun]:
    return request.param, run_program(request.param, OVERRIDES)


def test_there_are_stacks_to_check() -> None:
    assert len(STACKS) >= 2
    assert all((Path(PROJECT_DIR) / f"Pulumi.{s}.yaml").is_file() for s in STACKS)


def test_every_stack_passes_the_pack(stack_run: tuple[str, ProgramRun]) -> None:
    stack, run = stack_run
    assert run.mocks.types() >= GOVERNED, GOVERNED - run.mocks.types()
    assert violations(run, policy_config(run, stack)) == []


def test_the_pack_would_catch_a_weakened_program(stack_run: tuple[str, ProgramRun]) -> None:
    """The same run with one resource weakened fails: the pass above is not vacuous."""
    _, run = stack_run
    key = run.mocks.of_type("aws:kms/key:Key")[0]
    key.inputs["enableKeyRotation"] = False
    try:
        assert any("kms-key-rotation" in v for v in violations(run, {}))
    finally:
        key.inputs["enableKeyRotation"] = True


def test_the_opt_in_setting_reaches_the_pack() -> None:
    stack = STACKS[0]
    open_endpoint = {
        f"{PROJECT}:publicAccessCidrs": ["0.0.0.0/0"],
        f"{PROJECT}:allowPublicEndpointFromAnywhere": True,
    }
    run = run_program(stack, open_endpoint)
    config = policy_config(run, stack)
    assert config["eks-public-endpoint-restricted"]["allowPublicEndpointFromAnywhere"] is True
    assert violations(run, config) == []
    # Without the policy config (a preview that forgot it) the open endpoint is a violation.
    assert any(v.startswith("eks-public-endpoint-restricted") for v in violations(run, {}))


def test_falco_installs_exactly_the_pinned_rules(stack_run: tuple[str, ProgramRun]) -> None:
    _, run = stack_run
    falco = run.mocks.one("kubernetes:helm.sh/v3:Release", "runtime-security-falco")
    falcoctl = falco.inputs["values"]["falcoctl"]
    assert falcoctl["artifact"]["follow"]["enabled"] is False
    assert falcoctl["config"]["artifact"]["install"]["refs"] == [
        f"falco-rules:{FALCO_RULES_VERSION}"
    ]


@pytest.mark.parametrize("version", ["5", "5.1", "latest", "", "5.1.0-rc1"])
def test_a_floating_rules_version_is_refused_by_the_settings(version: str) -> None:
    config = {"aws:region": "eu-west-1", "falco-securityhub:existingClusterName": "c1"}
    config["falco-securityhub:falcoRulesVersion"] = version
    with pytest.raises(SettingsError, match="falcoRulesVersion"):
        load_settings(config, "eu-west-1")


def test_the_pack_passes_with_every_optional_resource_turned_on() -> None:
    """Settings that add resources (alarm e-mail, triage role, standards, no public endpoint)."""
    stack = stacks()[0]["stack"]  # the home region's: the triage role exists only there
    settings = {
        **OVERRIDES,
        f"{PROJECT}:alarmEmail": "security@example.com",
        f"{PROJECT}:triagePrincipalArns": ["arn:aws:iam::123456789012:role/triage"],
        f"{PROJECT}:enableDefaultStandards": True,
        f"{PROJECT}:natGateways": "single",
    }
    run = run_program(stack, settings)
    assert run.mocks.of_type("aws:sns/topicSubscription:TopicSubscription")
    assert any("triage" in r.name for r in run.mocks.of_type("aws:iam/role:Role"))
    assert violations(run, policy_config(run, stack)) == []
    private = run_program(
        stack,
        {f"{PROJECT}:endpointPublicAccess": False, f"{PROJECT}:publicAccessCidrs": []},
    )
    assert violations(private, policy_config(private, stack)) == []
