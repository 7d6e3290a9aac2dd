"""FindingsPipeline under Pulumi mocks: encryption, least privilege, wiring, alarms.

Resource ordering (`depends_on`) is invisible to the mocks' `new_resource`, so these tests read it
where the engine does: every RegisterResource request carries the URNs the resource depends on
(explicit `depends_on` and the implicit ones from its inputs). `declare_pipeline` wraps the mock
monitor's RegisterResource to record them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws
import pytest
from conftest import ACCOUNT_ID, RecordedResource, RecordingMocks, configure_pulumi_mocks
from pulumi.runtime import settings as pulumi_settings

from components import findings_pipeline
from components.findings_pipeline import (
    FILTER_PATTERN,
    HANDLER_MODULES,
    POWERTOOLS_VERSION,
    PROJECT_ROOT,
    FindingsPipeline,
    FindingsPipelineArgs,
)

KEY = "aws:kms/key:Key"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
FUNCTION = "aws:lambda/function:Function"
ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
QUEUE = "aws:sqs/queue:Queue"
TOPIC = "aws:sns/topic:Topic"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
SUBSCRIPTION = "aws:sns/topicSubscription:TopicSubscription"

CLUSTER = "falco-demo"
FUNCTION_NAME = f"{CLUSTER}-falco-findings"
ALERT_GROUP = f"/falco/{CLUSTER}/alerts"
FUNCTION_GROUP = f"/aws/lambda/{FUNCTION_NAME}"


@dataclass
class Declared:
    """What one pipeline declaration recorded: resources, their dependencies, its outputs."""

    mocks: RecordingMocks
    region: str
    dependencies: dict[str, set[str]] = field(default_factory=dict)  # name -> names it waits for
    outputs: dict[str, Any] = field(default_factory=dict)

    def one(self, typ: str, name: str | None = None) -> RecordedResource:
        return self.mocks.one(typ, name)

    def log_group(self, group_name: str) -> RecordedResource:
        [group] = [g for g in self.mocks.of_type(LOG_GROUP) if g.inputs["name"] == group_name]
        return group

    def key_arn(self) -> str:
        return self.one(KEY, "findings-key").outputs["arn"]


def base_args(region: str = "us-east-1", **overrides: Any) -> FindingsPipelineArgs:
    args = FindingsPipelineArgs(
        cluster_name=CLUSTER,
        region=region,
        account_id=ACCOUNT_ID,
        partition="aws",
        log_retention_days=90,
        lambda_memory_mb=384,
        lambda_timeout_seconds=120,
        reserved_concurrency=3,
        min_priority="Notice",
        alarm_email=None,
        security_hub=None,  # type: ignore[arg-type]  # filled in by declare_pipeline
        tags={"project": "falco-securityhub"},
    )
    return replace(args, **overrides)


def declare_pipeline(
    mocks: RecordingMocks, region: str = "us-east-1", **overrides: Any
) -> Declared:
    declared = Declared(mocks=mocks, region=region)
    monitor = pulumi_settings.get_monitor()
    register = monitor.RegisterResource

    def recording_register(request: Any) -> Any:
        response = register(request)
        declared.dependencies[request.name] = {urn.split("::")[-1] for urn in request.dependencies}
        return response

    monitor.RegisterResource = recording_register

    @pulumi.runtime.test
    def declare() -> pulumi.Output[Any]:
        hub = aws.securityhub.Account("hub")
        pipeline = FindingsPipeline("findings", base_args(region, security_hub=hub, **overrides))
        outputs = {
            key: getattr(pipeline, key)
            for key in (
                "kms_key_arn",
                "log_group_name",
                "log_group_arn",
                "function_name",
                "function_arn",
                "dead_letter_queue_url",
                "dead_letter_queue_arn",
                "alarm_topic_arn",
                "alarm_key_arn",
                "function_log_group_name",
            )
        }
        return pulumi.Output.all(**outputs).apply(declared.outputs.update)

    declare()
    return declared


@pytest.fixture
def declared(pulumi_mocks: RecordingMocks) -> Declared:
    return declare_pipeline(pulumi_mocks)


@pytest.fixture
def declared_eu(pulumi_mocks: RecordingMocks) -> Declared:
    mocks = configure_pulumi_mocks(region="eu-west-1", stack="eu-west-1")
    return declare_pipeline(mocks, region="eu-west-1")


def statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    return document["Statement"]


def as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def by_sid(document: dict[str, Any], sid: str) -> dict[str, Any]:
    [statement] = [s for s in statements(document) if s.get("Sid") == sid]
    return statement


# -- encryption --------------------------------------------------------------------------------
def test_key_rotates_and_has_an_alias(declared: Declared) -> None:
    key = declared.one(KEY, "findings-key")
    assert key.inputs["enableKeyRotation"] is True
    alias = declared.one("aws:kms/alias:Alias")
    assert alias.inputs["name"] == f"alias/{FUNCTION_NAME}"
    assert alias.inputs["targetKeyId"] == key.outputs["keyId"]


def test_key_policy_keeps_the_account_root_statement(declared: Declared) -> None:
    policy = declared.one(KEY, "findings-key").policy()
    root = by_sid(policy, "AccountRootManagesKeyAndDelegatesToIam")
    assert root["Effect"] == "Allow"
    assert root["Principal"] == {"AWS": f"arn:aws:iam::{ACCOUNT_ID}:root"}
    assert root["Action"] == "kms:*"


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1"])
def test_logs_may_use_the_key_only_for_this_stacks_log_groups(
    pulumi_mocks: RecordingMocks, region: str
) -> None:
    mocks = configure_pulumi_mocks(region=region, stack=region)
    policy = declare_pipeline(mocks, region=region).one(KEY, "findings-key").policy()
    [logs] = [s for s in statements(policy) if s["Principal"].get("Service", "").startswith("logs")]
    assert logs["Principal"] == {"Service": f"logs.{region}.amazonaws.com"}
    assert sorted(logs["Action"]) == sorted(
        ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    )
    # The only condition is the encryption context, and it names this account's, this region's
    # groups exactly: no other log group can ask CloudWatch Logs to use the key.
    # ArnEquals: exact ARNs, no wildcard can widen them.
    assert list(logs["Condition"]) == ["ArnEquals"]
    context = logs["Condition"]["ArnEquals"]
    assert list(context) == ["kms:EncryptionContext:aws:logs:arn"]
    assert sorted(as_list(context["kms:EncryptionContext:aws:logs:arn"])) == sorted(
        [
            f"arn:aws:logs:{region}:{ACCOUNT_ID}:log-group:{ALERT_GROUP}",
            f"arn:aws:logs:{region}:{ACCOUNT_ID}:log-group:{FUNCTION_GROUP}",
        ]
    )


def test_cloudwatch_alarms_may_use_only_the_alarm_topics_own_key(declared: Declared) -> None:
    alarm_key = declared.one(KEY, "findings-alarms-key").policy()
    statement = by_sid(alarm_key, "CloudWatchAlarmsPublishToEncryptedTopic")
    assert statement["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert sorted(statement["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey*"]
    # The key that encrypts Falco's alerts: no CloudWatch alarms, so no decrypting alert data.
    principals = [
        s.get("Principal") for s in statements(declared.one(KEY, "findings-key").policy())
    ]
    assert {"Service": "cloudwatch.amazonaws.com"} not in principals


def test_key_policies_grant_services_nothing_else(declared: Declared) -> None:
    policy = declared.one(KEY, "findings-key").policy()
    assert len(statements(policy)) == 2
    assert len(statements(declared.one(KEY, "findings-alarms-key").policy())) == 2
    assert all(s["Effect"] == "Allow" for s in statements(policy))


@pytest.mark.parametrize("group_name", [ALERT_GROUP, FUNCTION_GROUP])
def test_log_groups_are_encrypted_with_the_key_and_expire(
    declared: Declared, group_name: str
) -> None:
    group = declared.log_group(group_name)
    assert group.inputs["kmsKeyId"] == declared.key_arn()
    assert group.inputs["retentionInDays"] == 90


@pytest.mark.parametrize("group_name", [ALERT_GROUP, FUNCTION_GROUP])
def test_log_groups_wait_for_the_key_and_its_policy(declared: Declared, group_name: str) -> None:
    # The key policy is part of the key (set at CreateKey): waiting for the key is waiting for it.
    group = declared.log_group(group_name)
    assert "findings-key" in declared.dependencies[group.name]
    assert "policy" in declared.one(KEY, "findings-key").inputs


def test_on_failure_queue_is_encrypted_with_the_key_and_keeps_events_14_days(
    declared: Declared,
) -> None:
    queue = declared.one(QUEUE)
    assert queue.inputs["kmsMasterKeyId"] == declared.key_arn()
    assert queue.inputs["messageRetentionSeconds"] == 14 * 24 * 3600
    assert not queue.inputs.get("sqsManagedSseEnabled")


def test_alarm_topic_is_encrypted_with_its_own_key(declared: Declared) -> None:
    alarm_key = declared.one(KEY, "findings-alarms-key")
    assert declared.one(TOPIC).inputs["kmsMasterKeyId"] == alarm_key.outputs["arn"]
    assert alarm_key.inputs["enableKeyRotation"] is True


# -- the function ------------------------------------------------------------------------------
def test_function_settings_come_from_the_args(declared: Declared) -> None:
    function = declared.one(FUNCTION)
    assert function.inputs["name"] == FUNCTION_NAME
    assert function.inputs["handler"] == "handlers.ingest.handler"
    assert function.inputs["runtime"] == "python3.12"
    assert function.inputs["architectures"] == ["arm64"]
    assert function.inputs["memorySize"] == 384
    assert function.inputs["timeout"] == 120
    assert function.inputs["reservedConcurrentExecutions"] == 3
    assert function.inputs["role"] == declared.one(ROLE).outputs["arn"]


def test_function_environment_is_the_contracts(declared: Declared) -> None:
    variables = declared.one(FUNCTION).inputs["environment"]["variables"]
    assert variables == {
        "CLUSTER_NAME": CLUSTER,
        "MIN_PRIORITY": "Notice",
        "POWERTOOLS_SERVICE_NAME": findings_pipeline.SERVICE_NAME,
        "POWERTOOLS_METRICS_NAMESPACE": findings_pipeline.METRICS_NAMESPACE,
    }


def test_function_uses_the_aws_managed_powertools_layer_for_its_runtime(
    declared_eu: Declared,
) -> None:
    # The mocks answer AWS's public parameter like SSM does: with that region's layer ARN.
    assert declared_eu.one(FUNCTION).inputs["layers"] == [
        "arn:aws:lambda:eu-west-1:017000801446:layer:AWSLambdaPowertoolsPythonV3-python312-arm64:99"
    ]
    assert (
        "aws:ssm/getParameter:getParameter",
        {"name": f"/aws/service/powertools/python/arm64/python3.12/{POWERTOOLS_VERSION}"},
    ) in [(token, {"name": a.get("name")}) for token, a in declared_eu.mocks.calls]


def test_runtime_is_one_pulumi_aws_knows() -> None:
    assert findings_pipeline.RUNTIME in set(aws.lambda_.Runtime)


def test_layer_is_pinned_to_the_powertools_version_in_requirements() -> None:
    requirements = (PROJECT_ROOT / "requirements.txt").read_text()
    [pinned] = re.findall(r"^aws-lambda-powertools==(\S+)", requirements, flags=re.M)
    assert pinned == POWERTOOLS_VERSION, (
        "requirements.txt moved Powertools: update POWERTOOLS_VERSION so the function's layer "
        "matches the version the tests run"
    )


def test_function_logs_go_to_its_own_encrypted_group(declared: Declared) -> None:
    assert declared.one(FUNCTION).inputs["loggingConfig"]["logGroup"] == FUNCTION_GROUP
    assert "findings-function-logs" in declared.dependencies["findings-function"]


def test_function_waits_for_security_hub_and_its_permissions(declared: Declared) -> None:
    waits_for = declared.dependencies["findings-function"]
    assert {"hub", "findings-role-policy", "findings-function-logs"} <= waits_for


def test_package_holds_exactly_the_handler_modules(declared: Declared) -> None:
    archive = declared.one(FUNCTION).inputs["code"]
    assert isinstance(archive, pulumi.AssetArchive)
    assert sorted(archive.assets) == sorted(HANDLER_MODULES)
    assert HANDLER_MODULES == (
        "handlers/__init__.py",
        "handlers/alerts.py",
        "handlers/asff.py",
        "handlers/audit.py",
        "handlers/caching.py",
        "handlers/classification.py",
        "handlers/coalescing.py",
        "handlers/findings.py",
        "handlers/heartbeat.py",
        "handlers/securityhub.py",
        "handlers/ingest.py",
        "handlers/names.py",
        "handlers/occurrences.py",
        "handlers/shadow.py",
    )
    for path, asset in archive.assets.items():
        assert isinstance(asset, pulumi.FileAsset)
        assert Path(asset.path) == PROJECT_ROOT / path


def test_package_contains_every_handlers_module_the_handler_imports() -> None:
    # A fresh interpreter, so modules the test session already imported do not count.
    probe = (
        "import json, sys; import handlers.ingest; "
        "print(json.dumps(sorted(m for m in sys.modules "
        "if m == 'handlers' or m.startswith('handlers.'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"},
    )
    assert result.returncode == 0, f"import handlers.ingest failed:\n{result.stderr}"
    loaded = json.loads(result.stdout.splitlines()[-1])
    packaged = {
        path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        for path in HANDLER_MODULES
    }
    assert "handlers.ingest" in loaded
    assert set(loaded) <= packaged, f"not in the Lambda package: {set(loaded) - packaged}"


# -- the function's role -----------------------------------------------------------------------
def test_role_is_assumable_only_by_lambda_for_this_account(declared: Declared) -> None:
    trust = declared.one(ROLE).policy("assumeRolePolicy")
    [statement] = statements(trust)
    assert statement["Effect"] == "Allow"
    assert statement["Principal"] == {"Service": "lambda.amazonaws.com"}
    assert statement["Action"] == "sts:AssumeRole"
    assert statement["Condition"] == {"StringEquals": {"aws:SourceAccount": ACCOUNT_ID}}


def test_role_policy_has_no_wildcard_action_or_resource(declared: Declared) -> None:
    for statement in statements(declared.one(ROLE_POLICY).policy()):
        assert statement["Effect"] == "Allow"
        for action in as_list(statement["Action"]):
            assert "*" not in action, statement
        for resource in as_list(statement["Resource"]):
            assert resource != "*", statement
            assert resource.startswith("arn:aws:"), statement
        assert "NotAction" not in statement
        assert "NotResource" not in statement


def test_role_imports_findings_only_as_this_regions_custom_product(declared_eu: Declared) -> None:
    policy = declared_eu.one(ROLE_POLICY).policy()
    granting = [
        s for s in statements(policy) if any("securityhub" in a for a in as_list(s["Action"]))
    ]
    assert granting == [
        {
            "Sid": "ImportFindingsAsThisAccountsCustomProduct",
            "Effect": "Allow",
            "Action": "securityhub:BatchImportFindings",
            "Resource": f"arn:aws:securityhub:eu-west-1:{ACCOUNT_ID}:product/{ACCOUNT_ID}/default",
        }
    ]


def test_role_writes_only_to_its_own_log_group(declared: Declared) -> None:
    policy = declared.one(ROLE_POLICY).policy()
    granting = [
        s for s in statements(policy) if any(a.startswith("logs:") for a in as_list(s["Action"]))
    ]
    assert len(granting) == 1
    [statement] = granting
    assert sorted(as_list(statement["Action"])) == ["logs:CreateLogStream", "logs:PutLogEvents"]
    assert statement["Resource"] == (
        f"arn:aws:logs:us-east-1:{ACCOUNT_ID}:log-group:{FUNCTION_GROUP}:*"
    )


def test_role_sends_only_to_the_queue_and_uses_the_key_only_through_sqs(
    declared: Declared,
) -> None:
    policy = declared.one(ROLE_POLICY).policy()
    queue_arn = declared.one(QUEUE).outputs["arn"]
    send = by_sid(policy, "SendFailedEventsToOnFailureQueue")
    assert (send["Action"], send["Resource"]) == ("sqs:SendMessage", queue_arn)
    kms = by_sid(policy, "EncryptFailedEventsForQueue")
    assert sorted(kms["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert kms["Resource"] == declared.key_arn()
    assert kms["Condition"] == {"StringEquals": {"kms:ViaService": "sqs.us-east-1.amazonaws.com"}}
    assert {s["Sid"] for s in statements(policy)} == {
        "WriteOwnLogStreams",
        "ImportFindingsAsThisAccountsCustomProduct",
        "SendFailedEventsToOnFailureQueue",
        "EncryptFailedEventsForQueue",
    }


def test_role_has_no_other_policies(declared: Declared) -> None:
    assert declared.mocks.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment") == []
    role = declared.one(ROLE)
    assert not role.inputs.get("managedPolicyArns")
    assert not role.inputs.get("inlinePolicies")
    assert declared.one(ROLE_POLICY).inputs["role"] == role.outputs["id"]


# -- subscription ------------------------------------------------------------------------------
@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1"])
def test_only_cloudwatch_logs_for_the_alert_group_may_invoke(
    pulumi_mocks: RecordingMocks, region: str
) -> None:
    mocks = configure_pulumi_mocks(region=region, stack=region)
    declared = declare_pipeline(mocks, region=region)
    permission = declared.one("aws:lambda/permission:Permission")
    group_arn = declared.log_group(ALERT_GROUP).outputs["arn"]
    assert permission.inputs["action"] == "lambda:InvokeFunction"
    assert permission.inputs["function"] == FUNCTION_NAME
    assert permission.inputs["principal"] == f"logs.{region}.amazonaws.com"
    assert permission.inputs["sourceArn"] == f"{group_arn}:*"
    assert permission.inputs["sourceAccount"] == ACCOUNT_ID


def test_subscription_filter_is_created_after_the_invoke_permission(declared: Declared) -> None:
    assert "findings-invoke-from-logs" in declared.dependencies["findings-subscription"]


def test_subscription_filter_is_created_after_the_on_failure_configuration(
    declared: Declared,
) -> None:
    # Otherwise the first alerts could arrive while Lambda has no on-failure queue for them.
    assert "findings-async" in declared.dependencies["findings-subscription"]


def test_subscription_sends_the_alert_group_to_the_function(declared: Declared) -> None:
    subscription = declared.one("aws:cloudwatch/logSubscriptionFilter:LogSubscriptionFilter")
    assert subscription.inputs["logGroup"] == ALERT_GROUP
    assert subscription.inputs["destinationArn"] == declared.one(FUNCTION).outputs["arn"]
    assert subscription.inputs["filterPattern"] == FILTER_PATTERN


ALERT = {
    "time": "2026-01-01T00:00:00.000000000Z",
    "rule": "Terminal shell in container",
    "priority": "Notice",
    "source": "syscall",
    "hostname": "ip-10-0-1-23",
    "output": "A shell was spawned in a container",
    "output_fields": {"container.id": "abc123"},
}


def matches_terms(pattern: str, message: str) -> bool:
    """CloudWatch Logs' unstructured term matching: every space-separated term must appear."""
    return all(term.strip('"') in message for term in pattern.split())


@pytest.mark.parametrize(
    "message",
    [
        json.dumps(ALERT),  # raw Falco JSON
        json.dumps({"time": "t", "stream": "stdout", "_p": "F", "log": json.dumps(ALERT)}),
        json.dumps({"stream": "stdout", "data": ALERT, "kubernetes": {"pod_name": "falco-x"}}),
        json.dumps({"stream": "stdout", **ALERT}),
    ],
    ids=["raw", "log-string", "merge-key", "top-level"],
)
def test_filter_pattern_keeps_every_alert_shape(message: str) -> None:
    assert FILTER_PATTERN.strip(), "an empty pattern forwards every Falco banner line"
    assert matches_terms(FILTER_PATTERN, message)


@pytest.mark.parametrize(
    "line",
    [
        "Falco version: 0.39.2 (x86_64)",
        "Loading rules from file /etc/falco/falco_rules.yaml",
        "Starting health webserver with threadiness 2, listening on 0.0.0.0:8765",
    ],
)
def test_filter_pattern_drops_falco_banner_lines(line: str) -> None:
    record = json.dumps({"time": "t", "stream": "stderr", "_p": "F", "log": line})
    assert not matches_terms(FILTER_PATTERN, record)


# -- failures: on-failure queue, alarms -----------------------------------------------------
def test_failed_events_go_to_the_on_failure_queue(declared: Declared) -> None:
    config = declared.one("aws:lambda/functionEventInvokeConfig:FunctionEventInvokeConfig")
    assert config.inputs["functionName"] == FUNCTION_NAME
    assert config.inputs["maximumRetryAttempts"] == 2
    assert 60 <= config.inputs["maximumEventAgeInSeconds"] <= 6 * 3600
    assert config.inputs["destinationConfig"] == {
        "onFailure": {"destination": declared.one(QUEUE).outputs["arn"]}
    }


def test_only_the_function_role_may_send_to_the_queue(declared: Declared) -> None:
    queue_policy = declared.one("aws:sqs/queuePolicy:QueuePolicy")
    queue = declared.one(QUEUE)
    assert queue_policy.inputs["queueUrl"] == queue.outputs["url"]
    policy = queue_policy.policy()
    only = by_sid(policy, "OnlyTheFindingsFunctionSends")
    assert only["Effect"] == "Deny"
    assert only["Action"] == "sqs:SendMessage"
    assert only["Resource"] == queue.outputs["arn"]
    assert only["Condition"] == {
        "ArnNotEquals": {"aws:PrincipalArn": declared.one(ROLE).outputs["arn"]}
    }
    assert not [s for s in statements(policy) if s["Effect"] == "Allow"]


def test_alarms_cover_errors_throttles_and_the_on_failure_queue(declared: Declared) -> None:
    alarms = {a.inputs["metricName"]: a for a in declared.mocks.of_type(ALARM)}
    assert set(alarms) == {
        "Errors",
        "Throttles",
        "DestinationDeliveryFailures",
        "ImportFailures",
        "ApproximateNumberOfMessagesVisible",
    }
    for metric in ("Errors", "Throttles", "DestinationDeliveryFailures"):
        assert alarms[metric].inputs["namespace"] == "AWS/Lambda"
        assert alarms[metric].inputs["dimensions"] == {"FunctionName": FUNCTION_NAME}
    # The handler's own EMF metric (Powertools puts the service name in a `service` dimension).
    assert alarms["ImportFailures"].inputs["namespace"] == "FalcoSecurityHub"
    assert alarms["ImportFailures"].inputs["dimensions"] == {"service": "falco-securityhub"}
    queue_alarm = alarms["ApproximateNumberOfMessagesVisible"]
    assert queue_alarm.inputs["namespace"] == "AWS/SQS"
    assert queue_alarm.inputs["dimensions"] == {"QueueName": declared.one(QUEUE).inputs["name"]}


def test_every_alarm_fires_on_the_first_event_and_notifies_the_topic(declared: Declared) -> None:
    topic_arn = declared.one(TOPIC).outputs["arn"]
    alarms = declared.mocks.of_type(ALARM)
    assert len(alarms) == 5
    for alarm in alarms:
        assert alarm.inputs["comparisonOperator"] == "GreaterThanThreshold"
        assert alarm.inputs["threshold"] == 0
        assert alarm.inputs["evaluationPeriods"] == 1
        assert alarm.inputs["alarmActions"] == [topic_arn]
        assert alarm.inputs["okActions"] == [topic_arn]
        assert alarm.inputs["treatMissingData"] == "notBreaching"
        assert alarm.inputs["alarmDescription"]


def test_only_this_accounts_alarms_may_publish_to_the_topic(declared_eu: Declared) -> None:
    topic = declared_eu.one(TOPIC)
    topic_policy = declared_eu.one("aws:sns/topicPolicy:TopicPolicy")
    assert topic_policy.inputs["arn"] == topic.outputs["arn"]
    [statement] = statements(topic_policy.policy())
    assert statement["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert statement["Action"] == "sns:Publish"
    assert statement["Resource"] == topic.outputs["arn"]
    assert statement["Condition"] == {
        "ArnLike": {"aws:SourceArn": f"arn:aws:cloudwatch:eu-west-1:{ACCOUNT_ID}:alarm:*"},
        "StringEquals": {"aws:SourceAccount": ACCOUNT_ID},
    }


def test_no_email_subscription_without_an_address(declared: Declared) -> None:
    assert declared.mocks.of_type(SUBSCRIPTION) == []


def test_email_subscription_when_an_address_is_configured(pulumi_mocks: RecordingMocks) -> None:
    declared = declare_pipeline(pulumi_mocks, alarm_email="secops@example.com")
    subscription = declared.one(SUBSCRIPTION)
    assert subscription.inputs["protocol"] == "email"
    assert subscription.inputs["endpoint"] == "secops@example.com"
    assert subscription.inputs["topic"] == declared.one(TOPIC).outputs["arn"]


# -- outputs -----------------------------------------------------------------------------------
def test_outputs_name_what_callers_and_a_redrive_tool_need(declared: Declared) -> None:
    queue = declared.one(QUEUE)
    assert declared.outputs == {
        "kms_key_arn": declared.key_arn(),
        "log_group_name": ALERT_GROUP,
        "log_group_arn": declared.log_group(ALERT_GROUP).outputs["arn"],
        "function_name": FUNCTION_NAME,
        "function_arn": declared.one(FUNCTION).outputs["arn"],
        "dead_letter_queue_url": queue.outputs["url"],
        "dead_letter_queue_arn": queue.outputs["arn"],
        "alarm_topic_arn": declared.one(TOPIC).outputs["arn"],
        "alarm_key_arn": declared.one(KEY, "findings-alarms-key").outputs["arn"],
        "function_log_group_name": FUNCTION_GROUP,
    }


def test_every_taggable_resource_is_tagged(declared: Declared) -> None:
    for typ in (KEY, LOG_GROUP, FUNCTION, ROLE, QUEUE, TOPIC, ALARM):
        for resource in declared.mocks.of_type(typ):
            assert resource.inputs["tags"] == {"project": "falco-securityhub"}, resource.name


def test_import_failures_alarm_watches_a_metric_the_handler_emits() -> None:
    # An alarm on a metric nobody emits never fires; catch a rename in the handler.
    source = (PROJECT_ROOT / "handlers" / "ingest.py").read_text()
    assert 'name="ImportFailures"' in source
