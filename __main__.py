"""falco-securityhub: one stack per region; reads the stack's settings and composes components.

Network -> Cluster (or ExistingCluster, looked up by existingClusterName) -> RegionalHub ->
FindingsPipeline -> StormState, Suppressions -> SensorCoverage -> RuntimeSecurity
(-> AuditDetection when the cluster sends its audit log), plus the CentralHub in the Security
Hub home region only; a linked region's stack checks the home stack agrees with it
(components/home_stack.py). Settings: components/settings.py (defaults, checks) and
Pulumi.<stack>.yaml (what differs per stack).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pulumi
import pulumi_aws as aws

from components.audit_detection import (
    AuditDetection,
    AuditDetectionArgs,
    audit_detections_enabled,
    split_custom_rules,
)
from components.central_hub import FALCO_PRODUCT_NAME, CentralHub, CentralHubArgs
from components.cluster import Cluster, ClusterArgs
from components.coverage import SensorCoverage, SensorCoverageArgs
from components.existing_cluster import ExistingCluster, ExistingClusterArgs
from components.findings_pipeline import FindingsPipeline, FindingsPipelineArgs
from components.home_stack import (
    HOME_REGION_OUTPUT,
    LINKED_REGIONS_OUTPUT,
    check_against_home_stack,
)
from components.network import Network, NetworkArgs
from components.regional_hub import RegionalHub, RegionalHubArgs
from components.runtime_security import RuntimeSecurity, RuntimeSecurityArgs
from components.settings import engine_config, load_settings
from components.storm_state import StormState, StormStateArgs
from components.suppressions import Suppressions, SuppressionsArgs
from handlers.shadow import shadow_rules


def findings_console_url(home_region: str, partition: str) -> str:
    """Security Hub's findings page in the home region, filtered to Falco's product name.

    The console reads the filter value URL-encoded twice (`\\operator\\:EQUALS\\:<value>`).
    """
    host = {
        "aws-cn": "console.amazonaws.cn",
        "aws-us-gov": "console.amazonaws-us-gov.com",
    }.get(partition, f"{home_region}.console.aws.amazon.com")
    value = quote(quote(f"\\operator\\:EQUALS\\:{FALCO_PRODUCT_NAME}", safe=""), safe="")
    return (
        f"https://{host}/securityhub/home?region={home_region}"
        f"#/findings?search=ProductName%3D{value}"
    )


settings = load_settings(
    engine_config(), pulumi.get_stack(), project_dir=Path(__file__).resolve().parent
)
caller = aws.get_caller_identity()
account_id = caller.account_id
partition = aws.get_partition().partition
tags = settings.tags

# A linked stack first checks the home stack agrees with it (home region, aggregated regions).
home_stack = (
    None
    if settings.is_home_region
    else check_against_home_stack(settings.stack_name, settings.region, settings.home_region)
)


def own_cluster() -> Cluster:
    network = Network(
        "network",
        NetworkArgs(
            cluster_name=settings.cluster_name,
            cidr_block=settings.vpc_cidr,
            availability_zone_count=settings.availability_zone_count,
            tags=tags,
            account_id=account_id,
            partition=partition,
            region=settings.region,
            nat_gateway_mode=settings.nat_gateways,
            flow_logs=settings.vpc_flow_logs,
            flow_log_retention_days=settings.log_retention_days,
        ),
    )
    return Cluster(
        "cluster",
        ClusterArgs(
            cluster_name=settings.cluster_name,
            kubernetes_version=settings.kubernetes_version,
            vpc_id=network.vpc_id,
            public_subnet_ids=network.public_subnet_ids,
            private_subnet_ids=network.private_subnet_ids,
            node_instance_types=list(settings.node_instance_types),
            node_min_size=settings.node_min_size,
            node_desired_size=settings.node_desired_size,
            node_max_size=settings.node_max_size,
            admin_role_arns=list(settings.admin_role_arns),
            public_access_cidrs=list(settings.public_access_cidrs),
            tags=tags,
            account_id=account_id,
            partition=partition,
            region=settings.region,
            node_ami_type=settings.node_ami_type,
            node_disk_size_gb=settings.node_disk_size_gb,
            endpoint_public_access=settings.endpoint_public_access,
            log_retention_days=settings.log_retention_days,
            pod_identity_agent_version=settings.pod_identity_agent_version,
        ),
    )


def existing_cluster(name: str) -> ExistingCluster:
    return ExistingCluster(
        "existing-cluster",
        ExistingClusterArgs(
            cluster_name=name,
            region=settings.region,
            account_id=account_id,
            partition=partition,
            deployer_arn=caller.arn,
            install_pod_identity_agent=settings.install_pod_identity_agent,
            pod_identity_agent_version=settings.pod_identity_agent_version,
            aws_profile=pulumi.Config("aws").get("profile"),
            tags=tags,
        ),
    )


# Either mode exposes what RuntimeSecurity needs: name, kubeconfig, what to wait for.
cluster: Cluster | ExistingCluster = (
    existing_cluster(settings.existing_cluster_name)
    if settings.existing_cluster_name
    else own_cluster()
)
hub = RegionalHub(
    "hub",
    RegionalHubArgs(enable_default_standards=settings.enable_default_standards),
)
pipeline = FindingsPipeline(
    "findings",
    FindingsPipelineArgs(
        cluster_name=settings.cluster_name,
        region=settings.region,
        account_id=account_id,
        partition=partition,
        log_retention_days=settings.log_retention_days,
        lambda_memory_mb=settings.lambda_memory_mb,
        lambda_timeout_seconds=settings.lambda_timeout_seconds,
        reserved_concurrency=settings.lambda_reserved_concurrency,
        min_priority=settings.findings_minimum_priority,
        alarm_email=settings.alarm_email,
        security_hub=hub.account,
        tags=tags,
        occurrence_window_minutes=settings.occurrence_window_minutes,
        shadow_rules=shadow_rules(settings.falco_custom_rules),
    ),
)
# Alert storms (docs/storms.md): the counters the function updates, and the suppressions.
storm_state = StormState(
    "storms",
    StormStateArgs(
        cluster_name=settings.cluster_name,
        region=settings.region,
        account_id=account_id,
        partition=partition,
        ingest_role_name=pipeline.function_role_name,
        tags=tags,
    ),
)
Suppressions(
    "suppressions",
    SuppressionsArgs(suppressions=settings.suppressions, security_hub=hub.account, tags=tags),
)
coverage = SensorCoverage(
    "coverage",
    SensorCoverageArgs(
        cluster_name=settings.cluster_name,
        region=settings.region,
        account_id=account_id,
        partition=partition,
        alert_log_group_name=pipeline.log_group_name,
        ingest_role_name=pipeline.function_role_name,
        alarm_topic_arn=pipeline.alarm_topic_arn,
        security_hub=hub.account,
        heartbeat_interval_minutes=settings.heartbeat_interval_minutes,
        check_interval_minutes=settings.coverage_check_minutes,
        grace_minutes=settings.coverage_grace_minutes,
        drop_threshold_percent=settings.coverage_drop_threshold_percent,
        log_retention_days=settings.log_retention_days,
        tags=tags,
    ),
)
runtime = RuntimeSecurity(
    "runtime-security",
    RuntimeSecurityArgs(
        cluster_name=cluster.cluster_name,
        kubeconfig_json=cluster.kubeconfig_json,
        region=settings.region,
        account_id=account_id,
        partition=partition,
        log_group_name=pipeline.log_group_name,
        log_group_arn=pipeline.log_group_arn,
        falco_chart_version=settings.falco_chart_version,
        fluent_bit_chart_version=settings.fluent_bit_chart_version,
        falco_minimum_priority=settings.falco_minimum_priority,
        # The syscall part only: an audit rule's append would stop the syscall Falco.
        falco_custom_rules=split_custom_rules(settings.falco_custom_rules).syscall,
        falco_rules_version=settings.falco_rules_version,
        heartbeat_interval_minutes=settings.heartbeat_interval_minutes,
        # Heartbeats start with this release: their table and the ingest role's access first.
        depends_on=[*cluster.runtime_dependencies, coverage, storm_state],
        tags=tags,
    ),
)
if audit_detections_enabled(
    settings.audit_detections, settings.cluster_name, cluster.enabled_log_types
):
    AuditDetection(
        "audit-detection",
        AuditDetectionArgs(
            cluster_name=cluster.cluster_name,
            kubeconfig_json=cluster.kubeconfig_json,
            namespace=runtime.namespace,
            region=settings.region,
            account_id=account_id,
            partition=partition,
            falco_chart_version=settings.falco_chart_version,
            falco_minimum_priority=settings.falco_minimum_priority,
            falco_custom_rules=settings.falco_custom_rules,
            # Fluent Bit (in runtime) must ship the audit Falco's alerts from its first one.
            depends_on=[*cluster.runtime_dependencies, runtime],
            tags=tags,
        ),
    )
central = (
    CentralHub(
        "central-hub",
        CentralHubArgs(
            home_region=settings.home_region,
            linked_regions=settings.linked_regions,
            account_id=account_id,
            partition=partition,
            triage_principal_arns=settings.triage_principal_arns,
            triage_permission_sets=settings.triage_permission_sets,
            member_accounts=settings.member_accounts,
            delegated_admin_account_id=settings.delegated_admin_account_id,
            hub=hub.account,
            tags=tags,
        ),
    )
    if settings.is_home_region
    else None
)

# What an operator reaches for; docs/deploy.md ("Stack outputs") says what each is for.
pulumi.export("clusterName", cluster.cluster_name)
pulumi.export("clusterArn", cluster.cluster_arn)
pulumi.export("kubeconfig", cluster.kubeconfig_json)
pulumi.export("logGroupName", pipeline.log_group_name)
pulumi.export("functionLogGroupName", pipeline.function_log_group_name)
pulumi.export("functionName", pipeline.function_name)
pulumi.export("deadLetterQueueUrl", pipeline.dead_letter_queue_url)
pulumi.export("deadLetterQueueArn", pipeline.dead_letter_queue_arn)
pulumi.export("alarmTopicArn", pipeline.alarm_topic_arn)
pulumi.export("hubArn", hub.hub_arn)
pulumi.export("findingsConsoleUrl", findings_console_url(settings.home_region, partition))
# Every stack says which home region it aggregates into; linked stacks check the home stack's.
pulumi.export(HOME_REGION_OUTPUT, settings.home_region)
if central:
    pulumi.export(LINKED_REGIONS_OUTPUT, list(settings.linked_regions))
    pulumi.export("aggregatorArn", central.aggregator_arn)
    pulumi.export("triageRoleArn", central.triage_role_arn)
    pulumi.export("triagePolicyArn", central.triage_policy_arn)
    pulumi.export("insightArns", central.insight_arns)
else:
    pulumi.export("aggregatorArn", None)
    pulumi.export("homeStack", home_stack)
