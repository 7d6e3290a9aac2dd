"""MonitoredFunction: a Lambda whose failures are never lost.

It brings its own KMS-encrypted log group (created before the function, so Lambda never makes an
unencrypted one that is kept forever), a least-privilege role that only Lambda may assume, an
on-failure queue encrypted with the caller's key that only the function (and senders the caller
names) may fill, the asynchronous retry configuration that sends failed events there, and the
standard alarms to a given topic. The caller decides what the function is for: its package,
environment, sizing, role policy (built from the pure statements below) and alarm list.

Used by the findings pipeline (the ingest Lambda) and sensor coverage (the checker).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws

from handlers.names import log_group_arn

COMPONENT_TYPE = "falco-securityhub:index:MonitoredFunction"

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# The runtime and the Powertools layer must move together: the layer is built per Python version
# (some of its dependencies are compiled), so a python3.13 function needs the python313 layer.
# pulumi-aws 7.51 knows python3.14, but the AWS-managed Powertools layer this stack pins is the
# python312 build (the version requirements.txt tests against), so the runtime is python3.12.
RUNTIME = aws.lambda_.Runtime.PYTHON3D12
ARCHITECTURE = "arm64"

# The Powertools version in requirements.txt (a test checks they agree): the tests run against it,
# so the function gets the same one. AWS publishes each version's layer ARN, per region,
# architecture and Python version, as a public SSM parameter; reading it at deploy time pins the
# exact version without hard-coding a layer number that differs between releases.
POWERTOOLS_VERSION = "3.37.0"

# The longest SQS keeps a message: time to notice the alarm and re-drive by hand.
FAILED_EVENT_RETENTION_SECONDS = 14 * 24 * 60 * 60


# --------------------------------------------------------------------------------------------
# Names (pure)
# --------------------------------------------------------------------------------------------
def function_log_group_name_for(function_name: str) -> str:
    return f"/aws/lambda/{function_name}"


def failed_queue_name_for(function_name: str) -> str:
    return f"{function_name}-failed"


def powertools_layer_parameter(version: str = POWERTOOLS_VERSION) -> str:
    """The public SSM parameter whose value is the AWS-managed Powertools layer ARN for
    RUNTIME and ARCHITECTURE (e.g. ``/aws/service/powertools/python/arm64/python3.12/3.37.0``)."""
    return f"/aws/service/powertools/python/{ARCHITECTURE}/{RUNTIME.value}/{version}"


# --------------------------------------------------------------------------------------------
# Policy documents and statements (pure)
# --------------------------------------------------------------------------------------------
def policy_json(document: dict[str, Any]) -> str:
    """A policy document as its resource input: sorted keys, so previews diff stably."""
    return json.dumps(document, sort_keys=True)


def lambda_assume_role_policy(account_id: str) -> dict:
    """Only the Lambda service, acting for this account, may assume the function role."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "lambda.amazonaws.com"},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"aws:SourceAccount": account_id}},
            }
        ],
    }


def own_log_streams_statement(
    partition: str, region: str, account_id: str, function_log_group: str
) -> dict[str, Any]:
    """The role's first statement: write to the function's own log group, nothing else."""
    group = log_group_arn(partition, region, account_id, function_log_group)
    return {
        # The group itself is created by MonitoredFunction; the function only adds streams and
        # events to it (no logs:CreateLogGroup, so it cannot make an unencrypted one).
        "Sid": "WriteOwnLogStreams",
        "Effect": "Allow",
        "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
        "Resource": f"{group}:*",
    }


def on_failure_queue_statements(
    region: str, queue_arn: str, key_arn: str, *, send_sid: str, encrypt_sid: str
) -> list[dict[str, Any]]:
    """The role's last statements: put failed events in the on-failure queue, encrypted."""
    return [
        {
            # Lambda delivers failed asynchronous events to the on-failure destination with
            # the function's execution role.
            "Sid": send_sid,
            "Effect": "Allow",
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
        },
        {
            # SendMessage to a KMS-encrypted queue needs a data key; only through SQS.
            "Sid": encrypt_sid,
            "Effect": "Allow",
            "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
            "Resource": key_arn,
            "Condition": {"StringEquals": {"kms:ViaService": f"sqs.{region}.amazonaws.com"}},
        },
    ]


def queue_policy(queue_arn: str, sender_role_arns: str | list[str], only_senders_sid: str) -> dict:
    """Only the sender roles may put messages in the on-failure queue, and only over TLS."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": only_senders_sid,
                "Effect": "Deny",
                "Principal": "*",
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnNotEquals": {"aws:PrincipalArn": sender_role_arns}},
            },
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "sqs:*",
                "Resource": queue_arn,
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            },
        ],
    }


# --------------------------------------------------------------------------------------------
# Alarms (pure)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AlarmSpec:
    """One alarm that fires on the first datapoint above zero; `role` ends its names."""

    role: str
    description: str
    namespace: str
    metric_name: str
    statistic: str
    period: int
    dimensions: Mapping[str, str]


def function_alarm(
    function_name: str, role: str, description: str, metric_name: str, period: int
) -> AlarmSpec:
    """An alarm on one of Lambda's own metrics for the function (Errors, Throttles, ...)."""
    return AlarmSpec(
        role,
        description,
        "AWS/Lambda",
        metric_name,
        "Sum",
        period,
        {"FunctionName": function_name},
    )


def failed_queue_alarm(function_name: str, role: str, description: str) -> AlarmSpec:
    """An alarm on events waiting in the function's on-failure queue."""
    return AlarmSpec(
        role,
        description,
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        "Maximum",
        300,
        {"QueueName": failed_queue_name_for(function_name)},
    )


# --------------------------------------------------------------------------------------------
# The component
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ResourceNames:
    """Logical names of the children: the callers' names from before this component existed, so
    existing stacks keep their resources (see the aliases in MonitoredFunction)."""

    log_group: str
    queue: str
    queue_policy: str
    role: str
    role_policy: str
    function: str
    invoke_config: str
    alarm_prefix: str


@dataclass
class MonitoredFunctionArgs:
    function_name: str
    description: str
    handler: str
    modules: Sequence[str]
    """Paths below PROJECT_ROOT that make up the Lambda package, exactly."""
    memory_mb: int
    timeout_seconds: int
    environment: dict[str, str]
    region: str
    account_id: str
    key: aws.kms.Key
    """Encrypts the log group and the queue; its policy must let CloudWatch Logs use it for
    function_log_group_name_for(function_name)."""
    log_retention_days: int
    role_description: str
    role_policy: Callable[[str, str], dict]
    """(queue ARN, key ARN) -> the role's whole policy: own_log_streams_statement first,
    on_failure_queue_statements last, the function's own statements in between."""
    queue_sender_sid: str
    maximum_retry_attempts: int
    maximum_event_age_seconds: int
    alarm_topic_arn: pulumi.Input[str]
    alarms: Sequence[AlarmSpec]
    names: ResourceNames
    depends_on: Sequence[pulumi.Resource] = ()
    """What must exist before the function's first invocation (e.g. Security Hub)."""
    extra_queue_senders: Sequence[pulumi.Input[str]] = ()
    """Role ARNs besides the function's that may fill the queue (e.g. a scheduler's)."""
    reserved_concurrency: int | None = None
    powertools_layer: bool = False
    tags: dict[str, str] = field(default_factory=dict)


class MonitoredFunction(pulumi.ComponentResource):
    """A Lambda with its own log group, role, on-failure queue, retry config and alarms."""

    function_name: pulumi.Output[str]
    function_arn: pulumi.Output[str]
    role_name: pulumi.Output[str]
    role_arn: pulumi.Output[str]
    log_group_name: pulumi.Output[str]
    queue_url: pulumi.Output[str]
    queue_arn: pulumi.Output[str]

    def __init__(
        self, name: str, args: MonitoredFunctionArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(COMPONENT_TYPE, name, None, opts)
        # These resources were declared directly under the caller before this component existed:
        # the alias keeps their URNs, so `pulumi up` on an existing stack replaces none of them.
        caller = opts.parent if opts is not None else None
        moved = [pulumi.Alias(parent=caller)] if caller is not None else []
        child = pulumi.ResourceOptions(parent=self, aliases=moved)
        after_key = pulumi.ResourceOptions(parent=self, aliases=moved, depends_on=[args.key])
        names = args.names
        tags = dict(args.tags)

        # Created here, encrypted and with retention, before the function exists: otherwise Lambda
        # creates /aws/lambda/<name> on first run, unencrypted and kept forever.
        self._log_group = aws.cloudwatch.LogGroup(
            names.log_group,
            name=function_log_group_name_for(args.function_name),
            retention_in_days=args.log_retention_days,
            kms_key_id=args.key.arn,
            tags=tags,
            opts=after_key,
        )
        self._queue = aws.sqs.Queue(
            names.queue,
            name=failed_queue_name_for(args.function_name),
            kms_master_key_id=args.key.arn,
            message_retention_seconds=FAILED_EVENT_RETENTION_SECONDS,
            tags=tags,
            opts=after_key,
        )

        self._role = aws.iam.Role(
            names.role,
            description=args.role_description,
            assume_role_policy=policy_json(lambda_assume_role_policy(args.account_id)),
            tags=tags,
            opts=child,
        )
        role_policy = args.role_policy
        self._role_policy = aws.iam.RolePolicy(
            names.role_policy,
            role=self._role.id,
            policy=pulumi.Output.all(self._queue.arn, args.key.arn).apply(
                lambda arns: policy_json(role_policy(arns[0], arns[1]))
            ),
            opts=child,
        )
        sid = args.queue_sender_sid
        aws.sqs.QueuePolicy(
            names.queue_policy,
            queue_url=self._queue.url,
            policy=pulumi.Output.all(
                self._queue.arn, self._role.arn, *args.extra_queue_senders
            ).apply(
                # A single sender stays a plain ARN, as IAM writes it.
                lambda arns: policy_json(
                    queue_policy(arns[0], arns[1] if len(arns) == 2 else list(arns[1:]), sid)
                )
            ),
            opts=child,
        )

        layers = None
        if args.powertools_layer:
            parameter = aws.ssm.get_parameter_output(
                name=powertools_layer_parameter(), opts=pulumi.InvokeOutputOptions(parent=self)
            )
            layers = [parameter.value]
        self._function = aws.lambda_.Function(
            names.function,
            name=args.function_name,
            description=args.description,
            role=self._role.arn,
            handler=args.handler,
            runtime=RUNTIME,
            architectures=[ARCHITECTURE],
            code=pulumi.AssetArchive(
                {path: pulumi.FileAsset(str(PROJECT_ROOT / path)) for path in args.modules}
            ),
            layers=layers,
            memory_size=args.memory_mb,
            timeout=args.timeout_seconds,
            reserved_concurrent_executions=args.reserved_concurrency,
            environment=aws.lambda_.FunctionEnvironmentArgs(variables=args.environment),
            logging_config=aws.lambda_.FunctionLoggingConfigArgs(
                log_format="Text", log_group=self._log_group.name
            ),
            tags=tags,
            # The role's permissions and the encrypted log group must exist before the first
            # invocation.
            opts=pulumi.ResourceOptions(
                parent=self,
                aliases=moved,
                depends_on=[*args.depends_on, self._role_policy, self._log_group],
            ),
        )
        self.event_invoke_config = aws.lambda_.FunctionEventInvokeConfig(
            names.invoke_config,
            function_name=self._function.name,
            maximum_retry_attempts=args.maximum_retry_attempts,
            maximum_event_age_in_seconds=args.maximum_event_age_seconds,
            destination_config=aws.lambda_.FunctionEventInvokeConfigDestinationConfigArgs(
                on_failure=aws.lambda_.FunctionEventInvokeConfigDestinationConfigOnFailureArgs(
                    destination=self._queue.arn
                )
            ),
            opts=child,
        )

        for spec in args.alarms:
            aws.cloudwatch.MetricAlarm(
                f"{names.alarm_prefix}-{spec.role}",
                name=f"{args.function_name}-{spec.role}",
                alarm_description=spec.description,
                namespace=spec.namespace,
                metric_name=spec.metric_name,
                dimensions=dict(spec.dimensions),
                statistic=spec.statistic,
                period=spec.period,
                evaluation_periods=1,
                threshold=0,
                comparison_operator="GreaterThanThreshold",
                # No datapoints means no invocations (or an empty, idle queue): nothing wrong.
                treat_missing_data="notBreaching",
                alarm_actions=[args.alarm_topic_arn],
                ok_actions=[args.alarm_topic_arn],
                tags=tags,
                opts=child,
            )

        self.function_name = self._function.name
        self.function_arn = self._function.arn
        self.role_name = self._role.id  # an IAM role's id is its name
        self.role_arn = self._role.arn
        self.log_group_name = self._log_group.name
        self.queue_url = self._queue.url
        self.queue_arn = self._queue.arn
        self.register_outputs(
            {
                "function_name": self.function_name,
                "function_arn": self.function_arn,
                "role_name": self.role_name,
                "role_arn": self.role_arn,
                "log_group_name": self.log_group_name,
                "queue_url": self.queue_url,
                "queue_arn": self.queue_arn,
            }
        )
