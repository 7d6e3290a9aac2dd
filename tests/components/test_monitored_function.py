"""MonitoredFunction under Pulumi mocks: what its callers rely on beyond their own tests.

The findings pipeline's and the coverage checker's tests check each function's policies, queue,
retries and alarms. Here: that moving their resources into this component kept every resource's
identity on existing stacks (the engine matches a resource to its state by URN, which includes
the parent's type: without an alias to the caller, `pulumi up` would replace the function, its
role and its queue), and that a single-sender queue policy names the role as IAM writes it.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import pulumi
import pulumi_aws as aws
from conftest import ACCOUNT_ID, RecordingMocks
from pulumi.runtime import settings as pulumi_settings

from components.monitored_function import (
    MonitoredFunction,
    MonitoredFunctionArgs,
    ResourceNames,
    failed_queue_alarm,
    function_alarm,
)

FUNCTION = "demo-fn"
CHILD_TYPES = {
    "aws:cloudwatch/logGroup:LogGroup",
    "aws:sqs/queue:Queue",
    "aws:sqs/queuePolicy:QueuePolicy",
    "aws:iam/role:Role",
    "aws:iam/rolePolicy:RolePolicy",
    "aws:lambda/function:Function",
    "aws:lambda/functionEventInvokeConfig:FunctionEventInvokeConfig",
    "aws:cloudwatch/metricAlarm:MetricAlarm",
}


class Caller(pulumi.ComponentResource):
    """Stands for FindingsPipeline or SensorCoverage, which used to own the children."""

    def __init__(self, name: str, extra_senders: list[str]) -> None:
        super().__init__("test:index:Caller", name)
        key = aws.kms.Key(f"{name}-key", opts=pulumi.ResourceOptions(parent=self))
        self.function = MonitoredFunction(
            f"{name}-fn",
            MonitoredFunctionArgs(
                function_name=FUNCTION,
                description="demo",
                handler="handlers.names.nothing",
                modules=("handlers/__init__.py", "handlers/names.py"),
                memory_mb=128,
                timeout_seconds=10,
                environment={"A": "b"},
                region="us-east-1",
                account_id=ACCOUNT_ID,
                key=key,
                log_retention_days=30,
                role_description="demo",
                role_policy=lambda queue_arn, key_arn: {
                    "Version": "2012-10-17",
                    "Statement": [
                        {"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": queue_arn}
                    ],
                },
                queue_sender_sid="OnlyTheDemoSends",
                extra_queue_senders=extra_senders,
                maximum_retry_attempts=2,
                maximum_event_age_seconds=600,
                alarm_topic_arn="arn:aws:sns:us-east-1:123456789012:alarms",
                alarms=[
                    function_alarm(FUNCTION, "errors", "errors", "Errors", 60),
                    failed_queue_alarm(FUNCTION, "failed", "queued"),
                ],
                # Any distinct names will do here; the callers keep their historical ones.
                names=ResourceNames(**{f.name: f"{name}-{f.name}" for f in fields(ResourceNames)}),
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({})


def declare(mocks: RecordingMocks, extra_senders: list[str]) -> dict[str, Any]:
    """Declare a caller with a MonitoredFunction; return each RegisterResource request by name."""
    requests: dict[str, Any] = {}
    monitor = pulumi_settings.get_monitor()
    register = monitor.RegisterResource

    def recording_register(request: Any) -> Any:
        response = register(request)
        requests[request.name] = (request, response.urn)
        return response

    monitor.RegisterResource = recording_register

    @pulumi.runtime.test
    def run() -> Any:
        caller = Caller("caller", extra_senders)
        return caller.function.function_arn

    run()
    return requests


def test_every_child_keeps_its_identity_under_the_caller(pulumi_mocks: RecordingMocks) -> None:
    requests = declare(pulumi_mocks, [])
    _, caller_urn = requests["caller"]
    children = [(r, urn) for r, urn in requests.values() if r.type in CHILD_TYPES]
    assert {r.type for r, _ in children} == CHILD_TYPES
    for request, _ in children:
        parents = [alias.spec.parentUrn for alias in request.aliases]
        assert parents == [caller_urn], request.name


def test_one_sender_is_named_as_a_plain_arn(pulumi_mocks: RecordingMocks) -> None:
    declare(pulumi_mocks, [])
    role_arn = pulumi_mocks.one("aws:iam/role:Role").outputs["arn"]
    policy = pulumi_mocks.one("aws:sqs/queuePolicy:QueuePolicy").policy()
    [only] = [s for s in policy["Statement"] if s["Sid"] == "OnlyTheDemoSends"]
    assert only["Condition"] == {"ArnNotEquals": {"aws:PrincipalArn": role_arn}}


def test_extra_senders_join_the_functions_role(pulumi_mocks: RecordingMocks) -> None:
    scheduler = f"arn:aws:iam::{ACCOUNT_ID}:role/scheduler"
    declare(pulumi_mocks, [scheduler])
    role_arn = pulumi_mocks.one("aws:iam/role:Role").outputs["arn"]
    policy = pulumi_mocks.one("aws:sqs/queuePolicy:QueuePolicy").policy()
    [only] = [s for s in policy["Statement"] if s["Sid"] == "OnlyTheDemoSends"]
    assert only["Condition"] == {"ArnNotEquals": {"aws:PrincipalArn": [role_arn, scheduler]}}
