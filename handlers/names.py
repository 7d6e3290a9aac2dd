"""Names and formats that the Pulumi program and the Lambda share, each defined once.

The Lambda imports this module (it ships in the function's package), and so do the components:
the central hub's insights filter on the product name the handler writes, the function's
environment names the metrics namespace the handler emits to, and IAM policies name the ARNs the
handler puts in findings. Plain constants and pure functions only: no AWS client, no Pulumi.
"""

from __future__ import annotations

PROJECT = "falco-securityhub"

# ASFF: who made the finding. The central hub's insights and the console link filter on these.
COMPANY_NAME = "Falco"
PRODUCT_NAME = "Falco runtime security"
# GeneratorId = GENERATOR_PREFIX + <slug of the rule name>: one generator per Falco rule.
GENERATOR_PREFIX = "falco/rule/"
# Id = FINDING_ID_PREFIX + <sha256 of the alert's identity>.
FINDING_ID_PREFIX = "falco/alert/"
# Id of a behaviour's finding (repeats across invocations, one per window; docs/storms.md):
# BEHAVIOR_ID_PREFIX + <sha256 of the behaviour key and window>.
BEHAVIOR_ID_PREFIX = "falco/behavior/"
# A custom Falco rule with this tag is a shadow rule: counted (metric), never imported.
SHADOW_TAG = "shadow"

# The Lambda's Powertools service name and CloudWatch metrics namespace (EMF); alarms read them.
SERVICE_NAME = PROJECT
METRICS_NAMESPACE = "FalcoSecurityHub"

# Falco's priorities as Falco writes them in JSON alerts, most to least severe.
FALCO_PRIORITIES = (
    "Emergency",
    "Alert",
    "Critical",
    "Error",
    "Warning",
    "Notice",
    "Informational",
    "Debug",
)
PRIORITY_BY_NAME = {name: name for name in FALCO_PRIORITIES}
# Falco's configuration (falco.yaml `priority`) and its alerts accept any letter case, and "info".
PRIORITY_BY_LOWER = {name.lower(): name for name in FALCO_PRIORITIES} | {"info": "Informational"}


def parse_priority(value: str) -> str:
    """A Falco priority in any letter case (or "info") -> its title-case name; ValueError names
    the allowed values."""
    canonical = PRIORITY_BY_NAME.get(value) if isinstance(value, str) else None
    if canonical is None and isinstance(value, str):
        canonical = PRIORITY_BY_LOWER.get(value.strip().lower())
    if canonical is None:
        shown = value if not isinstance(value, str) or len(value) <= 32 else value[:32] + "…"
        raise ValueError(
            f"unknown Falco priority {shown!r}: expected one of {', '.join(FALCO_PRIORITIES)}"
            " (any letter case)"
        )
    return canonical


def eks_cluster_arn(partition: str, region: str, account_id: str, cluster_name: str) -> str:
    return f"arn:{partition}:eks:{region}:{account_id}:cluster/{cluster_name}"


def custom_product_arn(partition: str, region: str, account_id: str) -> str:
    """The product ARN Security Hub assigns to an account's own (custom) findings."""
    return f"arn:{partition}:securityhub:{region}:{account_id}:product/{account_id}/default"


def log_group_arn(partition: str, region: str, account_id: str, group_name: str) -> str:
    """A log group's ARN as CloudWatch Logs puts it in the KMS encryption context (no `:*`)."""
    return f"arn:{partition}:logs:{region}:{account_id}:log-group:{group_name}"


# -- sensor coverage (heartbeats and the coverage checker; docs/coverage.md) ------------------
# The rule Falco's periodic metrics snapshot is written as (source "internal", Informational):
# the node's heartbeat. [falco userspace/falco/stats_writer.cpp]
METRICS_SNAPSHOT_RULE = "Falco internal: metrics snapshot"
# Coverage findings: Id = COVERAGE_ID_PREFIX + <cluster>/<instance id>/<check>, one per node and
# check, so re-runs update instead of duplicating; GeneratorId = COVERAGE_GENERATOR_PREFIX + check.
COVERAGE_ID_PREFIX = "falco/coverage/"
COVERAGE_GENERATOR_PREFIX = "falco/coverage/"


def heartbeat_table_name(cluster_name: str) -> str:
    """The DynamoDB table of one cluster's heartbeats (the ingest Lambda writes, the checker
    reads): derived from the cluster so both functions find it from CLUSTER_NAME alone."""
    return f"{cluster_name}-falco-heartbeats"


def occurrences_table_name(cluster_name: str) -> str:
    """The DynamoDB table of one cluster's alert-storm counters (docs/storms.md)."""
    return f"{cluster_name}-falco-occurrences"


def securityhub_hub_arn(partition: str, region: str, account_id: str) -> str:
    return f"arn:{partition}:securityhub:{region}:{account_id}:hub/default"


def dynamodb_table_arn(partition: str, region: str, account_id: str, table: str) -> str:
    return f"arn:{partition}:dynamodb:{region}:{account_id}:table/{table}"
