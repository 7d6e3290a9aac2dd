"""Issue 12 in the program: the occurrence table and the ingest role's access to it, the
function's storm settings, suppressions as Security Hub automation rules (and an expired one
stopping the program), and shadow rules named to the function."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest
from program_runner import EGRESS_CIDR, HOME_STACK, LINKED_STACK, run_program

from components.settings import SettingsError, load_settings
from components.suppressions import Pattern, criteria, parse_suppressions
from handlers import occurrences
from handlers.findings import generator_id
from handlers.names import PRODUCT_NAME, PROJECT

TODAY = datetime.date(2026, 11, 29)
TABLE = "aws:dynamodb/table:Table"
RULE = "aws:securityhub/automationRule:AutomationRule"
FUNCTION = "aws:lambda/function:Function"

SUPPRESSIONS = """
- name: ci-runner-shells
  rule: Terminal shell in container
  namespace: ci
  image: "registry.example.com/ci-runner*"
  process: "*gitlab-runner-helper*"
  reason: CI runners open shells to run jobs (SEC-1234)
  expires: 2099-03-31
- name: debug-curl
  rule: Curl in checkout
  reason: the team is tuning it
  expires: 2099-01-01
"""


def suppressions_file(tmp_path: Path, text: str = SUPPRESSIONS) -> str:
    (tmp_path / "suppressions.yaml").write_text(text)
    return "suppressions.yaml"


# -- parsing and validation ---------------------------------------------------------------------
def test_entries_become_criteria_on_distinct_automation_rule_fields() -> None:
    (ci, curl), problems = parse_suppressions(SUPPRESSIONS, TODAY)
    assert problems == []
    assert ci.image == Pattern("PREFIX", "registry.example.com/ci-runner")
    assert criteria(ci) == {
        "product_names": [{"comparison": "EQUALS", "value": PRODUCT_NAME}],
        "generator_ids": [
            {"comparison": "EQUALS", "value": generator_id("Terminal shell in container")}
        ],
        "resource_ids": [{"comparison": "CONTAINS", "value": "/ci/pods/"}],
        "resource_application_names": [
            {"comparison": "PREFIX", "value": "registry.example.com/ci-runner"}
        ],
        "resource_details_others": [
            {"comparison": "CONTAINS", "key": "Process", "value": "gitlab-runner-helper"}
        ],
    }
    assert set(criteria(curl)) == {"product_names", "generator_ids"}


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            "- {name: a, rule: r, reason: x, expires: 2020-01-01}",
            "entry 1 ('a'): expired on 2020-01-01",
        ),
        ("- {name: a, rule: r, expires: 2099-01-01}", "entry 1 ('a'): reason is required"),
        (
            "- {name: a, rule: r, reason: x, expires: soon}",
            "entry 1 ('a'): expires 'soon' is not a date",
        ),
        ("- {name: a, rule: r, reason: x, expires: 2099-01-01, process: 'bash*'}", "no PREFIX"),
        ("- {name: a, rule: r, reason: x, expires: 2099-01-01, image: '*x'}", "no suffix filter"),
        ("- {name: a, rule: r, reason: x, expires: 2099-01-01, namespace: Bad_NS}", "namespace"),
        ("- {name: a, rule: r, reason: x, expires: 2099-01-01, team: sec}", "unknown key 'team'"),
        ("- just text", "entry 1: not a mapping"),
        ("{a: 1}", "a YAML list of entries"),
    ],
)
def test_bad_entries_are_named_with_what_is_wrong(entry: str, expected: str) -> None:
    _, problems = parse_suppressions(entry, TODAY)
    assert any(expected in problem for problem in problems), problems


def test_an_expired_suppression_stops_the_program_naming_it_and_its_date(tmp_path: Path) -> None:
    path = suppressions_file(
        tmp_path,
        SUPPRESSIONS + "- {name: old-one, rule: r, reason: x, expires: 2026-11-28}\n",
    )
    config = {
        "aws:region": "us-east-1",
        f"{PROJECT}:publicAccessCidrs": json.dumps([EGRESS_CIDR]),
        f"{PROJECT}:suppressionsFile": path,
    }
    with pytest.raises(SettingsError) as raised:
        load_settings(config, "us-east-1", project_dir=tmp_path, today=TODAY)
    message = str(raised.value)
    assert "falco-securityhub:suppressionsFile" in message
    assert "entry 3 ('old-one'): expired on 2026-11-28" in message
    # The last day of a suppression is still a day it holds.
    assert load_settings(config, "us-east-1", project_dir=tmp_path, today=TODAY.replace(day=28))


# -- under mocks --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Any:
    directory = tmp_path_factory.mktemp("stack")
    (directory / "suppressions.yaml").write_text(SUPPRESSIONS)
    rules = directory / "rules.yaml"
    rules.write_text("- rule: Curl in checkout\n  condition: x\n  tags: [shadow]\n")
    return run_program(
        HOME_STACK,
        {
            f"{PROJECT}:suppressionsFile": str(directory / "suppressions.yaml"),
            f"{PROJECT}:falcoCustomRulesFile": str(rules),
            f"{PROJECT}:occurrenceWindowMinutes": "30",
        },
    )


def test_each_suppression_is_an_automation_rule_that_suppresses_with_its_reason(home: Any) -> None:
    rules = {r.inputs["ruleName"]: r.inputs for r in home.mocks.of_type(RULE)}
    assert set(rules) == {"falco-suppress-ci-runner-shells", "falco-suppress-debug-curl"}
    ci = rules["falco-suppress-ci-runner-shells"]
    [action] = ci["actions"]
    assert action["type"] == "FINDING_FIELDS_UPDATE"
    update = action["findingFieldsUpdate"]
    assert update["workflow"] == {"status": "SUPPRESSED"}
    assert "CI runners open shells to run jobs (SEC-1234)" in update["note"]["text"]
    assert "until 2099-03-31" in update["note"]["text"]
    assert len(update["note"]["text"]) <= 512
    assert ci["criteria"]["resourceIds"] == [{"comparison": "CONTAINS", "value": "/ci/pods/"}]
    assert ci["ruleStatus"] == "ENABLED"
    assert "hub-account" in home.dependencies[f"{RULE}::suppressions-ci-runner-shells"]


def test_linked_regions_declare_the_rules_too(tmp_path: Path) -> None:
    """CSPM automation rules apply only in their own Region."""
    path = str(tmp_path / suppressions_file(tmp_path))
    run = run_program(LINKED_STACK, {f"{PROJECT}:suppressionsFile": path})
    assert len(run.mocks.of_type(RULE)) == 2


def test_the_occurrence_table_is_on_demand_encrypted_and_expires(home: Any) -> None:
    table = home.mocks.one(TABLE, "storms-table").inputs
    assert table["billingMode"] == "PAY_PER_REQUEST"
    assert table["hashKey"] == occurrences.ID
    assert table["ttl"] == {"attributeName": occurrences.EXPIRES_AT, "enabled": True}
    assert table["serverSideEncryption"]["enabled"] is True
    assert table["serverSideEncryption"]["kmsKeyArn"]


def test_the_ingest_role_may_only_count(home: Any) -> None:
    policy = home.mocks.one("aws:iam/rolePolicy:RolePolicy", "storms-ingest").policy()
    statements = {s["Sid"]: s for s in policy["Statement"]}
    count = statements["CountBehaviourOccurrences"]
    assert sorted(count["Action"]) == ["dynamodb:PutItem", "dynamodb:UpdateItem"]
    assert count["Resource"].endswith(":table/falco-us-east-1-falco-occurrences")
    key = statements["UseTheTableKeyThroughDynamoDB"]
    assert key["Condition"]["StringEquals"]["kms:ViaService"] == "dynamodb.us-east-1.amazonaws.com"
    actions = [action for s in policy["Statement"] for action in s["Action"]]
    assert not [action for action in actions if action.endswith(":*") or action == "*"]


def test_the_function_counts_in_the_table_with_the_window_and_knows_its_shadow_rules(
    home: Any,
) -> None:
    variables = home.mocks.one(FUNCTION, "findings-function").inputs["environment"]["variables"]
    assert variables["OCCURRENCES_TABLE"] == "falco-us-east-1-falco-occurrences"
    assert variables["OCCURRENCE_WINDOW_SECONDS"] == "1800"
    assert json.loads(variables["SHADOW_RULES"]) == ["Curl in checkout"]


def test_falco_starts_after_the_table_and_the_role_access(home: Any) -> None:
    # Its first alerts must find the table and the ingest role's access to it.
    assert {"storms-table", "storms-ingest"} <= home.dependencies["runtime-security-falco"]


def test_shadow_rule_names_stay_within_the_functions_environment_limit() -> None:
    from components.findings_pipeline import MAX_SHADOW_RULES_TEXT, storm_environment

    rules = [f"Shadow rule number {n} " + "x" * 60 for n in range(100)]
    variables = storm_environment("c", 60, rules)
    named = json.loads(variables["SHADOW_RULES"])
    assert len(variables["SHADOW_RULES"]) <= MAX_SHADOW_RULES_TEXT
    assert named == rules[: len(named)]
    assert 0 < len(named) < len(rules)
    assert "OCCURRENCES_TABLE" not in storm_environment("c", None, ())
