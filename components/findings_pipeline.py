"""FindingsPipeline: Falco alert log group -> subscription filter -> Lambda -> Security Hub.

One per region stack. Everything at rest is encrypted with customer-managed KMS keys, each
granting only what its users need: the pipeline key encrypts the Falco alert log group, the
function's own log group and the on-failure queue (CloudWatch Logs through the key policy, SQS
through the function role's policy; see `key_policy`); the alarm topic has a key of its own, the
only one CloudWatch alarms may use (`alarm_key_policy`), so alarms can never decrypt alert data.

The function, with its log group, role, on-failure queue and alarms, is a MonitoredFunction
(components/monitored_function.py). IAM and resource policies are built by pure functions, here
and there (plain `str` arguments, `dict` result), so tests read back exactly what a reviewer would
see in `pulumi preview --diff`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from components.key_policy import (
    account_root_statement,
    cloudwatch_logs_statement,
    customer_managed_key,
)

# The function's runtime, Powertools version and package root, named here too (`as`: re-exported).
from components.monitored_function import POWERTOOLS_VERSION as POWERTOOLS_VERSION
from components.monitored_function import PROJECT_ROOT as PROJECT_ROOT
from components.monitored_function import RUNTIME as RUNTIME
from components.monitored_function import (
    AlarmSpec,
    MonitoredFunction,
    MonitoredFunctionArgs,
    ResourceNames,
    failed_queue_alarm,
    function_alarm,
    function_log_group_name_for,
    on_failure_queue_statements,
    own_log_streams_statement,
    policy_json,
)
from handlers.names import (
    METRICS_NAMESPACE,
    SERVICE_NAME,
    custom_product_arn,
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

# Lambda retries a failed asynchronous invocation twice (the maximum) before handing the event to
# the on-failure queue: the handler is idempotent (finding Ids are derived from the log event), so
# a retry never duplicates a finding.
MAXIMUM_RETRY_ATTEMPTS = 2
# Events that wait in Lambda's own queue because of throttling (reserved concurrency reached) are
# kept for the maximum of 6 hours before going to the on-failure queue: a late finding is better
# than a parked one, and anything older is still kept for 14 days in the queue below.
MAXIMUM_EVENT_AGE_SECONDS = 6 * 60 * 60

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


def lambda_role_policy(
    partition: str,
    region: str,
    account_id: str,
    function_log_group: str,
    queue_arn: str,
    key_arn: str,
) -> dict:
    """Everything the function may do, each action on exactly one resource."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            own_log_streams_statement(partition, region, account_id, function_log_group),
            {
                "Sid": "ImportFindingsAsThisAccountsCustomProduct",
                "Effect": "Allow",
                "Action": "securityhub:BatchImportFindings",
                "Resource": custom_product_arn(partition, region, account_id),
            },
            *on_failure_queue_statements(
                region,
                queue_arn,
                key_arn,
                send_sid="SendFailedEventsToOnFailureQueue",
                encrypt_sid="EncryptFailedEventsForQueue",
            ),
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


def _alarms(function_name: str) -> list[AlarmSpec]:
    """One alarm per way an alert can fail to become a finding; docs/security-hub.md says
    what to do when each fires."""
    return [
        function_alarm(
            function_name,
            "errors",
            "Findings function failed: an invocation raised (Security Hub rejected "
            "findings, or a bug). Lambda retries twice, then parks the event in the "
            "on-failure queue.",
            "Errors",
            60,
        ),
        function_alarm(
            function_name,
            "throttles",
            "Findings function throttled at its reserved concurrency: alerts arrive late "
            "(Lambda retries throttled events for up to 6 hours).",
            "Throttles",
            300,
        ),
        function_alarm(
            function_name,
            "destination-failures",
            "Lambda could not deliver a failed event to the on-failure queue: that alert "
            "is lost. Check the function role's sqs/kms permissions.",
            "DestinationDeliveryFailures",
            60,
        ),
        AlarmSpec(
            "import-failures",
            "Security Hub refused findings after the handler's retries (the function "
            "then fails and Lambda retries the event). The function's log says why.",
            METRICS_NAMESPACE,
            "ImportFailures",
            "Sum",
            300,
            # Powertools Metrics adds the service name as the `service` dimension.
            {"service": SERVICE_NAME},
        ),
        failed_queue_alarm(
            function_name,
            "failed-events",
            "Events are waiting in the on-failure queue: alerts that never became "
            "findings. Fix the cause, then re-drive (docs/security-hub.md).",
        ),
    ]


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
        self._key = customer_managed_key(
            f"{name}-key",
            description=f"Falco findings pipeline for {args.cluster_name}: logs and queue",
            policy=policy_json(
                key_policy(
                    args.partition,
                    args.region,
                    args.account_id,
                    [alert_group_name, function_group_name],
                )
            ),
            tags=tags,
            parent=self,
            alias=function_name,
        )
        after_key = pulumi.ResourceOptions(parent=self, depends_on=[self._key])

        # -- alert log group ----------------------------------------------------------------
        self._alert_log_group = aws.cloudwatch.LogGroup(
            f"{name}-alerts",
            name=alert_group_name,
            retention_in_days=args.log_retention_days,
            kms_key_id=self._key.arn,
            tags=tags,
            opts=after_key,
        )

        # -- alarm topic ----------------------------------------------------------------------
        self._alarm_key = customer_managed_key(
            f"{name}-alarms-key",
            description=f"Falco findings pipeline for {args.cluster_name}: alarm notifications",
            policy=policy_json(alarm_key_policy(args.partition, args.account_id)),
            tags=tags,
            parent=self,
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
                lambda arn: policy_json(
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

        # -- function -----------------------------------------------------------------------
        self._function = MonitoredFunction(
            f"{name}-ingest",
            MonitoredFunctionArgs(
                function_name=function_name,
                description=f"Imports Falco alerts from {alert_group_name} into Security Hub",
                handler=HANDLER,
                modules=HANDLER_MODULES,
                memory_mb=args.lambda_memory_mb,
                timeout_seconds=args.lambda_timeout_seconds,
                # Reserved concurrency C bounds the BatchImportFindings rate, whose quota is 10
                # req/s (burst 30) per account and region. Each instance sends its calls one after
                # another (one per 100 findings), and a call takes roughly 200-500 ms, so an
                # instance makes at most ~2-5 req/s and C instances at most ~C x 2-5 req/s: C = 2-3
                # stays within the sustained rate; beyond it the 429s are retried by botocore,
                # refused findings by the handler, and throttled invocations by Lambda. None (the
                # default) omits the argument: no reservation, which new accounts with a
                # concurrency quota of 10 cannot make.
                reserved_concurrency=args.reserved_concurrency,
                powertools_layer=True,
                environment={
                    "CLUSTER_NAME": args.cluster_name,
                    "MIN_PRIORITY": args.min_priority,
                    "POWERTOOLS_SERVICE_NAME": SERVICE_NAME,
                    "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
                    **storm_environment(
                        args.cluster_name, args.occurrence_window_minutes, args.shadow_rules
                    ),
                },
                region=args.region,
                account_id=args.account_id,
                key=self._key,
                log_retention_days=args.log_retention_days,
                role_description=(
                    f"Falco findings function for {args.cluster_name} in {args.region}"
                ),
                role_policy=lambda queue_arn, key_arn: lambda_role_policy(
                    args.partition,
                    args.region,
                    args.account_id,
                    function_group_name,
                    queue_arn=queue_arn,
                    key_arn=key_arn,
                ),
                queue_sender_sid="OnlyTheFindingsFunctionSends",
                maximum_retry_attempts=MAXIMUM_RETRY_ATTEMPTS,
                maximum_event_age_seconds=MAXIMUM_EVENT_AGE_SECONDS,
                alarm_topic_arn=self._alarm_topic.arn,
                alarms=_alarms(function_name),
                # Security Hub must be enabled before the first import.
                depends_on=[args.security_hub],
                names=ResourceNames(
                    log_group=f"{name}-function-logs",
                    queue=f"{name}-failed-events",
                    queue_policy=f"{name}-failed-events-policy",
                    role=f"{name}-role",
                    role_policy=f"{name}-role-policy",
                    function=f"{name}-function",
                    invoke_config=f"{name}-async",
                    alarm_prefix=name,
                ),
                tags=tags,
            ),
            opts=child,
        )

        # -- subscription -------------------------------------------------------------------
        self._permission = aws.lambda_.Permission(
            f"{name}-invoke-from-logs",
            action="lambda:InvokeFunction",
            function=self._function.function_name,
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
            destination_arn=self._function.function_arn,
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[self._permission, self._function.event_invoke_config]
            ),
        )

        self.kms_key_arn = self._key.arn
        self.log_group_name = self._alert_log_group.name
        self.log_group_arn = self._alert_log_group.arn
        self.function_log_group_name = self._function.log_group_name
        self.function_name = self._function.function_name
        self.function_arn = self._function.function_arn
        self.dead_letter_queue_url = self._function.queue_url
        self.dead_letter_queue_arn = self._function.queue_arn
        self.alarm_topic_arn = self._alarm_topic.arn
        self.alarm_key_arn = self._alarm_key.arn
        # Sensor coverage (components/coverage.py) attaches the heartbeat table's policy here.
        self.function_role_name = self._function.role_name
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
