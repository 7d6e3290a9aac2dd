"""FindingsPipeline: Falco alert log group -> subscription filter -> Lambda -> Security Hub.

One per region stack. Everything at rest is encrypted with customer-managed KMS keys, each
granting only what its users need: the pipeline key encrypts the Falco alert log group, the
function's own log group and the on-failure queue (CloudWatch Logs through the key policy, SQS
through the function role's policy; see `key_policy`); the alarm topic has a key of its own, the
only one CloudWatch alarms may use (`alarm_key_policy`), so alarms can never decrypt alert data.

IAM and resource policies are built by the pure functions in this module (plain `str` arguments,
`dict` result) so tests read back exactly what a reviewer would see in `pulumi preview --diff`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws

from components.key_policy import account_root_statement, cloudwatch_logs_statement
from handlers.names import (
    METRICS_NAMESPACE,
    SERVICE_NAME,
    custom_product_arn,
    log_group_arn,
    occurrences_table_name,
)

COMPONENT_TYPE = "falco-securityhub:index:FindingsPipeline"

HANDLER = "handlers.ingest.handler"

# The Lambda package holds exactly these modules (see handlers/__init__.py). replay.py, demo.py
# and __main__.py are developer tools and stay out of the function; boto3 comes from the runtime
# and Powertools from the AWS-managed layer. A test imports handlers.ingest and fails if it loads a
# handlers module that is not listed here.
HANDLER_MODULES: tuple[str, ...] = (
    "handlers/__init__.py",
    "handlers/alerts.py",
    "handlers/asff.py",
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


# Lambda retries a failed asynchronous invocation twice (the maximum) before handing the event to
# the on-failure queue: the handler is idempotent (finding Ids are derived from the log event), so
# a retry never duplicates a finding.
MAXIMUM_RETRY_ATTEMPTS = 2
# Events that wait in Lambda's own queue because of throttling (reserved concurrency reached) are
# kept for the maximum of 6 hours before going to the on-failure queue: a late finding is better
# than a parked one, and anything older is still kept for 14 days in the queue below.
MAXIMUM_EVENT_AGE_SECONDS = 6 * 60 * 60
# The longest SQS keeps a message: time to notice the alarm and re-drive by hand.
FAILED_EVENT_RETENTION_SECONDS = 14 * 24 * 60 * 60

# Every Falco JSON alert carries the keys "rule" and "priority" (Falco >= 0.33 always writes them).
# Two plain terms match them in every shape Fluent Bit ships: the raw alert, a record with the alert
# as an escaped JSON string in `log` (`\"rule\":`), and the alert merged under a key or at the top
# level. A JSON pattern such as `{ $.rule = * }` would miss the `log`-string shape (the key is
# inside a string), and an empty pattern would invoke the function for every Falco banner and
# stderr line. The handler still parses and filters each event; this only keeps noise out.
FILTER_PATTERN = "rule priority"

MAX_SHADOW_RULES_TEXT = 2048

# Lambda's function-name limit.
MAX_FUNCTION_NAME_LENGTH = 64


@dataclass
class FindingsPipelineArgs:
    """What the pipeline needs; plain values except `security_hub` (a resource to wait for)."""

    cluster_name: str
    region: str
    account_id: str
    partition: str
    log_retention_days: int
    lambda_memory_mb: int
    lambda_timeout_seconds: int
    # Upper bound on concurrent importers; see docs/security-hub.md ("Sizing") for how it keeps
    # BatchImportFindings near its 10 requests/s (burst 30) quota. None: no reservation.
    reserved_concurrency: int | None
    min_priority: str
    alarm_email: str | None
    security_hub: pulumi.Resource
    tags: dict[str, str] = field(default_factory=dict)
    # Issue 12 (docs/storms.md): repeats across invocations are counted in the cluster's
    # occurrence table (components/storm_state.py) over windows of this many minutes; None
    # leaves the function coalescing within one invocation only.
    occurrence_window_minutes: int | None = None
    # Shadow rules of the custom rules file: the only values of the ShadowAlerts Rule dimension.
    shadow_rules: Sequence[str] = ()


# --------------------------------------------------------------------------------------------
# Names and ARNs (pure)
# --------------------------------------------------------------------------------------------
def function_name_for(cluster_name: str) -> str:
    """The Lambda's name; explicit so its log group name and ARNs are known before deployment."""
    return f"{cluster_name}-falco-findings"


def alert_log_group_name_for(cluster_name: str) -> str:
    return f"/falco/{cluster_name}/alerts"


def function_log_group_name_for(function_name: str) -> str:
    return f"/aws/lambda/{function_name}"


def storm_environment(
    cluster_name: str, window_minutes: int | None, shadow_rules: Sequence[str]
) -> dict[str, str]:
    """The function's issue 12 variables (handlers/occurrences.py, handlers/shadow.py)."""
    variables: dict[str, str] = {}
    if window_minutes is not None:
        variables["OCCURRENCES_TABLE"] = occurrences_table_name(cluster_name)
        variables["OCCURRENCE_WINDOW_SECONDS"] = str(window_minutes * 60)
    # Lambda allows 4 KB of environment in all: the rule names get at most half. Rules beyond it
    # are still counted, under "(other shadow rules)".
    named: list[str] = []
    for rule in shadow_rules:
        if len(json.dumps([*named, rule], separators=(",", ":"))) > MAX_SHADOW_RULES_TEXT:
            break
        named.append(rule)
    if named:
        variables["SHADOW_RULES"] = json.dumps(named, separators=(",", ":"))
    return variables


def powertools_layer_parameter(version: str = POWERTOOLS_VERSION) -> str:
    """The public SSM parameter whose value is the AWS-managed Powertools layer ARN for
    RUNTIME and ARCHITECTURE (e.g. ``/aws/service/powertools/python/arm64/python3.12/3.37.0``)."""
    return f"/aws/service/powertools/python/{ARCHITECTURE}/{RUNTIME.value}/{version}"


# --------------------------------------------------------------------------------------------
# Policy documents (pure)
# --------------------------------------------------------------------------------------------
def key_policy(partition: str, region: str, account_id: str, log_group_names: list[str]) -> dict:
    """Key policy for the pipeline's KMS key (alert and function logs, on-failure queue).

    - The account-root statement keeps the key manageable and lets IAM policies grant its use
      (that is how the function role gets kms:GenerateDataKey/Decrypt for the SQS queue, and how an
      operator re-driving the queue gets kms:Decrypt); without it the key could become unmanageable.
    - CloudWatch Logs may use it only for this stack's log groups: the encryption-context condition
      names each group's exact ARN, so no other log group (in this or any account) can use the key.
    No service principal besides CloudWatch Logs: alarms publish with their own key
    (`alarm_key_policy`). In a key policy, "Resource": "*" means "this key".
    """
    return {
        "Version": "2012-10-17",
        "Statement": [
            account_root_statement(partition, account_id, "AccountRootManagesKeyAndDelegatesToIam"),
            cloudwatch_logs_statement(
                partition,
                region,
                account_id,
                log_group_names,
                "CloudWatchLogsForThisStacksLogGroups",
            ),
        ],
    }


def alarm_key_policy(partition: str, account_id: str) -> dict:
    """Key policy for the alarm topic's own KMS key: the account root, and CloudWatch alarms.

    CloudWatch alarms publish to the KMS-encrypted topic as `cloudwatch.amazonaws.com`, which needs
    kms:GenerateDataKey*/Decrypt in the key policy. AWS documents no usable condition for this
    caller (kms:CallerAccount, for one, makes delivery fail); the topic policy is what restricts
    publishing to this account's alarms, and this key encrypts nothing but alarm notifications.
    """
    return {
        "Version": "2012-10-17",
        "Statement": [
            account_root_statement(partition, account_id, "AccountRootManagesKeyAndDelegatesToIam"),
            {
                "Sid": "CloudWatchAlarmsPublishToEncryptedTopic",
                "Effect": "Allow",
                "Principal": {"Service": "cloudwatch.amazonaws.com"},
                "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
                "Resource": "*",
            },
        ],
    }


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


def lambda_role_policy(
    partition: str,
    region: str,
    account_id: str,
    function_log_group: str,
    queue_arn: str,
    key_arn: str,
) -> dict:
    """Everything the function may do, each action on exactly one resource."""
    group = log_group_arn(partition, region, account_id, function_log_group)
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                # The group itself is created by this component; the function only adds streams
                # and events to it (no logs:CreateLogGroup, so it cannot make an unencrypted one).
                "Sid": "WriteOwnLogStreams",
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": f"{group}:*",
            },
            {
                "Sid": "ImportFindingsAsThisAccountsCustomProduct",
                "Effect": "Allow",
                "Action": "securityhub:BatchImportFindings",
                "Resource": custom_product_arn(partition, region, account_id),
            },
            {
                # Lambda delivers failed asynchronous events to the on-failure destination with
                # the function's execution role.
                "Sid": "SendFailedEventsToOnFailureQueue",
                "Effect": "Allow",
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
            },
            {
                # SendMessage to a KMS-encrypted queue needs a data key; only through SQS.
                "Sid": "EncryptFailedEventsForQueue",
                "Effect": "Allow",
                "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
                "Resource": key_arn,
                "Condition": {"StringEquals": {"kms:ViaService": f"sqs.{region}.amazonaws.com"}},
            },
        ],
    }


def queue_policy(queue_arn: str, function_role_arn: str) -> dict:
    """Only the function's role may put messages in the on-failure queue, and only over TLS."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "OnlyTheFindingsFunctionSends",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnNotEquals": {"aws:PrincipalArn": function_role_arn}},
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


def alarm_topic_policy(partition: str, region: str, account_id: str, topic_arn: str) -> dict:
    """CloudWatch may publish to the alarm topic, and only for this account's alarms."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ThisAccountsAlarmsPublish",
                "Effect": "Allow",
                "Principal": {"Service": "cloudwatch.amazonaws.com"},
                "Action": "sns:Publish",
                "Resource": topic_arn,
                "Condition": {
                    "ArnLike": {
                        "aws:SourceArn": f"arn:{partition}:cloudwatch:{region}:{account_id}:alarm:*"
                    },
                    "StringEquals": {"aws:SourceAccount": account_id},
                },
            }
        ],
    }


def _json(document: dict[str, Any]) -> str:
    return json.dumps(document, sort_keys=True)


@dataclass(frozen=True)
class _AlarmSpec:
    role: str
    description: str
    namespace: str
    metric_name: str
    statistic: str
    period: int


class FindingsPipeline(pulumi.ComponentResource):
    """Falco alerts in CloudWatch Logs become Security Hub findings; failures are kept and paged."""

    kms_key_arn: pulumi.Output[str]
    log_group_name: pulumi.Output[str]
    log_group_arn: pulumi.Output[str]
    function_log_group_name: pulumi.Output[str]
    function_name: pulumi.Output[str]
    function_arn: pulumi.Output[str]
    dead_letter_queue_url: pulumi.Output[str]
    dead_letter_queue_arn: pulumi.Output[str]
    alarm_topic_arn: pulumi.Output[str]
    alarm_key_arn: pulumi.Output[str]
    function_role_name: pulumi.Output[str]

    def __init__(
        self, name: str, args: FindingsPipelineArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(COMPONENT_TYPE, name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = dict(args.tags)

        function_name = function_name_for(args.cluster_name)
        alert_group_name = alert_log_group_name_for(args.cluster_name)
        function_group_name = function_log_group_name_for(function_name)

        # -- encryption ---------------------------------------------------------------------
        # The policy is part of the key (set by CreateKey), so anything that references the key
        # ARN waits for a key whose policy already lets CloudWatch Logs use it.
        self._key = aws.kms.Key(
            f"{name}-key",
            description=f"Falco findings pipeline for {args.cluster_name}: logs and queue",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            policy=_json(
                key_policy(
                    args.partition,
                    args.region,
                    args.account_id,
                    [alert_group_name, function_group_name],
                )
            ),
            tags=tags,
            opts=child,
        )
        self._key_alias = aws.kms.Alias(
            f"{name}-key-alias",
            name=f"alias/{function_name}",
            target_key_id=self._key.key_id,
            opts=child,
        )
        after_key = pulumi.ResourceOptions(parent=self, depends_on=[self._key])

        # -- log groups ---------------------------------------------------------------------
        self._alert_log_group = aws.cloudwatch.LogGroup(
            f"{name}-alerts",
            name=alert_group_name,
            retention_in_days=args.log_retention_days,
            kms_key_id=self._key.arn,
            tags=tags,
            opts=after_key,
        )
        # Created here, encrypted and with retention, before the function exists: otherwise Lambda
        # creates /aws/lambda/<name> on first run, unencrypted and kept forever.
        self._function_log_group = aws.cloudwatch.LogGroup(
            f"{name}-function-logs",
            name=function_group_name,
            retention_in_days=args.log_retention_days,
            kms_key_id=self._key.arn,
            tags=tags,
            opts=after_key,
        )

        # -- on-failure queue and alarm topic -----------------------------------------------
        self._failed_events = aws.sqs.Queue(
            f"{name}-failed-events",
            name=f"{function_name}-failed",
            kms_master_key_id=self._key.arn,
            message_retention_seconds=FAILED_EVENT_RETENTION_SECONDS,
            tags=tags,
            opts=after_key,
        )
        self._alarm_key = aws.kms.Key(
            f"{name}-alarms-key",
            description=f"Falco findings pipeline for {args.cluster_name}: alarm notifications",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            policy=_json(alarm_key_policy(args.partition, args.account_id)),
            tags=tags,
            opts=child,
        )
        self._alarm_topic = aws.sns.Topic(
            f"{name}-alarms",
            name=f"{function_name}-alarms",
            kms_master_key_id=self._alarm_key.arn,
            tags=tags,
            opts=child,
        )
        aws.sns.TopicPolicy(
            f"{name}-alarms-policy",
            arn=self._alarm_topic.arn,
            policy=self._alarm_topic.arn.apply(
                lambda arn: _json(
                    alarm_topic_policy(args.partition, args.region, args.account_id, arn)
                )
            ),
            opts=child,
        )
        if args.alarm_email:
            # E-mail endpoints must confirm the subscription from the message SNS sends them.
            aws.sns.TopicSubscription(
                f"{name}-alarms-email",
                topic=self._alarm_topic.arn,
                protocol="email",
                endpoint=args.alarm_email,
                opts=child,
            )

        # -- function role ------------------------------------------------------------------
        self._role = aws.iam.Role(
            f"{name}-role",
            description=f"Falco findings function for {args.cluster_name} in {args.region}",
            assume_role_policy=_json(lambda_assume_role_policy(args.account_id)),
            tags=tags,
            opts=child,
        )
        self._role_policy = aws.iam.RolePolicy(
            f"{name}-role-policy",
            role=self._role.id,
            policy=pulumi.Output.all(self._failed_events.arn, self._key.arn).apply(
                lambda arns: _json(
                    lambda_role_policy(
                        args.partition,
                        args.region,
                        args.account_id,
                        function_group_name,
                        queue_arn=arns[0],
                        key_arn=arns[1],
                    )
                )
            ),
            opts=child,
        )
        aws.sqs.QueuePolicy(
            f"{name}-failed-events-policy",
            queue_url=self._failed_events.url,
            policy=pulumi.Output.all(self._failed_events.arn, self._role.arn).apply(
                lambda arns: _json(queue_policy(arns[0], arns[1]))
            ),
            opts=child,
        )

        # -- function -----------------------------------------------------------------------
        powertools_layer = aws.ssm.get_parameter_output(
            name=powertools_layer_parameter(), opts=pulumi.InvokeOutputOptions(parent=self)
        )
        code = pulumi.AssetArchive(
            {path: pulumi.FileAsset(str(PROJECT_ROOT / path)) for path in HANDLER_MODULES}
        )
        self._function = aws.lambda_.Function(
            f"{name}-function",
            name=function_name,
            description=f"Imports Falco alerts from {alert_group_name} into Security Hub",
            role=self._role.arn,
            handler=HANDLER,
            runtime=RUNTIME,
            architectures=[ARCHITECTURE],
            code=code,
            layers=[powertools_layer.value],
            memory_size=args.lambda_memory_mb,
            timeout=args.lambda_timeout_seconds,
            # Reserved concurrency C bounds the BatchImportFindings rate, whose quota is 10 req/s
            # (burst 30) per account and region. Each instance sends its calls one after another
            # (one per 100 findings), and a call takes roughly 200-500 ms, so an instance makes at
            # most ~2-5 req/s and C instances at most ~C x 2-5 req/s: C = 2-3 stays within the
            # sustained rate; beyond it the 429s are retried by botocore, refused findings by the
            # handler, and throttled invocations by Lambda. None (the default) omits the argument:
            # no reservation, which new accounts with a concurrency quota of 10 cannot make.
            reserved_concurrent_executions=args.reserved_concurrency,
            environment=aws.lambda_.FunctionEnvironmentArgs(
                variables={
                    "CLUSTER_NAME": args.cluster_name,
                    "MIN_PRIORITY": args.min_priority,
                    "POWERTOOLS_SERVICE_NAME": SERVICE_NAME,
                    "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
                    **storm_environment(
                        args.cluster_name, args.occurrence_window_minutes, args.shadow_rules
                    ),
                }
            ),
            logging_config=aws.lambda_.FunctionLoggingConfigArgs(
                log_format="Text", log_group=self._function_log_group.name
            ),
            tags=tags,
            # Security Hub must be enabled before the first import; the role's permissions and the
            # encrypted log group must exist before the first invocation.
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[args.security_hub, self._role_policy, self._function_log_group],
            ),
        )

        self._event_invoke_config = aws.lambda_.FunctionEventInvokeConfig(
            f"{name}-async",
            function_name=self._function.name,
            maximum_retry_attempts=MAXIMUM_RETRY_ATTEMPTS,
            maximum_event_age_in_seconds=MAXIMUM_EVENT_AGE_SECONDS,
            destination_config=aws.lambda_.FunctionEventInvokeConfigDestinationConfigArgs(
                on_failure=aws.lambda_.FunctionEventInvokeConfigDestinationConfigOnFailureArgs(
                    destination=self._failed_events.arn
                )
            ),
            opts=child,
        )

        # -- subscription -------------------------------------------------------------------
        self._permission = aws.lambda_.Permission(
            f"{name}-invoke-from-logs",
            action="lambda:InvokeFunction",
            function=self._function.name,
            principal=f"logs.{args.region}.amazonaws.com",
            source_arn=self._alert_log_group.arn.apply(lambda arn: f"{arn}:*"),
            source_account=args.account_id,
            opts=child,
        )
        # CloudWatch Logs test-invokes the destination when the filter is created: the permission
        # must already be in place, or the filter creation fails. The retry and on-failure
        # configuration too: an alert delivered before it exists would get Lambda's defaults
        # (kept no longer than Lambda's own queue, no on-failure queue) and could be lost.
        self._subscription = aws.cloudwatch.LogSubscriptionFilter(
            f"{name}-subscription",
            name=f"{function_name}-subscription",
            log_group=self._alert_log_group.name,
            filter_pattern=FILTER_PATTERN,
            destination_arn=self._function.arn,
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[self._permission, self._event_invoke_config]
            ),
        )

        # -- alarms -------------------------------------------------------------------------
        self._alarms = self._declare_alarms(name, function_name, tags)

        self.kms_key_arn = self._key.arn
        self.log_group_name = self._alert_log_group.name
        self.log_group_arn = self._alert_log_group.arn
        self.function_log_group_name = self._function_log_group.name
        self.function_name = self._function.name
        self.function_arn = self._function.arn
        self.dead_letter_queue_url = self._failed_events.url
        self.dead_letter_queue_arn = self._failed_events.arn
        self.alarm_topic_arn = self._alarm_topic.arn
        self.alarm_key_arn = self._alarm_key.arn
        # Sensor coverage (components/coverage.py) attaches the heartbeat table's policy here.
        self.function_role_name = self._role.id  # an IAM role's id is its name
        self.register_outputs(
            {
                "kms_key_arn": self.kms_key_arn,
                "log_group_name": self.log_group_name,
                "log_group_arn": self.log_group_arn,
                "function_name": self.function_name,
                "function_arn": self.function_arn,
                "dead_letter_queue_url": self.dead_letter_queue_url,
                "dead_letter_queue_arn": self.dead_letter_queue_arn,
                "alarm_topic_arn": self.alarm_topic_arn,
                "alarm_key_arn": self.alarm_key_arn,
                "function_log_group_name": self.function_log_group_name,
                "function_role_name": self.function_role_name,
            }
        )

    def _declare_alarms(
        self, name: str, function_name: str, tags: dict[str, str]
    ) -> list[aws.cloudwatch.MetricAlarm]:
        """One alarm per way an alert can fail to become a finding; docs/security-hub.md says
        what to do when each fires."""
        function_dimensions = {"FunctionName": function_name}
        specs = [
            (
                _AlarmSpec(
                    "errors",
                    "Findings function failed: an invocation raised (Security Hub rejected "
                    "findings, or a bug). Lambda retries twice, then parks the event in the "
                    "on-failure queue.",
                    "AWS/Lambda",
                    "Errors",
                    "Sum",
                    60,
                ),
                function_dimensions,
            ),
            (
                _AlarmSpec(
                    "throttles",
                    "Findings function throttled at its reserved concurrency: alerts arrive late "
                    "(Lambda retries throttled events for up to 6 hours).",
                    "AWS/Lambda",
                    "Throttles",
                    "Sum",
                    300,
                ),
                function_dimensions,
            ),
            (
                _AlarmSpec(
                    "destination-failures",
                    "Lambda could not deliver a failed event to the on-failure queue: that alert "
                    "is lost. Check the function role's sqs/kms permissions.",
                    "AWS/Lambda",
                    "DestinationDeliveryFailures",
                    "Sum",
                    60,
                ),
                function_dimensions,
            ),
            (
                _AlarmSpec(
                    "import-failures",
                    "Security Hub refused findings after the handler's retries (the function "
                    "then fails and Lambda retries the event). The function's log says why.",
                    METRICS_NAMESPACE,
                    "ImportFailures",
                    "Sum",
                    300,
                ),
                # Powertools Metrics adds the service name as the `service` dimension.
                {"service": SERVICE_NAME},
            ),
            (
                _AlarmSpec(
                    "failed-events",
                    "Events are waiting in the on-failure queue: alerts that never became "
                    "findings. Fix the cause, then re-drive (docs/security-hub.md).",
                    "AWS/SQS",
                    "ApproximateNumberOfMessagesVisible",
                    "Maximum",
                    300,
                ),
                {"QueueName": f"{function_name}-failed"},
            ),
        ]
        alarms = []
        for spec, dimensions in specs:
            alarms.append(
                aws.cloudwatch.MetricAlarm(
                    f"{name}-{spec.role}",
                    name=f"{function_name}-{spec.role}",
                    alarm_description=spec.description,
                    namespace=spec.namespace,
                    metric_name=spec.metric_name,
                    dimensions=dimensions,
                    statistic=spec.statistic,
                    period=spec.period,
                    evaluation_periods=1,
                    threshold=0,
                    comparison_operator="GreaterThanThreshold",
                    # No datapoints means no invocations (or an empty, idle queue): nothing wrong.
                    treat_missing_data="notBreaching",
                    alarm_actions=[self._alarm_topic.arn],
                    ok_actions=[self._alarm_topic.arn],
                    tags=tags,
                    opts=pulumi.ResourceOptions(parent=self),
                )
            )
        return alarms
