"""The GitHub workflows do what docs/deploy.md promises (schema and security: make test runs
check-jsonschema and zizmor on them)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from program_runner import PROJECT_DIR

from components.runtime_security import FALCO_CHART_VERSION

WORKFLOWS = PROJECT_DIR / ".github" / "workflows"
# The falco chart's appVersion per chart version: the image that validates custom rules must be
# the Falco the chart installs. Add a row when bumping the chart.
FALCO_APP_VERSION = {"9.1.0": "0.44.1"}


def load(name: str) -> dict[str, Any]:
    # PyYAML reads the key `on` as True.
    return yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))


def steps_using(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [s for s in job["steps"] if s.get("uses", "").startswith(f"{action}@")]


def test_every_workflow_pins_actions_to_commits_and_drops_credentials() -> None:
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert {f.name for f in files} >= {"test.yml", "preview.yml", "deploy.yml"}
    for file in files:
        workflow = load(file.name)
        assert workflow["permissions"] == {}, file.name
        for job_name, job in workflow["jobs"].items():
            assert "permissions" in job, f"{file.name}:{job_name}"
            for step in job["steps"]:
                if "uses" in step:
                    ref = step["uses"].split("@", 1)[1]
                    assert re.fullmatch(r"[0-9a-f]{40}", ref), step["uses"]
            for checkout in steps_using(job, "actions/checkout"):
                assert checkout["with"]["persist-credentials"] is False
            # Only jobs that assume an AWS role get an OIDC token.
            aws = steps_using(job, "aws-actions/configure-aws-credentials")
            assert (job["permissions"].get("id-token") == "write") == bool(aws), job_name


@pytest.mark.parametrize(("name", "command"), [("preview.yml", "preview"), ("deploy.yml", "up")])
def test_every_pulumi_run_applies_the_policy_pack(name: str, command: str) -> None:
    runs = [
        step for job in load(name)["jobs"].values() for step in steps_using(job, "pulumi/actions")
    ]
    assert runs
    for step in runs:
        assert step["with"]["command"] == command
        assert step["with"]["policyPacks"] == "policy"
        assert step["with"]["policyPackConfigs"] == "policy-config.json"


def test_previews_are_commented_for_every_stack_file() -> None:
    jobs = load("preview.yml")["jobs"]
    preview = jobs["preview"]
    (step,) = steps_using(preview, "pulumi/actions")
    assert step["with"]["comment-on-pr"] is True
    assert step["with"]["diff"] is True
    assert "needs.stacks.outputs.all" in preview["strategy"]["matrix"]["include"]
    assert preview["permissions"]["pull-requests"] == "write"


def test_deploys_wait_for_the_protected_environment_and_the_home_region() -> None:
    jobs = load("deploy.yml")["jobs"]
    assert load("deploy.yml")[True] == {"push": {"branches": ["main"]}}
    assert jobs["up-home"]["environment"] == jobs["up-linked"]["environment"] == "production"
    assert "up-home" in jobs["up-linked"]["needs"]


def test_custom_rules_are_validated_by_the_falco_the_chart_installs() -> None:
    workflow = load("preview.yml")
    expected = FALCO_APP_VERSION[FALCO_CHART_VERSION]
    assert workflow["env"]["FALCO_IMAGE"] == f"falcosecurity/falco:{expected}"
    script = next(
        step["run"]
        for step in workflow["jobs"]["falco-rules"]["steps"]
        if "falco -V" in step.get("run", "")
    )
    assert "-V /etc/falco/falco_rules.yaml" in script
