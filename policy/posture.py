"""The security posture as plain checks: resource type + properties in, violation messages out.

Nothing here imports ``pulumi_policy``: the pack (``pack.py``) wraps each check in a CrossGuard
policy, and the tests call the checks directly, in the program's own environment (see
policy/README.md for why). Properties use the engine's camelCase names, as ``pulumi preview``
sends them.

During a preview, inputs computed from resources not yet created are *unknown*: they arrive as
Pulumi's sentinel strings (``is_unknown``). A check treats an unknown value as present (it will be
a value) but never judges its content; `pulumi up` runs every policy again, on known inputs,
before it creates or updates the resource.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

# The engine's placeholders for values not known during a preview (pulumi-policy's proxy.py, the
# same strings in every Pulumi SDK: boolean, number, string, array, asset, archive, object).
UNKNOWN_SENTINELS = frozenset(
    {
        "1c4a061d-8072-4f0a-a4cb-0ff528b18fe7",
        "3eeb2bf0-c639-47a8-9e75-3b44932eb421",
        "04da6b54-80e4-46f7-96ec-b56ff0331ba9",
        "6a19a0b0-7e62-4c92-b797-7f8e31da9cc2",
        "030794c1-ac77-496b-92df-f27374a8bd58",
        "e48ece36-62e2-4504-bad9-02848725956a",
        "dd056dcd-154b-4c76-9bd3-c8f88648b5ff",
    }
)

Props = Mapping[str, Any]


class Enforcement(Enum):
    """Mirrors pulumi_policy.EnforcementLevel for the levels this pack uses."""

    MANDATORY = "mandatory"
    ADVISORY = "advisory"


@dataclass(frozen=True)
class Resource:
    """One resource of a stack, as a stack policy sees it (outputs, or inputs during preview)."""

    type: str
    name: str
    props: Props
    urn: str = ""
    # Property name -> URNs of the resources that property's value came from.
    property_dependencies: Mapping[str, Sequence[str]] = field(default_factory=dict)


ResourceCheck = Callable[[str, Props, Mapping[str, Any]], list[str]]
StackCheck = Callable[[Sequence[Resource], Mapping[str, Any]], list[tuple[str, str]]]


@dataclass(frozen=True)
class ResourcePolicy:
    name: str
    enforcement: Enforcement
    description: str
    check: ResourceCheck
    config_schema: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class StackPolicy:
    name: str
    enforcement: Enforcement
    description: str
    check: StackCheck


# -- helpers -------------------------------------------------------------------------------------
def is_unknown(value: Any) -> bool:
    return isinstance(value, str) and value in UNKNOWN_SENTINELS


def is_set(value: Any) -> bool:
    """A value is there (or will be: unknown during preview). Empty strings and lists are not."""
    if value is None:
        return False
    if isinstance(value, str | Sequence | Mapping):
        return len(value) > 0
    return True


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str | Mapping):
        return [value]
    return list(value)


def dig(props: Any, *path: str) -> Any:
    """props[path[0]][path[1]]...; None where a level is missing or not an object."""
    current = props
    for key in path:
        if not isinstance(current, Mapping) or key not in current:
            return None
        current = current[key]
    return current


def document(value: Any) -> Mapping[str, Any] | None:
    """A policy document given as JSON text or as an object; None when absent or unknown."""
    if value is None or is_unknown(value) or value == "":
        return None
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return None
        return parsed if isinstance(parsed, Mapping) else None
    return value if isinstance(value, Mapping) else None


def statements(doc: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    if doc is None:
        return []
    return [s for s in as_list(doc.get("Statement")) if isinstance(s, Mapping)]


def label(statement: Mapping[str, Any], index: int) -> str:
    sid = statement.get("Sid")
    return f"statement {sid!r}" if sid else f"statement #{index + 1}"


# -- KMS, log groups, queues, topics ------------------------------------------------------------
KMS_KEY = "aws:kms/key:Key"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
QUEUE = "aws:sqs/queue:Queue"
TOPIC = "aws:sns/topic:Topic"
# The property naming the KMS key that encrypts each kind of resource.
ENCRYPTION_KEY_PROPERTY = {LOG_GROUP: "kmsKeyId", QUEUE: "kmsMasterKeyId", TOPIC: "kmsMasterKeyId"}


def kms_key_rotation(resource_type: str, props: Props, _config: Mapping[str, Any]) -> list[str]:
    if resource_type != KMS_KEY:
        return []
    # Only symmetric encryption keys can rotate automatically (not asymmetric, HMAC or imported).
    spec = props.get("customerMasterKeySpec") or "SYMMETRIC_DEFAULT"
    usage = props.get("keyUsage") or "ENCRYPT_DECRYPT"
    if is_unknown(spec) or is_unknown(usage) or spec != "SYMMETRIC_DEFAULT":
        return []
    if usage != "ENCRYPT_DECRYPT":
        return []
    rotation = props.get("enableKeyRotation")
    if rotation is True or is_unknown(rotation):
        return []
    return ["KMS key does not rotate: set enable_key_rotation=True"]


def encrypted_with_kms(resource_type: str, props: Props, _config: Mapping[str, Any]) -> list[str]:
    key_property = ENCRYPTION_KEY_PROPERTY.get(resource_type)
    if key_property is None:
        return []
    if is_set(props.get(key_property)):
        return []
    kind = resource_type.rsplit(":", 1)[-1]
    return [f"{kind} is not encrypted with a KMS key: set {key_property} to a key this stack owns"]


def customer_managed_keys(
    resource_type: str, props: Props, _config: Mapping[str, Any]
) -> list[str]:
    key_property = ENCRYPTION_KEY_PROPERTY.get(resource_type)
    if key_property is None:
        return []
    key = props.get(key_property)
    if isinstance(key, str) and not is_unknown(key) and "alias/aws/" in key:
        return [
            f"{key_property} is the AWS-managed key {key!r}: its key policy cannot be scoped to "
            "this resource's users; use a customer-managed key with rotation"
        ]
    return []


def log_retention(resource_type: str, props: Props, _config: Mapping[str, Any]) -> list[str]:
    if resource_type != LOG_GROUP:
        return []
    days = props.get("retentionInDays")
    if is_unknown(days) or (isinstance(days, int | float) and days > 0):
        return []
    return ["log group keeps its events forever: set retention_in_days"]


# -- EKS -----------------------------------------------------------------------------------------
EKS_COMPONENT = "eks:index:Cluster"  # pulumi-eks (remote component: its inputs)
EKS_CLUSTER = "aws:eks/cluster:Cluster"  # the EKS API resource, also pulumi-eks's child
CONTROL_PLANE_LOG_TYPES = ("api", "audit", "authenticator", "controllerManager", "scheduler")
ALLOW_ANYWHERE = "allowPublicEndpointFromAnywhere"


def eks_secrets_encryption(
    resource_type: str, props: Props, _config: Mapping[str, Any]
) -> list[str]:
    if resource_type == EKS_COMPONENT:
        if is_set(props.get("encryptionConfigKeyArn")):
            return []
        return ["EKS secrets are not envelope-encrypted: set encryption_config_key_arn"]
    if resource_type == EKS_CLUSTER:
        config = props.get("encryptionConfig")
        if is_unknown(config):
            return []
        key = dig(config, "provider", "keyArn")
        resources = dig(config, "resources")
        if is_set(key) and (is_unknown(resources) or "secrets" in as_list(resources)):
            return []
        return ["EKS secrets are not envelope-encrypted: encryption_config with a KMS key"]
    return []


def eks_control_plane_logs(
    resource_type: str, props: Props, _config: Mapping[str, Any]
) -> list[str]:
    if resource_type not in (EKS_COMPONENT, EKS_CLUSTER):
        return []
    enabled = props.get("enabledClusterLogTypes")
    if is_unknown(enabled):
        return []
    missing = [t for t in CONTROL_PLANE_LOG_TYPES if t not in as_list(enabled)]
    if not missing:
        return []
    return [f"EKS control-plane log types not enabled: {', '.join(missing)}"]


def _open_to_anywhere(cidrs: Iterable[Any]) -> list[str]:
    """The CIDRs that cover every IPv4 (or IPv6) address."""
    found = []
    for cidr in cidrs:
        if not isinstance(cidr, str) or is_unknown(cidr):
            continue
        try:
            network = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            continue
        if network.prefixlen == 0:
            found.append(cidr)
    return found


def eks_public_endpoint(resource_type: str, props: Props, config: Mapping[str, Any]) -> list[str]:
    if resource_type == EKS_COMPONENT:
        public = props.get("endpointPublicAccess")
        cidrs = props.get("publicAccessCidrs")
    elif resource_type == EKS_CLUSTER:
        vpc = props.get("vpcConfig")
        if is_unknown(vpc):
            return []
        public = dig(vpc, "endpointPublicAccess")
        cidrs = dig(vpc, "publicAccessCidrs")
    else:
        return []
    if config.get(ALLOW_ANYWHERE) is True:
        return []
    # EKS's defaults: a public endpoint, open to 0.0.0.0/0.
    if public is False or is_unknown(public) or is_unknown(cidrs):
        return []
    open_cidrs = _open_to_anywhere(as_list(cidrs)) if is_set(cidrs) else ["0.0.0.0/0 (default)"]
    if not open_cidrs:
        return []
    return [
        f"the public Kubernetes API endpoint is open to {', '.join(open_cidrs)}: list the CIDRs "
        f"of whoever runs `pulumi up` in publicAccessCidrs, or opt in with the stack setting "
        f"{ALLOW_ANYWHERE} (the pack then gets it as policy config)"
    ]


# -- IAM and resource policies -------------------------------------------------------------------
# Where policy documents live, by resource type and property. A "/" path reaches into a list.
POLICY_DOCUMENTS: Mapping[str, tuple[str, ...]] = {
    "aws:iam/policy:Policy": ("policy",),
    "aws:iam/rolePolicy:RolePolicy": ("policy",),
    "aws:iam/userPolicy:UserPolicy": ("policy",),
    "aws:iam/groupPolicy:GroupPolicy": ("policy",),
    "aws:iam/role:Role": ("assumeRolePolicy", "inlinePolicies/policy"),
    KMS_KEY: ("policy",),
    "aws:kms/keyPolicy:KeyPolicy": ("policy",),
    QUEUE: ("policy",),
    "aws:sqs/queuePolicy:QueuePolicy": ("policy",),
    TOPIC: ("policy",),
    "aws:sns/topicPolicy:TopicPolicy": ("policy",),
    "aws:lambda/function:Function": (),
}
KEY_POLICY_TYPES = (KMS_KEY, "aws:kms/keyPolicy:KeyPolicy")

# Actions that support no resource other than "*" (the Service Authorization Reference lists no
# resource type for them). A statement whose actions all match these may use Resource "*".
# Review an addition against that reference before adding it here.
ACTIONS_ONLY_ON_ANY_RESOURCE = (
    "ec2:Describe*",
    "ecr:GetAuthorizationToken",
    "logs:DescribeLogGroups",
    "cloudwatch:PutMetricData",
    "cloudwatch:DescribeAlarms",
    "sts:GetCallerIdentity",
    "kms:ListAliases",
    "kms:ListKeys",
    "kms:CreateKey",
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "eks:ListClusters",
    "securityhub:DescribeProducts",
)


def _documents(resource_type: str, props: Props) -> list[tuple[str, Mapping[str, Any]]]:
    found = []
    for path in POLICY_DOCUMENTS.get(resource_type, ()):
        if "/" in path:
            outer, inner = path.split("/")
            values = props.get(outer)
            items = [] if is_unknown(values) else as_list(values)
            candidates = [
                (f"{outer}[{i}].{inner}", dig(item, inner)) for i, item in enumerate(items)
            ]
        else:
            candidates = [(path, props.get(path))]
        for where, value in candidates:
            doc = document(value)
            if doc is not None:
                found.append((where, doc))
    return found


def is_wildcard_action(action: str) -> bool:
    """'*' or a whole service ('kms:*'). Prefixes ('kms:Describe*') name a reviewed family."""
    return action.strip() == "*" or action.strip().endswith(":*")


def _is_account_root_key_admin(resource_type: str, statement: Mapping[str, Any]) -> bool:
    """AWS's default key-policy statement: the account root administers the key and IAM policies
    decide who else may use it; without it a key can become unmanageable."""
    if resource_type not in KEY_POLICY_TYPES:
        return False
    principals = as_list(dig(statement, "Principal", "AWS"))
    return (
        len(principals) == 1
        and isinstance(principals[0], str)
        and re.fullmatch(r"arn:aws[a-z-]*:iam::\d{12}:root", principals[0]) is not None
        and [a.lower() for a in as_list(statement.get("Action"))] == ["kms:*"]
        and not statement.get("Condition")
    )


def iam_no_wildcard_actions(
    resource_type: str, props: Props, _config: Mapping[str, Any]
) -> list[str]:
    violations = []
    for where, doc in _documents(resource_type, props):
        for index, statement in enumerate(statements(doc)):
            if statement.get("Effect") != "Allow":
                continue
            if _is_account_root_key_admin(resource_type, statement):
                continue
            if "NotAction" in statement:
                violations.append(f"{where} {label(statement, index)}: Allow with NotAction")
            wildcards = [
                a
                for a in as_list(statement.get("Action"))
                if isinstance(a, str) and is_wildcard_action(a)
            ]
            if wildcards:
                violations.append(
                    f"{where} {label(statement, index)}: wildcard actions {wildcards}; "
                    "name each action"
                )
    return violations


def _only_any_resource_actions(actions: Iterable[Any]) -> bool:
    names = [a for a in actions if isinstance(a, str)]
    return bool(names) and all(
        any(
            a.lower() == pattern.lower() or fnmatch.fnmatchcase(a.lower(), pattern.lower())
            for pattern in ACTIONS_ONLY_ON_ANY_RESOURCE
        )
        for a in names
    )


def iam_no_wildcard_resources(
    resource_type: str, props: Props, _config: Mapping[str, Any]
) -> list[str]:
    # In a key policy, Resource "*" means "this key": there is no other way to write it.
    if resource_type in KEY_POLICY_TYPES:
        return []
    violations = []
    for where, doc in _documents(resource_type, props):
        for index, statement in enumerate(statements(doc)):
            if statement.get("Effect") != "Allow":
                continue
            if "NotResource" in statement:
                violations.append(f"{where} {label(statement, index)}: Allow with NotResource")
            if "*" not in as_list(statement.get("Resource")):
                continue
            if _only_any_resource_actions(as_list(statement.get("Action"))):
                continue
            violations.append(
                f'{where} {label(statement, index)}: Resource "*" for actions that support '
                "narrower resources; name the ARNs"
            )
    return violations


# -- Lambda --------------------------------------------------------------------------------------
LAMBDA_FUNCTION = "aws:lambda/function:Function"
LAMBDA_PERMISSION = "aws:lambda/permission:Permission"
LAMBDA_URL = "aws:lambda/functionUrl:FunctionUrl"
INVOKE_CONFIG = "aws:lambda/functionEventInvokeConfig:FunctionEventInvokeConfig"


def lambda_not_public(resource_type: str, props: Props, _config: Mapping[str, Any]) -> list[str]:
    if resource_type == LAMBDA_URL:
        if props.get("authorizationType") == "NONE":
            return ["function URL without authentication: anyone on the internet can invoke it"]
        return []
    if resource_type != LAMBDA_PERMISSION:
        return []
    principal = props.get("principal")
    if is_unknown(principal):
        return []
    if props.get("functionUrlAuthType") == "NONE":
        return ["permission for an unauthenticated function URL: anyone can invoke it"]
    scoped = any(is_set(props.get(key)) for key in ("sourceArn", "sourceAccount", "principalOrgId"))
    if principal == "*" and not scoped:
        return ["Lambda permission for principal '*': anyone can invoke the function"]
    if isinstance(principal, str) and principal.endswith(".amazonaws.com") and not scoped:
        return [
            f"Lambda permission for {principal} without source_arn or source_account: that "
            "service could invoke the function on behalf of any account"
        ]
    return []


def _refers_to(value: Any, deps: Sequence[str], function: Resource) -> bool:
    if function.urn and function.urn in deps:
        return True
    if not isinstance(value, str) or is_unknown(value):
        return False
    names = {function.props.get("name"), function.props.get("arn")}
    return value in names or value.split(":")[-1] == function.props.get("name")


def lambda_on_failure_destination(
    resources: Sequence[Resource], _config: Mapping[str, Any]
) -> list[tuple[str, str]]:
    functions = [r for r in resources if r.type == LAMBDA_FUNCTION]
    configs = [r for r in resources if r.type == INVOKE_CONFIG]
    violations = []
    for function in functions:
        if is_set(dig(function.props, "deadLetterConfig", "targetArn")):
            continue
        covered = any(
            _refers_to(
                config.props.get("functionName"),
                config.property_dependencies.get("functionName", ()),
                function,
            )
            and is_set(dig(config.props, "destinationConfig", "onFailure", "destination"))
            for config in configs
        )
        if not covered:
            violations.append(
                (
                    f"function {function.name} has no on-failure destination: failed asynchronous "
                    "events are dropped after two retries; add a FunctionEventInvokeConfig with "
                    "destination_config.on_failure",
                    function.urn,
                )
            )
    return violations


# -- Helm ----------------------------------------------------------------------------------------
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
HELM_CHART_V4 = "kubernetes:helm.sh/v4:Chart"
EXACT_VERSION = re.compile(r"^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$")


def _is_local_chart(chart: Any) -> bool:
    return isinstance(chart, str) and chart.startswith(("./", "../", "/"))


def helm_exact_chart_version(
    resource_type: str, props: Props, _config: Mapping[str, Any]
) -> list[str]:
    if resource_type not in (HELM_RELEASE, HELM_CHART_V4):
        return []
    chart, version = props.get("chart"), props.get("version")
    if _is_local_chart(chart) or is_unknown(version):
        return []
    if isinstance(version, str) and EXACT_VERSION.fullmatch(version.strip()):
        return []
    return [
        f"chart {chart!r} version {version!r} is not exact (x.y.z): Helm would install whatever "
        "is newest when `pulumi up` runs"
    ]


# falcoctl artifact references: <name or OCI repository>:<x.y.z> or <repository>@sha256:<digest>.
def _is_pinned_artifact(ref: Any) -> bool:
    if not isinstance(ref, str) or is_unknown(ref):
        return True
    # host:port/repo:tag has two colons; the version is what follows the last one.
    name, _, tag = ref.rpartition(":")
    if "@sha256:" in ref:
        return re.fullmatch(r"[^@\s]+@sha256:[0-9a-f]{64}", ref) is not None
    return bool(name) and EXACT_VERSION.fullmatch(tag) is not None


def _is_falco_chart(chart: Any) -> bool:
    return isinstance(chart, str) and re.fullmatch(r"(.*/)?falco", chart.strip()) is not None


def falco_rules_pinned(resource_type: str, props: Props, _config: Mapping[str, Any]) -> list[str]:
    if resource_type != HELM_RELEASE or not _is_falco_chart(props.get("chart")):
        return []
    values = props.get("values")
    if is_unknown(values):
        return []
    violations = []
    follow = dig(values, "falcoctl", "artifact", "follow", "enabled")
    if follow is not False and not is_unknown(follow):
        violations.append(
            "falcoctl.artifact.follow.enabled is not false (the chart defaults it to true): a "
            "sidecar would replace the rules on every node without a commit"
        )
    refs_by_key = {
        "install": dig(values, "falcoctl", "config", "artifact", "install", "refs"),
        "follow": dig(values, "falcoctl", "config", "artifact", "follow", "refs"),
    }
    if refs_by_key["install"] is None:
        violations.append(
            "falcoctl.config.artifact.install.refs is not set: the chart's default "
            "[falco-rules:<major>] floats; pin each artifact to an exact version"
        )
    for key, refs in refs_by_key.items():
        if is_unknown(refs):
            continue
        floating = [r for r in as_list(refs) if not _is_pinned_artifact(r)]
        if floating:
            violations.append(
                f"falcoctl.config.artifact.{key}.refs {floating} are not exact versions"
            )
    # The chart appends these plugin references to install.refs (its defaults are exact).
    for collector in ("containerEngine", "kubernetes"):
        ref = dig(values, "collectors", collector, "pluginRef")
        if ref is not None and not _is_pinned_artifact(ref):
            violations.append(f"collectors.{collector}.pluginRef {ref!r} is not an exact version")
    return violations


# -- the pack's contents -------------------------------------------------------------------------
RESOURCE_POLICIES: tuple[ResourcePolicy, ...] = (
    ResourcePolicy(
        "kms-key-rotation",
        Enforcement.MANDATORY,
        "Every symmetric KMS key rotates its key material yearly: a leaked or over-used key "
        "stops protecting new data.",
        kms_key_rotation,
    ),
    ResourcePolicy(
        "encrypted-with-kms",
        Enforcement.MANDATORY,
        "Log groups, SQS queues and SNS topics are encrypted with a KMS key: Falco alerts, failed "
        "events and alarms describe attacks and workloads and stay readable only to the key's "
        "users.",
        encrypted_with_kms,
    ),
    ResourcePolicy(
        "customer-managed-kms-keys",
        Enforcement.ADVISORY,
        "Prefer customer-managed keys to AWS-managed ones (alias/aws/...): only a customer key's "
        "policy can be scoped to its users. Advisory: an AWS-managed key still encrypts.",
        customer_managed_keys,
    ),
    ResourcePolicy(
        "log-group-retention",
        Enforcement.MANDATORY,
        "Every log group has a retention: without one, logs (and their cost) are kept forever.",
        log_retention,
    ),
    ResourcePolicy(
        "eks-secrets-encryption",
        Enforcement.MANDATORY,
        "EKS envelope-encrypts Kubernetes secrets with a KMS key, so etcd backups and snapshots "
        "do not hold them in the clear.",
        eks_secrets_encryption,
    ),
    ResourcePolicy(
        "eks-control-plane-logs",
        Enforcement.MANDATORY,
        "EKS sends all five control-plane log types (api, audit, authenticator, "
        "controllerManager, scheduler): Falco sees syscalls on nodes, the audit log sees who did "
        "what through the API; an investigation needs both.",
        eks_control_plane_logs,
    ),
    ResourcePolicy(
        "eks-public-endpoint-restricted",
        Enforcement.MANDATORY,
        "The public Kubernetes API endpoint is not open to 0.0.0.0/0 (EKS's default) unless the "
        "stack opts in with allowPublicEndpointFromAnywhere, passed to the pack as policy config.",
        eks_public_endpoint,
        config_schema={ALLOW_ANYWHERE: {"type": "boolean", "default": False}},
    ),
    ResourcePolicy(
        "iam-no-wildcard-actions",
        Enforcement.MANDATORY,
        "Allow statements name their actions: no '*', no 'service:*' and no NotAction (least "
        "privilege). A key policy's account-root 'kms:*' statement is AWS's default and allowed.",
        iam_no_wildcard_actions,
    ),
    ResourcePolicy(
        "iam-no-wildcard-resources",
        Enforcement.MANDATORY,
        "Allow statements name their resources: Resource '*' only for actions that support "
        "nothing narrower (a reviewed list) and in KMS key policies, where '*' means this key.",
        iam_no_wildcard_resources,
    ),
    ResourcePolicy(
        "lambda-not-public",
        Enforcement.MANDATORY,
        "No Lambda permission lets anyone (principal '*', an unauthenticated function URL, or an "
        "AWS service without source_arn/source_account) invoke a function: forged alerts would "
        "become Security Hub findings.",
        lambda_not_public,
    ),
    ResourcePolicy(
        "helm-exact-chart-versions",
        Enforcement.MANDATORY,
        "Helm releases pin an exact chart version (x.y.z): a range or no version installs "
        "whatever is newest at `pulumi up`, unreviewed.",
        helm_exact_chart_version,
    ),
    ResourcePolicy(
        "falco-rules-pinned",
        Enforcement.MANDATORY,
        "Falco's rules do not auto-update: falcoctl's follow sidecar is off and every artifact "
        "reference is an exact version, so detection changes only with a reviewed commit.",
        falco_rules_pinned,
    ),
)

STACK_POLICIES: tuple[StackPolicy, ...] = (
    StackPolicy(
        "lambda-on-failure-destination",
        Enforcement.MANDATORY,
        "Every Lambda function has an on-failure destination (or dead-letter queue): CloudWatch "
        "Logs invokes asynchronously, and an event that fails its retries is otherwise lost "
        "without a trace.",
        lambda_on_failure_destination,
    ),
)
