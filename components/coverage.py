"""SensorCoverage: know when a node is not watched (docs/coverage.md).

One per cluster; takes the cluster's *name* only, so it works the same for the cluster this
program creates and for an existing one. It declares:

* the heartbeat table (DynamoDB, on demand, TTL, encrypted with this component's own KMS key),
  written by the ingest Lambda (a policy attached to its role: UpdateItem on this table only,
  plus a two-attribute Query for alert enrichment);
* the coverage checker: a MonitoredFunction (``handlers.coverage.handler``) with its own role,
  log group and on-failure queue, invoked by an EventBridge Scheduler schedule whose role may
  only invoke that function (and put undeliverable invocations in the same queue);
* alarms: coverage below 100% for two checks in a row (missing data breaching: a checker that
  does not run is a gap too), the alert log group silent for two heartbeat intervals (the
  pipeline's liveness), checker errors, undeliverable failures, and events in the queue.

IAM and key policies are pure functions below (plain arguments, dict results), as in
findings_pipeline.py, so tests read back what a reviewer sees in `pulumi preview --diff`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from components.key_policy import (
    account_root_statement,
    cloudwatch_logs_statement,
    customer_managed_key,
    dynamodb_describes_key_statement,
    table_key_use_statement,
)
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
from handlers import heartbeat
from handlers.names import (
    METRICS_NAMESPACE,
    custom_product_arn,
    dynamodb_table_arn,
    heartbeat_table_name,
    securityhub_hub_arn,
)

COMPONENT_TYPE = "falco-securityhub:index:SensorCoverage"
HANDLER = "handlers.coverage.handler"

# The checker's package: its own module and what it imports (a test imports handlers.coverage
# in a fresh interpreter and fails if it loads a handlers module not listed here).
CHECKER_MODULES: tuple[str, ...] = (
    "handlers/__init__.py",
    "handlers/alerts.py",
    "handlers/coverage.py",
    "handlers/findings.py",
    "handlers/heartbeat.py",
    "handlers/names.py",
    "handlers/securityhub.py",
)

# A check reads the inventory, one table partition and the open coverage findings, and imports
# only changes: seconds even for hundreds of nodes. The timeout leaves room for botocore's
# throttling retries.
CHECKER_TIMEOUT_SECONDS = 120
CHECKER_MEMORY_MB = 256
# Lambda retries a failed check twice, a minute or two apart, then parks the event in the queue;
# a check older than this is superseded by the next scheduled one and goes to the queue instead.
CHECKER_RETRY_ATTEMPTS = 2
CHECKER_MAXIMUM_EVENT_AGE_SECONDS = 15 * 60
# Scheduler's own retries when it cannot hand the event to Lambda (throttling, Lambda errors
# on Invoke); after that the event goes to the dead-letter queue (the same queue).
SCHEDULER_RETRY_ATTEMPTS = 3

# Attributes the ingest Lambda may touch (its IAM conditions name exactly these).
INGEST_WRITE_ATTRIBUTES = (
    heartbeat.CLUSTER,
    heartbeat.NODE,
    heartbeat.SEEN_AT,
    heartbeat.FALCO_VERSION,
    heartbeat.DROP_PCT,
    heartbeat.EVENTS,
    heartbeat.EXPIRES_AT,
)
INGEST_READ_ATTRIBUTES = (heartbeat.CLUSTER, heartbeat.NODE, heartbeat.INSTANCE_ID)


@dataclass
class SensorCoverageArgs:
    cluster_name: str
    """The EKS cluster's name: created by this program or existing, the checker only needs it."""
    region: str
    account_id: str
    partition: str
    alert_log_group_name: pulumi.Input[str]
    """The findings pipeline's alert log group: its IncomingLogEvents are the liveness signal."""
    ingest_role_name: pulumi.Input[str]
    """The ingest Lambda's role: gets write access to the heartbeat table."""
    alarm_topic_arn: pulumi.Input[str]
    security_hub: pulumi.Resource
    """Security Hub must be enabled before the checker's first import."""
    heartbeat_interval_minutes: int
    check_interval_minutes: int
    grace_minutes: int
    drop_threshold_percent: int
    log_retention_days: int
    tags: dict[str, str] = field(default_factory=dict)


# -- names (pure) ------------------------------------------------------------------------------
def checker_name_for(cluster_name: str) -> str:
    # As long as the findings function's name, whose length the settings check.
    return f"{cluster_name}-falco-coverage"


def table_arn(partition: str, region: str, account_id: str, cluster_name: str) -> str:
    return dynamodb_table_arn(partition, region, account_id, heartbeat_table_name(cluster_name))


def schedule_expression(minutes: int) -> str:
    return f"rate({minutes} minutes)" if minutes != 1 else "rate(1 minute)"


# -- policies (pure) ---------------------------------------------------------------------------
def key_policy(partition: str, region: str, account_id: str, checker_log_group: str) -> dict:
    """The coverage key: the heartbeat table, the checker's log group and its queue.

    - Account root: keeps the key manageable; the roles' IAM policies grant its use, each only
      through DynamoDB or SQS (kms:ViaService).
    - DynamoDB may describe the key (what AWS documents for tables with a customer managed key).
    - CloudWatch Logs only for the checker's log group.
    """
    return {
        "Version": "2012-10-17",
        "Statement": [
            account_root_statement(partition, account_id, "AccountRootManagesKeyAndDelegatesToIam"),
            dynamodb_describes_key_statement(),
            cloudwatch_logs_statement(
                partition, region, account_id, [checker_log_group], "CloudWatchLogsForTheChecker"
            ),
        ],
    }


def ingest_policy(
    partition: str, region: str, account_id: str, cluster_name: str, key_arn: str
) -> dict:
    """What the ingest Lambda gains: write its cluster's heartbeats, read node -> instance."""
    table = table_arn(partition, region, account_id, cluster_name)
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                # Only heartbeat attributes of this cluster's items: it cannot touch the
                # checker's instance ids or another cluster's rows, nor read items back.
                "Sid": "RecordHeartbeats",
                "Effect": "Allow",
                "Action": "dynamodb:UpdateItem",
                "Resource": table,
                "Condition": {
                    "ForAllValues:StringEquals": {
                        "dynamodb:LeadingKeys": [cluster_name],
                        "dynamodb:Attributes": list(INGEST_WRITE_ATTRIBUTES),
                    },
                    "StringEqualsIfExists": {"dynamodb:ReturnValues": "NONE"},
                },
            },
            {
                # Alert enrichment (heartbeat.InstanceDirectory): node name and instance id only.
                "Sid": "ReadNodeInstances",
                "Effect": "Allow",
                "Action": "dynamodb:Query",
                "Resource": table,
                "Condition": {
                    "ForAllValues:StringEquals": {
                        "dynamodb:LeadingKeys": [cluster_name],
                        "dynamodb:Attributes": list(INGEST_READ_ATTRIBUTES),
                    },
                    "StringEquals": {"dynamodb:Select": "SPECIFIC_ATTRIBUTES"},
                },
            },
            table_key_use_statement("UseTheTableKeyThroughDynamoDB", region, key_arn),
        ],
    }


def checker_policy(
    partition: str,
    region: str,
    account_id: str,
    cluster_name: str,
    function_log_group: str,
    queue_arn: str,
    key_arn: str,
) -> dict:
    """Everything the checker may do, each action on the narrowest resource AWS supports."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            own_log_streams_statement(partition, region, account_id, function_log_group),
            {
                # DescribeInstances supports no resource-level permissions ("*" only) and no tag
                # conditions; the Region condition keeps it to this stack's Region.
                "Sid": "ReadTheNodeInventory",
                "Effect": "Allow",
                "Action": "ec2:DescribeInstances",
                "Resource": "*",
                "Condition": {"StringEquals": {"aws:RequestedRegion": region}},
            },
            {
                "Sid": "ReadHeartbeatsAndRecordInstances",
                "Effect": "Allow",
                "Action": ["dynamodb:Query", "dynamodb:UpdateItem"],
                "Resource": table_arn(partition, region, account_id, cluster_name),
                "Condition": {
                    "ForAllValues:StringEquals": {"dynamodb:LeadingKeys": [cluster_name]}
                },
            },
            table_key_use_statement("UseTheTableKeyThroughDynamoDB", region, key_arn),
            {
                "Sid": "ImportCoverageFindings",
                "Effect": "Allow",
                "Action": "securityhub:BatchImportFindings",
                "Resource": custom_product_arn(partition, region, account_id),
            },
            {
                # Which coverage findings are open, so that only changes are imported.
                "Sid": "ReadOpenCoverageFindings",
                "Effect": "Allow",
                "Action": "securityhub:GetFindings",
                "Resource": securityhub_hub_arn(partition, region, account_id),
            },
            *on_failure_queue_statements(
                region,
                queue_arn,
                key_arn,
                send_sid="SendFailedChecksToQueue",
                encrypt_sid="EncryptFailedChecksForQueue",
            ),
        ],
    }


def scheduler_assume_role_policy(
    partition: str, region: str, account_id: str, schedule_name: str
) -> dict:
    """Only EventBridge Scheduler, for this account's one schedule, may assume the role."""
    schedule_arn = (
        f"arn:{partition}:scheduler:{region}:{account_id}:schedule/default/{schedule_name}"
    )
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "scheduler.amazonaws.com"},
                "Action": "sts:AssumeRole",
                "Condition": {
                    "StringEquals": {
                        "aws:SourceAccount": account_id,
                        "aws:SourceArn": schedule_arn,
                    }
                },
            }
        ],
    }


def scheduler_policy(region: str, function_arn: str, queue_arn: str, key_arn: str) -> dict:
    """Invoke the checker, nothing else; undeliverable invocations go to the queue."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "InvokeTheChecker",
                "Effect": "Allow",
                "Action": "lambda:InvokeFunction",
                "Resource": [function_arn, f"{function_arn}:*"],
            },
            {
                "Sid": "DeadLetterUndeliverableChecks",
                "Effect": "Allow",
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
            },
            {
                "Sid": "EncryptForQueue",
                "Effect": "Allow",
                "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
                "Resource": key_arn,
                "Condition": {"StringEquals": {"kms:ViaService": f"sqs.{region}.amazonaws.com"}},
            },
        ],
    }


def _checker_alarms(checker: str) -> list[AlarmSpec]:
    """The checker's own failures; the coverage and liveness alarms are SensorCoverage's."""
    return [
        function_alarm(
            checker,
            "errors",
            "The coverage check failed (AWS error, or Security Hub refused a finding). "
            "Lambda retries twice, then parks the event in the failed-checks queue.",
            "Errors",
            300,
        ),
        function_alarm(
            checker,
            "destination-failures",
            "A failed coverage check could not be put in its queue: check the role's "
            "sqs/kms permissions.",
            "DestinationDeliveryFailures",
            300,
        ),
        failed_queue_alarm(
            checker,
            "failed-checks",
            "Coverage checks are waiting in the failed-checks queue (function errors or "
            "invocations Scheduler could not deliver). The next check runs anyway.",
        ),
    ]


class SensorCoverage(pulumi.ComponentResource):
    """Heartbeat table, coverage checker and its schedule, coverage and liveness alarms."""

    table_name: pulumi.Output[str]
    table_arn: pulumi.Output[str]
    kms_key_arn: pulumi.Output[str]
    checker_function_name: pulumi.Output[str]
    failed_checks_queue_url: pulumi.Output[str]
    coverage_alarm_name: pulumi.Output[str]
    liveness_alarm_name: pulumi.Output[str]

    def __init__(
        self, name: str, args: SensorCoverageArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(COMPONENT_TYPE, name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = dict(args.tags)
        checker = checker_name_for(args.cluster_name)
        checker_group_name = function_log_group_name_for(checker)

        self._key = customer_managed_key(
            f"{name}-key",
            description=f"Falco sensor coverage for {args.cluster_name}: heartbeats, checker",
            policy=policy_json(
                key_policy(args.partition, args.region, args.account_id, checker_group_name)
            ),
            tags=tags,
            parent=self,
            alias=checker,
        )
        after_key = pulumi.ResourceOptions(parent=self, depends_on=[self._key])

        # -- heartbeat table ------------------------------------------------------------------
        # No point-in-time recovery: the table is state that rebuilds itself within one
        # heartbeat interval (and instance ids within one check).
        self._table = aws.dynamodb.Table(
            f"{name}-heartbeats",
            name=heartbeat_table_name(args.cluster_name),
            billing_mode="PAY_PER_REQUEST",
            hash_key=heartbeat.CLUSTER,
            range_key=heartbeat.NODE,
            attributes=[
                aws.dynamodb.TableAttributeArgs(name=heartbeat.CLUSTER, type="S"),
                aws.dynamodb.TableAttributeArgs(name=heartbeat.NODE, type="S"),
            ],
            ttl=aws.dynamodb.TableTtlArgs(attribute_name=heartbeat.EXPIRES_AT, enabled=True),
            server_side_encryption=aws.dynamodb.TableServerSideEncryptionArgs(
                enabled=True, kms_key_arn=self._key.arn
            ),
            tags=tags,
            opts=after_key,
        )
        aws.iam.RolePolicy(
            f"{name}-ingest-heartbeats",
            role=args.ingest_role_name,
            policy=self._key.arn.apply(
                lambda key_arn: policy_json(
                    ingest_policy(
                        args.partition, args.region, args.account_id, args.cluster_name, key_arn
                    )
                )
            ),
            opts=child,
        )

        # -- checker and its schedule --------------------------------------------------------
        # The scheduler's role comes first: it may fill the checker's queue too.
        schedule_name = checker
        self._scheduler_role = aws.iam.Role(
            f"{name}-scheduler-role",
            description=f"EventBridge Scheduler: invokes {checker} only",
            assume_role_policy=policy_json(
                scheduler_assume_role_policy(
                    args.partition, args.region, args.account_id, schedule_name
                )
            ),
            tags=tags,
            opts=child,
        )
        self._checker = MonitoredFunction(
            f"{name}-checker",
            MonitoredFunctionArgs(
                function_name=checker,
                description=f"Compares Falco heartbeats with the EC2 nodes of {args.cluster_name}",
                handler=HANDLER,
                modules=CHECKER_MODULES,
                memory_mb=CHECKER_MEMORY_MB,
                timeout_seconds=CHECKER_TIMEOUT_SECONDS,
                environment={
                    "CLUSTER_NAME": args.cluster_name,
                    "HEARTBEAT_INTERVAL_SECONDS": str(args.heartbeat_interval_minutes * 60),
                    "GRACE_SECONDS": str(args.grace_minutes * 60),
                    "DROP_THRESHOLD_PERCENT": str(args.drop_threshold_percent),
                },
                region=args.region,
                account_id=args.account_id,
                key=self._key,
                log_retention_days=args.log_retention_days,
                role_description=(
                    f"Falco coverage checker for {args.cluster_name} in {args.region}"
                ),
                role_policy=lambda queue_arn, key_arn: checker_policy(
                    args.partition,
                    args.region,
                    args.account_id,
                    args.cluster_name,
                    checker_group_name,
                    queue_arn=queue_arn,
                    key_arn=key_arn,
                ),
                queue_sender_sid="OnlyTheCheckerAndItsScheduleSend",
                extra_queue_senders=[self._scheduler_role.arn],
                maximum_retry_attempts=CHECKER_RETRY_ATTEMPTS,
                maximum_event_age_seconds=CHECKER_MAXIMUM_EVENT_AGE_SECONDS,
                alarm_topic_arn=args.alarm_topic_arn,
                alarms=_checker_alarms(checker),
                depends_on=[args.security_hub, self._table],
                names=ResourceNames(
                    log_group=f"{name}-checker-logs",
                    queue=f"{name}-failed-checks",
                    queue_policy=f"{name}-failed-checks-policy",
                    role=f"{name}-checker-role",
                    role_policy=f"{name}-checker-policy",
                    function=f"{name}-checker",
                    invoke_config=f"{name}-checker-async",
                    alarm_prefix=name,
                ),
                tags=tags,
            ),
            opts=child,
        )
        scheduler_policy_resource = aws.iam.RolePolicy(
            f"{name}-scheduler-policy",
            role=self._scheduler_role.id,
            policy=pulumi.Output.all(
                self._checker.function_arn, self._checker.queue_arn, self._key.arn
            ).apply(
                lambda arns: policy_json(scheduler_policy(args.region, arns[0], arns[1], arns[2]))
            ),
            opts=child,
        )
        self._schedule = aws.scheduler.Schedule(
            f"{name}-schedule",
            name=schedule_name,
            description=f"Falco sensor coverage check of {args.cluster_name}",
            schedule_expression=schedule_expression(args.check_interval_minutes),
            flexible_time_window=aws.scheduler.ScheduleFlexibleTimeWindowArgs(mode="OFF"),
            target=aws.scheduler.ScheduleTargetArgs(
                arn=self._checker.function_arn,
                role_arn=self._scheduler_role.arn,
                input="{}",
                retry_policy=aws.scheduler.ScheduleTargetRetryPolicyArgs(
                    maximum_retry_attempts=SCHEDULER_RETRY_ATTEMPTS,
                    maximum_event_age_in_seconds=args.check_interval_minutes * 60,
                ),
                dead_letter_config=aws.scheduler.ScheduleTargetDeadLetterConfigArgs(
                    arn=self._checker.queue_arn
                ),
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[scheduler_policy_resource]),
        )

        # -- alarms -------------------------------------------------------------------------
        alarm = {
            "alarm_actions": [args.alarm_topic_arn],
            "ok_actions": [args.alarm_topic_arn],
            "tags": tags,
            "opts": child,
        }
        self._coverage_alarm = aws.cloudwatch.MetricAlarm(
            f"{name}-coverage",
            name=f"{checker}-below-100",
            alarm_description=(
                f"Falco does not watch every node of {args.cluster_name} (two checks in a row), "
                "or the coverage checker did not run. Security Hub lists each node as a "
                "'Falco is not reporting' finding; docs/coverage.md says what to do."
            ),
            namespace=METRICS_NAMESPACE,
            metric_name="CoveragePercent",
            dimensions={"Cluster": args.cluster_name},
            statistic="Minimum",
            period=args.check_interval_minutes * 60,
            evaluation_periods=2,
            datapoints_to_alarm=2,
            threshold=100,
            comparison_operator="LessThanThreshold",
            # No datapoint means no check ran: coverage unknown is a gap, not "fine".
            treat_missing_data="breaching",
            **alarm,
        )
        self._liveness_alarm = aws.cloudwatch.MetricAlarm(
            f"{name}-liveness",
            name=f"{checker}-alerts-silent",
            alarm_description=(
                f"No Falco output reached the alert log group of {args.cluster_name} for two "
                "heartbeat intervals: every node sends a heartbeat each interval, so Falco, "
                "Fluent Bit, or their access to CloudWatch Logs is broken."
            ),
            namespace="AWS/Logs",
            metric_name="IncomingLogEvents",
            dimensions={"LogGroupName": args.alert_log_group_name},
            statistic="Sum",
            period=args.heartbeat_interval_minutes * 60,
            evaluation_periods=2,
            datapoints_to_alarm=2,
            threshold=0,
            comparison_operator="LessThanOrEqualToThreshold",
            treat_missing_data="breaching",
            **alarm,
        )
        self.table_name = self._table.name
        self.table_arn = self._table.arn
        self.kms_key_arn = self._key.arn
        self.checker_function_name = self._checker.function_name
        self.failed_checks_queue_url = self._checker.queue_url
        self.coverage_alarm_name = self._coverage_alarm.name
        self.liveness_alarm_name = self._liveness_alarm.name
        self.register_outputs(
            {
                "table_name": self.table_name,
                "table_arn": self.table_arn,
                "kms_key_arn": self.kms_key_arn,
                "checker_function_name": self.checker_function_name,
                "failed_checks_queue_url": self.failed_checks_queue_url,
                "coverage_alarm_name": self.coverage_alarm_name,
                "liveness_alarm_name": self.liveness_alarm_name,
            }
        )
