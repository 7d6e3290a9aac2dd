"""The whole program and the audit Falco: both stacks declare it with its least-privilege role,
and the auditDetections setting turns it off.
"""

from __future__ import annotations

import pytest
import yaml
from conftest import ACCOUNT_ID
from program_runner import HOME_STACK, LINKED_STACK, ProgramRun, run_program

from components import audit_detection as ad

NS = "falco-securityhub"
RELEASE = "kubernetes:helm.sh/v3:Release"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
ASSOCIATION = "aws:eks/podIdentityAssociation:PodIdentityAssociation"


@pytest.fixture(scope="module", params=[HOME_STACK, LINKED_STACK], ids=lambda p: p.name)
def program(request: pytest.FixtureRequest) -> ProgramRun:
    return run_program(request.param)


def test_every_stack_runs_the_audit_falco_on_its_cluster(program: ProgramRun) -> None:
    region = program.config["aws:region"]
    cluster = f"falco-{region}"
    release = program.mocks.one(RELEASE, "audit-detection-falco")
    assert release.inputs["name"] == ad.AUDIT_RELEASE
    (eks,) = [
        p for p in release.inputs["values"]["falco"]["plugins"] if p["name"] == "k8saudit-eks"
    ]
    assert eks["open_params"] == cluster
    assert eks["init_config"]["region"] == region

    policy = program.mocks.one(ROLE_POLICY, "audit-detection-read-audit-log").policy()
    group = f"arn:aws:logs:{region}:{ACCOUNT_ID}:log-group:/aws/eks/{cluster}/cluster"
    assert [s["Resource"] for s in policy["Statement"]] == [[group, f"{group}:*"]]

    association = program.mocks.one(ASSOCIATION, "audit-detection-identity")
    assert association.inputs["serviceAccount"] == ad.AUDIT_SERVICE_ACCOUNT


def test_the_audit_falco_waits_for_fluent_bit(program: ProgramRun) -> None:
    needs = {urn.rsplit("::", 1)[-1] for urn in program.dependencies["audit-detection-falco"]}
    assert "runtime-security-fluent-bit" in needs


def test_audit_detections_off_declares_no_audit_falco() -> None:
    run = run_program(LINKED_STACK, {f"{NS}:auditDetections": "off"})
    assert not [r for r in run.mocks.of_type(RELEASE) if r.name == "audit-detection-falco"]
    assert not [r for r in run.mocks.of_type(ASSOCIATION) if r.name.startswith("audit-")]


def test_each_falco_loads_the_part_of_the_custom_rules_it_can_load() -> None:
    run = run_program(
        HOME_STACK, {f"{NS}:falcoCustomRulesFile": "tests/fixtures/custom_rules_mixed.yaml"}
    )

    def loaded(release: str) -> list[str]:
        values = run.mocks.one(RELEASE, release).inputs["values"]
        items = yaml.safe_load(values["customRules"]["custom-rules.yaml"])
        return [item.get("rule") or item.get("macro") or item.get("list") for item in items]

    assert loaded("runtime-security-falco") == [
        "Shell in payments namespace",
        "user_read_sensitive_file_conditions",
    ]
    assert loaded("audit-detection-falco") == ["Secret read in payments", "allowed_k8s_users"]
