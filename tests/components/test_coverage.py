"""SensorCoverage under Pulumi mocks, the heartbeat chart values, and the whole program's alarms.

What a reviewer checks in `pulumi preview --diff`: the table is on demand, encrypted with the
component's own key and ages out gone nodes; each role can do only its part; the schedule can
only invoke the checker; the coverage and liveness alarms treat silence as a problem.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws
import pytest
from conftest import ACCOUNT_ID, RecordedResource, RecordingMocks, configure_pulumi_mocks
from program_runner import HOME_STACK, LINKED_STACK, run_program

from components import runtime_security
from components.coverage import (
    CHECKER_MODULES,
    HANDLER,
    SensorCoverage,
    SensorCoverageArgs,
)
from components.findings_pipeline import PROJECT_ROOT

CLUSTER = "falco-demo"
CHECKER = f"{CLUSTER}-falco-coverage"
TABLE = f"{CLUSTER}-falco-heartbeats"
ALERT_GROUP = f"/falco/{CLUSTER}/alerts"
REGION = "us-east-1"
TABLE_ARN = f"arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/{TABLE}"

ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"


@dataclass
class Declared:
    mocks: RecordingMocks

    def one(self, typ: str, name: str | None = None) -> RecordedResource:
        return self.mocks.one(typ, name)

    def alarm(self, name: str) -> RecordedResource:
        [alarm] = [a for a in self.mocks.of_type(ALARM) if a.inputs["name"] == name]
        return alarm

    def statements(self, policy_name: str) -> dict[str, dict[str, Any]]:
        policy = self.one(ROLE_POLICY, policy_name).policy()
        return {s["Sid"]: s for s in policy["Statement"]}


def declare(mocks: RecordingMocks, **overrides: Any) -> Declared:
    @pulumi.runtime.test
    def run() -> Any:
        hub = aws.securityhub.Account("hub")
        args = SensorCoverageArgs(
            cluster_name=CLUSTER,
            region=REGION,
            account_id=ACCOUNT_ID,
            partition="aws",
            alert_log_group_name=ALERT_GROUP,
            ingest_role_name="findings-role-name",
            alarm_topic_arn=f"arn:aws:sns:{REGION}:{ACCOUNT_ID}:alarms",
            security_hub=hub,
            heartbeat_interval_minutes=15,
            check_interval_minutes=5,
            grace_minutes=30,
            drop_threshold_percent=1,
            log_retention_days=90,
            tags={"Project": "falco-securityhub"},
        )
        for key, value in overrides.items():
            setattr(args, key, value)
        coverage = SensorCoverage("coverage", args)
        return pulumi.Output.all(coverage.table_name, coverage.checker_function_name)

    run()
    return Declared(mocks)


@pytest.fixture
def declared(pulumi_mocks: RecordingMocks) -> Declared:
    return declare(pulumi_mocks)


# -- the heartbeat table ---------------------------------------------------------------------------
def test_table_is_on_demand_keyed_by_cluster_and_node_with_a_ttl(declared: Declared) -> None:
    table = declared.one("aws:dynamodb/table:Table").inputs
    assert table["name"] == TABLE
    assert table["billingMode"] == "PAY_PER_REQUEST"
    assert (table["hashKey"], table["rangeKey"]) == ("cluster", "node")
    assert table["ttl"] == {"attributeName": "expires_at", "enabled": True}


def test_table_is_encrypted_with_the_components_own_key(declared: Declared) -> None:
    key = declared.one("aws:kms/key:Key")
    sse = declared.one("aws:dynamodb/table:Table").inputs["serverSideEncryption"]
    assert sse == {"enabled": True, "kmsKeyArn": key.outputs["arn"]}
    assert key.inputs["enableKeyRotation"] is True


def test_key_is_used_by_dynamodb_and_the_checkers_log_group_only(declared: Declared) -> None:
    statements = declared.one("aws:kms/key:Key").policy()["Statement"]
    services = {
        s["Sid"]: s["Principal"].get("Service") for s in statements if "Service" in s["Principal"]
    }
    assert services == {
        "DynamoDBDescribesTheKey": "dynamodb.amazonaws.com",
        "CloudWatchLogsForTheChecker": f"logs.{REGION}.amazonaws.com",
    }
    [logs] = [s for s in statements if s["Sid"] == "CloudWatchLogsForTheChecker"]
    assert logs["Condition"]["ArnEquals"]["kms:EncryptionContext:aws:logs:arn"] == (
        f"arn:aws:logs:{REGION}:{ACCOUNT_ID}:log-group:/aws/lambda/{CHECKER}"
    )
    [describe] = [s for s in statements if s["Sid"] == "DynamoDBDescribesTheKey"]
    assert all(a.startswith(("kms:Describe", "kms:Get", "kms:List")) for a in describe["Action"])


def test_ingest_lambda_may_only_update_heartbeats_and_read_instance_ids(
    declared: Declared,
) -> None:
    policy = declared.one(ROLE_POLICY, "coverage-ingest-heartbeats")
    assert policy.inputs["role"] == "findings-role-name"
    statements = declared.statements("coverage-ingest-heartbeats")
    write, read = statements["RecordHeartbeats"], statements["ReadNodeInstances"]
    assert (write["Action"], write["Resource"]) == ("dynamodb:UpdateItem", TABLE_ARN)
    assert (read["Action"], read["Resource"]) == ("dynamodb:Query", TABLE_ARN)
    for statement in (write, read):
        assert statement["Condition"]["ForAllValues:StringEquals"]["dynamodb:LeadingKeys"] == [
            CLUSTER
        ]
    assert (
        "instance_id" not in write["Condition"]["ForAllValues:StringEquals"]["dynamodb:Attributes"]
    )
    assert read["Condition"]["ForAllValues:StringEquals"]["dynamodb:Attributes"] == [
        "cluster",
        "node",
        "instance_id",
    ]
    kms = statements["UseTheTableKeyThroughDynamoDB"]
    assert kms["Condition"] == {
        "StringEquals": {"kms:ViaService": f"dynamodb.{REGION}.amazonaws.com"}
    }


# -- the checker -----------------------------------------------------------------------------------
def test_checker_role_reads_only_what_the_check_needs(declared: Declared) -> None:
    statements = declared.statements("coverage-checker-policy")
    actions = {sid: s["Action"] for sid, s in statements.items()}
    assert actions == {
        "WriteOwnLogStreams": ["logs:CreateLogStream", "logs:PutLogEvents"],
        "ReadTheNodeInventory": "ec2:DescribeInstances",
        "ReadHeartbeatsAndRecordInstances": ["dynamodb:Query", "dynamodb:UpdateItem"],
        "UseTheTableKeyThroughDynamoDB": [
            "kms:Decrypt",
            "kms:Encrypt",
            "kms:GenerateDataKey*",
            "kms:DescribeKey",
        ],
        "ImportCoverageFindings": "securityhub:BatchImportFindings",
        "ReadOpenCoverageFindings": "securityhub:GetFindings",
        "SendFailedChecksToQueue": "sqs:SendMessage",
        "EncryptFailedChecksForQueue": ["kms:GenerateDataKey", "kms:Decrypt"],
    }
    inventory = statements["ReadTheNodeInventory"]
    assert inventory["Condition"] == {"StringEquals": {"aws:RequestedRegion": REGION}}
    assert statements["ImportCoverageFindings"]["Resource"] == (
        f"arn:aws:securityhub:{REGION}:{ACCOUNT_ID}:product/{ACCOUNT_ID}/default"
    )
    assert statements["ReadOpenCoverageFindings"]["Resource"] == (
        f"arn:aws:securityhub:{REGION}:{ACCOUNT_ID}:hub/default"
    )
    assert statements["ReadHeartbeatsAndRecordInstances"]["Resource"] == TABLE_ARN


def test_checker_function_is_configured_from_the_settings_and_fails_into_its_queue(
    declared: Declared,
) -> None:
    function = declared.one("aws:lambda/function:Function")
    assert (function.inputs["name"], function.inputs["handler"]) == (CHECKER, HANDLER)
    assert function.inputs["environment"]["variables"] == {
        "CLUSTER_NAME": CLUSTER,
        "HEARTBEAT_INTERVAL_SECONDS": "900",
        "GRACE_SECONDS": "1800",
        "DROP_THRESHOLD_PERCENT": "1",
    }
    assert function.inputs["loggingConfig"]["logGroup"] == f"/aws/lambda/{CHECKER}"
    queue = declared.one("aws:sqs/queue:Queue")
    assert queue.inputs["kmsMasterKeyId"] == declared.one("aws:kms/key:Key").outputs["arn"]
    config = declared.one("aws:lambda/functionEventInvokeConfig:FunctionEventInvokeConfig")
    assert config.inputs["destinationConfig"]["onFailure"]["destination"] == queue.outputs["arn"]


def test_checker_package_holds_exactly_its_modules(declared: Declared) -> None:
    archive = declared.one("aws:lambda/function:Function").inputs["code"]
    assert sorted(archive.assets) == sorted(CHECKER_MODULES)


def test_checker_package_contains_every_handlers_module_the_checker_imports() -> None:
    probe = (
        "import json, sys; import handlers.coverage; "
        "print(json.dumps(sorted(m for m in sys.modules "
        "if m == 'handlers' or m.startswith('handlers.'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "AWS_DEFAULT_REGION": REGION},
    )
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout.splitlines()[-1]))
    packaged = {
        p.removesuffix(".py").removesuffix("/__init__").replace("/", ".") for p in CHECKER_MODULES
    }
    assert loaded <= packaged, f"not in the checker's package: {loaded - packaged}"
    for path in CHECKER_MODULES:
        assert (Path(PROJECT_ROOT) / path).is_file(), path


def test_schedule_runs_every_check_interval_and_may_only_invoke_the_checker(
    declared: Declared,
) -> None:
    schedule = declared.one("aws:scheduler/schedule:Schedule").inputs
    function = declared.one("aws:lambda/function:Function")
    queue = declared.one("aws:sqs/queue:Queue")
    role = declared.one("aws:iam/role:Role", "coverage-scheduler-role")
    assert schedule["scheduleExpression"] == "rate(5 minutes)"
    assert schedule["flexibleTimeWindow"] == {"mode": "OFF"}
    target = schedule["target"]
    assert (target["arn"], target["roleArn"]) == (function.outputs["arn"], role.outputs["arn"])
    assert target["deadLetterConfig"] == {"arn": queue.outputs["arn"]}
    assert target["retryPolicy"]["maximumEventAgeInSeconds"] == 300
    [trust] = role.policy("assumeRolePolicy")["Statement"]
    assert trust["Principal"] == {"Service": "scheduler.amazonaws.com"}
    assert trust["Condition"]["StringEquals"]["aws:SourceArn"] == (
        f"arn:aws:scheduler:{REGION}:{ACCOUNT_ID}:schedule/default/{CHECKER}"
    )
    statements = declared.statements("coverage-scheduler-policy")
    assert statements["InvokeTheChecker"]["Action"] == "lambda:InvokeFunction"
    assert statements["InvokeTheChecker"]["Resource"][0] == function.outputs["arn"]
    assert {
        s["Action"] if isinstance(s["Action"], str) else tuple(s["Action"])
        for s in statements.values()
    } == {
        "lambda:InvokeFunction",
        "sqs:SendMessage",
        ("kms:GenerateDataKey", "kms:Decrypt"),
    }


def test_only_the_checker_and_its_schedule_may_fill_the_queue(declared: Declared) -> None:
    policy = declared.one("aws:sqs/queuePolicy:QueuePolicy").policy()
    [deny] = [s for s in policy["Statement"] if s["Sid"] == "OnlyTheCheckerAndItsScheduleSend"]
    senders = deny["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]
    roles = {r.name: r.outputs["arn"] for r in declared.mocks.of_type("aws:iam/role:Role")}
    assert sorted(senders) == sorted(
        [roles["coverage-checker-role"], roles["coverage-scheduler-role"]]
    )


# -- alarms ----------------------------------------------------------------------------------------
def test_coverage_below_100_for_two_checks_alarms_and_no_check_counts_as_a_gap(
    declared: Declared,
) -> None:
    alarm = declared.alarm(f"{CHECKER}-below-100").inputs
    assert (alarm["namespace"], alarm["metricName"]) == ("FalcoSecurityHub", "CoveragePercent")
    assert alarm["dimensions"] == {"Cluster": CLUSTER}
    assert (alarm["comparisonOperator"], alarm["threshold"]) == ("LessThanThreshold", 100)
    assert (alarm["period"], alarm["evaluationPeriods"], alarm["datapointsToAlarm"]) == (300, 2, 2)
    assert alarm["treatMissingData"] == "breaching"


def test_liveness_alarm_fires_when_the_alert_group_is_silent_for_two_heartbeats(
    declared: Declared,
) -> None:
    alarm = declared.alarm(f"{CHECKER}-alerts-silent").inputs
    assert (alarm["namespace"], alarm["metricName"]) == ("AWS/Logs", "IncomingLogEvents")
    assert alarm["dimensions"] == {"LogGroupName": ALERT_GROUP}
    assert (alarm["period"], alarm["evaluationPeriods"]) == (900, 2)
    assert (alarm["comparisonOperator"], alarm["threshold"]) == ("LessThanOrEqualToThreshold", 0)
    assert alarm["treatMissingData"] == "breaching"


def test_alarm_periods_follow_other_intervals(pulumi_mocks: RecordingMocks) -> None:
    declared = declare(pulumi_mocks, heartbeat_interval_minutes=60, check_interval_minutes=10)
    assert declared.alarm(f"{CHECKER}-alerts-silent").inputs["period"] == 3600
    assert declared.alarm(f"{CHECKER}-below-100").inputs["period"] == 600
    schedule = declared.one("aws:scheduler/schedule:Schedule").inputs
    assert schedule["scheduleExpression"] == "rate(10 minutes)"


def test_every_alarm_notifies_the_pipelines_topic(declared: Declared) -> None:
    alarms = declared.mocks.of_type(ALARM)
    assert len(alarms) == 5
    for alarm in alarms:
        assert alarm.inputs["alarmActions"] == [f"arn:aws:sns:{REGION}:{ACCOUNT_ID}:alarms"]


# -- heartbeat chart values ------------------------------------------------------------------------
def test_heartbeats_turn_on_the_metrics_snapshot_as_an_alert_at_the_interval() -> None:
    values = runtime_security.with_heartbeats(runtime_security.falco_values("Notice", None), 15)
    metrics = values["metrics"]
    assert (metrics["enabled"], metrics["interval"], metrics["outputRule"]) == (True, "15m", True)
    assert metrics["kernelEventCountersEnabled"] is True  # scap.n_drops_perc comes from these
    assert metrics["service"] == {"create": False}
    assert values["falco"]["priority"] == "informational"


def test_a_lower_falco_priority_is_kept() -> None:
    values = runtime_security.with_heartbeats(runtime_security.falco_values("Debug", None), 30)
    assert values["falco"]["priority"] == "debug"


@pytest.mark.parametrize(
    ("text", "shipped"),
    [
        ('{"hostname":"n1","priority":"Notice","rule":"Terminal shell in container"}', True),
        ('{"hostname":"n1","priority":"Critical","rule":"x"}', True),
        (
            '{"priority":"Informational","rule":"Falco internal: metrics snapshot"}',
            True,
        ),
        (
            '{"hostname":"n1","priority":"Informational","rule":"Contact EC2 Instance Metadata"}',
            False,
        ),
        ('{"hostname":"n1","priority":"Debug","rule":"x"}', False),
        # Text in a field cannot pass for the alert's own members: its quotes are escaped.
        (
            '{"output":"a \\"priority\\":\\"Critical\\"","priority":"Informational","rule":"y"}',
            False,
        ),
    ],
)
def test_fluent_bit_ships_alerts_at_the_minimum_and_the_snapshot_only(
    text: str, shipped: bool
) -> None:
    import re

    section = runtime_security.priority_filter("Notice")
    assert section is not None
    patterns = [
        value.split(" ", 1)[1]
        for key, value in (line.split(None, 1) for line in section.splitlines()[1:])
        if key == "Regex"
    ]
    # Onigmo (Fluent Bit's engine) and Python agree on these patterns: literals, groups, \s.
    assert any(re.search(p, text) for p in patterns) is shipped


def test_no_priority_filter_when_everything_is_shipped_anyway() -> None:
    assert runtime_security.priority_filter("Informational") is None
    assert runtime_security.priority_filter("debug") is None


# -- the whole program, both stacks ----------------------------------------------------------------
@pytest.mark.parametrize("stack", [HOME_STACK, LINKED_STACK], ids=lambda p: p.name)
def test_every_stack_has_coverage_and_liveness_alarms_and_heartbeats(stack: str) -> None:
    run = run_program(stack)
    cluster = f"falco-{run.config['aws:region']}"
    names = {a.inputs["name"] for a in run.mocks.of_type(ALARM)}
    assert {
        f"{cluster}-falco-coverage-below-100",
        f"{cluster}-falco-coverage-alerts-silent",
    } <= names
    releases = {r.inputs["name"]: r for r in run.mocks.of_type("kubernetes:helm.sh/v3:Release")}
    assert releases["falco"].inputs["values"]["metrics"]["interval"] == "15m"
    filters = releases["fluent-bit"].inputs["values"]["config"]["filters"]
    minimum = run.config.get("falco-securityhub:falcoMinimumPriority", "Notice")
    # Falco runs at Informational for its snapshots; Fluent Bit keeps the stack's minimum (a
    # minimum of Informational or Debug ships everything anyway, so no filter).
    shipped_all = minimum.lower() in ("info", "informational", "debug")
    assert ("Falco\\sinternal:\\smetrics\\ssnapshot" in filters) is not shipped_all
    # Falco's first heartbeat must find its table and the ingest role's access to it.
    assert {"coverage-heartbeats", "coverage-ingest-heartbeats"} <= run.dependencies[
        "runtime-security-falco"
    ]
    ingest_role = run.mocks.one("aws:iam/role:Role", "findings-role")
    policy = run.mocks.one(ROLE_POLICY, "coverage-ingest-heartbeats")
    assert policy.inputs["role"] == ingest_role.outputs["id"]


def test_existing_cluster_mode_needs_only_the_cluster_name() -> None:
    # The component never reads the cluster resource: any cluster name works, created or not.
    mocks = configure_pulumi_mocks()
    declared = declare(mocks, cluster_name="existing-prod")
    assert (
        declared.one("aws:dynamodb/table:Table").inputs["name"] == "existing-prod-falco-heartbeats"
    )
    assert not declared.mocks.of_type("eks:index:Cluster")
