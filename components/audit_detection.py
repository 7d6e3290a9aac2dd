"""AuditDetection: a second Falco reading the cluster's Kubernetes audit log from CloudWatch Logs.

One per cluster, beside RuntimeSecurity and in its namespace:

    EKS control plane -> /aws/eks/<cluster>/cluster, streams kube-apiserver-audit-*
      -> Falco (Deployment, 1 replica, no driver) with the k8saudit-eks and json plugins and the
         k8saudit rules, JSON alerts (source k8s_audit) on stdout
      -> kubelet log file /var/log/containers/falco-audit-<rs>-<id>_falco_falco-<container>.log
      -> the same Fluent Bit -> alert log group -> findings Lambda as the syscall alerts

The release is named so its pods match the file pattern Fluent Bit already tails
(runtime_security.falco_log_path: `falco-*_<namespace>_falco-*.log`): pods `falco-audit-...`,
main container `falco` (the chart names it after itself). One replica only: the plugin polls
the log group itself, so two would report every event twice.

The plugin calls only `FilterLogEvents` (plugins/k8saudit-eks/pkg/k8sauditeks/k8sauditeks.go and
shared/go/aws/cloudwatchlogs/cloudwatch.go at the pinned version), on the one log group. Its
role allows exactly that, and EKS Pod Identity hands it to the chart's service account only.
CloudWatch Logs decrypts the KMS-encrypted group itself (the key policy's logs statement), so
the role needs no KMS permission.

Values and policies are built by the pure functions below so tests read back what Helm and IAM
receive. Every key was checked against the falco chart 9.1.0 (values.yaml, templates) and the
plugin sources at the pinned versions; docs/runtime-security.md lists them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as kubernetes
import yaml
from pulumi_kubernetes.helm.v3 import Release, ReleaseArgs, RepositoryOptsArgs

from components import runtime_security
from handlers.audit import AUDIT_SOURCE, IAM_ARN_FIELD, IAM_CANONICAL_ARN_FIELD
from handlers.names import eks_cluster_arn, log_group_arn

COMPONENT_TYPE = "falco-securityhub:index:AuditDetection"

# Contains "falco", so the chart names the Deployment (and its pods) after the release:
# falco-audit-<replicaset hash>-<5 chars>, which Fluent Bit's `falco-*` pattern matches.
AUDIT_RELEASE = "falco-audit"
# Set in the chart values and in the Pod Identity association: the two must agree.
AUDIT_SERVICE_ACCOUNT = "falco-audit"

# The artifacts falcoctl installs, exact versions from the falcoctl index (names: the plugins
# registry.yaml; a plugin's rules are published as <plugin>-rules). k8saudit-rules 0.18.0
# requires k8saudit-eks >= 0.12.0 (as an alternative to k8saudit) and json >= 0.7.0, and engine
# version 15 (Falco 0.44.1 has 0.62.0).
K8SAUDIT_EKS_VERSION = "0.12.0"
JSON_PLUGIN_VERSION = "0.7.4"
K8SAUDIT_RULES_VERSION = "0.18.0"
# Where falcoctl puts the k8saudit rules (the chart mounts its rules directory at /etc/falco).
AUDIT_RULES_FILE = "/etc/falco/k8s_audit_rules.yaml"
CUSTOM_RULES_DIR = "/etc/falco/rules.d"

# EKS writes the control-plane logs here; the plugin derives the same name from the cluster name
# (open_params) and reads the streams with this prefix only.
AUDIT_LOG_STREAM_PREFIX = "kube-apiserver-audit"
AUDIT_LOG_TYPE = "audit"

# k8saudit-eks init_config (PluginConfig in k8sauditeks.go at 0.12.0):
# - polling_interval is in seconds. 10 s rather than the default 5: FilterLogEvents has a quota of
#   a few requests per second per account and Region, shared with every other reader.
POLLING_INTERVAL_SECONDS = 10
# - shift is how far back the first poll starts. The plugin passes the number to Go's
#   time.Duration unconverted, so it is in NANOSECONDS (the README's "seconds" is wrong; 0 means
#   its 1 s default). 120 s: a restarted audit Falco re-reads the last two minutes, so requests
#   made while it restarted still raise alerts. Re-read events raise alerts identical to the first
#   ones (Falco's time is the audit event's stageTimestamp), which the handler turns into the same
#   finding Id: Security Hub updates, it does not duplicate. Re-check the unit on every bump.
SHIFT_NANOSECONDS = 120 * 1_000_000_000
# - buffer_size: events queued between the poller and Falco (default 200); room for a burst.
BUFFER_SIZE = 500
# - use_async off, as in the plugin's own examples: async extraction trades a busy worker thread
#   for latency, which a few audit events per second do not need.
USE_ASYNC = False

# Fields on every audit alert, whatever the rule prints: the object, the actor, the origin. The
# findings name the object, the actor and the source IP from them (handlers/audit.py).
AUDIT_EXTRA_OUTPUT_FIELDS: tuple[str, ...] = (
    "ka.auditid",
    "ka.verb",
    "ka.uri",
    "ka.target.resource",
    "ka.target.subresource",
    "ka.target.namespace",
    "ka.target.name",
    "ka.resp.name",
    "ka.user.name",
    "ka.user.groups",
    "ka.impuser.name",
    "ka.sourceips",
    "ka.useragent",
    "ka.auth.decision",
    "ka.response.code",
)
# The IAM principal behind an EKS user lives in the audit event's user.extra, which no ka.* field
# extracts; the json plugin's jevt.value reads it (JSON pointer into the audit event).
AUDIT_FORMATTED_OUTPUT_FIELDS: dict[str, str] = {
    IAM_ARN_FIELD: "%jevt.value[/user/extra/arn/0]",
    IAM_CANONICAL_ARN_FIELD: "%jevt.value[/user/extra/canonicalArn/0]",
}

# The falco.yaml settings that shape what Fluent Bit and the handler read: taken from the syscall
# Falco's values so both instances write alerts the same way.
SHARED_OUTPUT_SETTINGS = (
    "json_output",
    "json_include_output_property",
    "json_include_tags_property",
    "json_include_output_fields_property",
    "buffered_outputs",
    "stdout_output",
    "syslog_output",
)

AuditDetectionMode = Literal["auto", "on", "off"]
AUDIT_DETECTION_MODES: tuple[AuditDetectionMode, ...] = ("auto", "on", "off")
SETTING_KEY = "falco-securityhub:auditDetections"

_SEMVER = re.compile(r"^\d+\.\d+\.\d+$")


@dataclass
class AuditDetectionArgs:
    cluster_name: str
    """The EKS cluster's name (plain: plugin open_params, Pod Identity, the log group name)."""
    kubeconfig_json: pulumi.Input[str]
    """Kubeconfig for the cluster (secret); the release goes through a provider built from it."""
    namespace: pulumi.Input[str]
    """RuntimeSecurity's namespace output (runtime_security.NAMESPACE, which the trust policy
    names): Fluent Bit tails Falco pods there only, and the release waits for it."""
    region: str
    account_id: str
    partition: str
    falco_chart_version: str
    """The syscall Falco's exact falco chart version (RuntimeSecurity verified values for it)."""
    falco_minimum_priority: str
    """Lowest rule priority Falco loads, any case: Emergency ... Debug (or Info)."""
    falco_custom_rules: str | None
    """The stack's custom rules file (YAML text); only its audit part is loaded here."""
    depends_on: list[pulumi.Resource]
    """The cluster, its node group, the Pod Identity agent add-on and Fluent Bit."""
    tags: dict[str, str]
    k8saudit_eks_version: str = K8SAUDIT_EKS_VERSION
    json_plugin_version: str = JSON_PLUGIN_VERSION
    k8saudit_rules_version: str = K8SAUDIT_RULES_VERSION


class AuditLogDisabled(pulumi.RunError):
    """Audit detections were asked for on a cluster that sends no audit log to CloudWatch."""


def audit_log_group_name(cluster_name: str) -> str:
    """The control-plane log group EKS writes to (and the plugin reads)."""
    return f"/aws/eks/{cluster_name}/cluster"


def audit_detections_enabled(
    mode: str, cluster_name: str, enabled_log_types: Sequence[str] | None
) -> bool:
    """Whether to deploy the audit Falco for a cluster whose enabled control-plane log types are
    ``enabled_log_types`` (None: unknown).

    auto: when the audit log is on (or cannot be told); on: required, and refused with a clear
    error when the audit log is off; off: never.
    """
    if mode == "off":
        return False
    audit_on = enabled_log_types is None or AUDIT_LOG_TYPE in enabled_log_types
    if mode == "on" and not audit_on:
        raise AuditLogDisabled(
            f"{SETTING_KEY} is 'on' but EKS cluster {cluster_name!r} does not send its audit "
            f"log to CloudWatch Logs (enabled log types: "
            f"{', '.join(enabled_log_types or []) or 'none'}). Enable it with `aws eks "
            f"update-cluster-config --name {cluster_name} --logging "
            f'\'{{"clusterLogging":[{{"types":["audit"],"enabled":true}}]}}\'`, or set '
            f"{SETTING_KEY} to 'auto' or 'off'."
        )
    return audit_on


@dataclass(frozen=True)
class CustomRulesSplit:
    """One custom rules file as the two Falco instances must load it (None: nothing to load)."""

    syscall: str | None
    audit: str | None


# Plugins whose rules-file requirements belong to the audit Falco; the syscall Falco loads none
# of them, and Falco refuses to start when a required plugin is not loaded.
AUDIT_PLUGINS = frozenset({"k8saudit", "k8saudit-eks", "json"})
_SYSCALL, _AUDIT = "syscall", "audit"


def split_custom_rules(text: str | None) -> CustomRulesSplit:
    """Route each item of a Falco rules file to the instance(s) that can load it.

    Falco 0.44 skips a rule whose source is not loaded (a warning), but refuses to start on an
    append/override of a rule, macro or list it has not loaded, and on a required plugin it has
    not loaded. So:
    - rules go by `source` (default syscall); macro and list definitions go to both (unused
      ones are only warnings); required_engine_version to both; required_plugin_versions
      entries by plugin;
    - an append/override goes where the item it changes was defined in this file, else by its
      `source` (`source: k8s_audit` for the k8saudit rules' items; removed from macro and list
      items, which have no such key), else to the syscall Falco.
    """
    if text is None or not text.strip():
        return CustomRulesSplit(None, None)
    items = yaml.safe_load(text)  # a list of mappings: the settings checked it
    routed: dict[str, list[Any]] = {_SYSCALL: [], _AUDIT: []}
    defined: dict[tuple[str, str], frozenset[str]] = {}
    for item in items:
        if "required_plugin_versions" in item:
            entries = item["required_plugin_versions"] or []
            for target, wanted in ((_AUDIT, True), (_SYSCALL, False)):
                chosen = [e for e in entries if (_plugin_name(e) in AUDIT_PLUGINS) is wanted]
                if chosen:
                    routed[target].append({"required_plugin_versions": chosen})
            continue
        kind = next((k for k in ("rule", "macro", "list") if k in item), None)
        if kind is None:
            for target in (_SYSCALL, _AUDIT):
                routed[target].append(item)
            continue
        key = (kind, str(item[kind]))
        changes = item.get("append") is True or "override" in item
        if kind == "rule" and "condition" not in item:
            changes = True  # the legacy `- rule: X / enabled: false` form changes an existing rule
        source = item.get("source")
        if changes and key in defined:
            targets = defined[key]
        elif changes or kind == "rule":
            targets = frozenset({_AUDIT if source == AUDIT_SOURCE else _SYSCALL})
        else:
            targets = frozenset({_SYSCALL, _AUDIT})
        if not changes:
            defined[key] = targets
        if kind != "rule" and "source" in item:
            item = {k: v for k, v in item.items() if k != "source"}
        for target in sorted(targets):
            routed[target].append(item)

    def render(part: list[Any]) -> str | None:
        has_content = any(any(k in i for k in ("rule", "macro", "list")) for i in part)
        return yaml.safe_dump(part, sort_keys=False, allow_unicode=True) if has_content else None

    return CustomRulesSplit(syscall=render(routed[_SYSCALL]), audit=render(routed[_AUDIT]))


def _plugin_name(entry: Any) -> str | None:
    return entry.get("name") if isinstance(entry, dict) else None


def artifact_refs(
    k8saudit_eks_version: str, json_plugin_version: str, k8saudit_rules_version: str
) -> list[str]:
    """falcoctl references at exact versions (a floating `:0` or `:0.18` would update rules
    without a commit)."""
    refs = [
        ("k8saudit-rules", k8saudit_rules_version),
        ("k8saudit-eks", k8saudit_eks_version),
        ("json", json_plugin_version),
    ]
    for name, version in refs:
        if not _SEMVER.fullmatch(version):
            raise ValueError(f"{name} version {version!r} is not an exact version (x.y.z)")
    return [f"{name}:{version}" for name, version in refs]


def audit_falco_values(
    cluster_name: str,
    region: str,
    minimum_priority: str,
    custom_rules: str | None,
    refs: list[str],
) -> dict[str, Any]:
    """Values for the falco chart (9.1.0): the audit instance."""
    syscall_falco = runtime_security.falco_values(minimum_priority, None)["falco"]
    values: dict[str, Any] = {
        "controller": {"kind": "deployment", "deployment": {"replicas": 1}},
        # No kernel instrumentation: the chart then passes `--disable-source syscall`, mounts no
        # host paths for a driver and runs the container unprivileged.
        "driver": {"enabled": False},
        # No container or k8smeta plugin: audit events carry their own Kubernetes metadata.
        "collectors": {"enabled": False},
        "falcosidekick": {"enabled": False},
        # The chart's only RBAC object is a Role for driver.kind=auto's loader; this Falco calls
        # no Kubernetes API.
        "rbac": {"create": False},
        "serviceAccount": {"create": True, "name": AUDIT_SERVICE_ACCOUNT},
        # Alerts' `hostname` is the node the pod runs on, as for the syscall Falco.
        "falcoHostnameEnv": True,
        # A pending audit Falco is a blind spot for the whole cluster, not for one node.
        "podPriorityClassName": "system-cluster-critical",
        "falcoctl": {
            "artifact": {
                "install": {"enabled": True},
                # No sidecar re-installing newer rules: rules change with a commit only.
                "follow": {"enabled": False},
            },
            "config": {
                "artifact": {
                    "allowedTypes": ["plugin", "rulesfile"],
                    "install": {
                        # Dependencies would be resolved to whatever the index calls newest;
                        # every artifact is listed, at an exact version, instead.
                        "resolveDeps": False,
                        "refs": refs,
                    },
                    "follow": {"refs": []},
                }
            },
        },
        "falco": {
            "rules_files": [AUDIT_RULES_FILE, CUSTOM_RULES_DIR],
            "plugins": [
                {
                    "name": "k8saudit-eks",
                    "library_path": "libk8saudit-eks.so",
                    "init_config": {
                        "region": region,
                        "polling_interval": POLLING_INTERVAL_SECONDS,
                        "shift": SHIFT_NANOSECONDS,
                        "buffer_size": BUFFER_SIZE,
                        "use_async": USE_ASYNC,
                    },
                    # The plugin reads /aws/eks/<open_params>/cluster.
                    "open_params": cluster_name,
                },
                {"name": "json", "library_path": "libjson.so", "init_config": ""},
            ],
            "load_plugins": ["k8saudit-eks", "json"],
            # Host info is for syscall plugins; off, the chart mounts no host /proc.
            "plugins_hostinfo": False,
            "priority": syscall_falco["priority"],
            **{key: syscall_falco[key] for key in SHARED_OUTPUT_SETTINGS},
            "append_output": [
                {"suggested_output": True},
                {
                    "match": {"source": AUDIT_SOURCE},
                    "extra_fields": [
                        *AUDIT_EXTRA_OUTPUT_FIELDS,
                        *({k: v} for k, v in AUDIT_FORMATTED_OUTPUT_FIELDS.items()),
                    ],
                },
            ],
        },
    }
    if custom_rules is not None:
        values["customRules"] = {"custom-rules.yaml": custom_rules}
    return values


def audit_log_reader_policy(group_arn: str) -> dict[str, Any]:
    """Read the one audit log group, the only way the plugin reads it (FilterLogEvents)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ReadTheClusterAuditLog",
                "Effect": "Allow",
                "Action": ["logs:FilterLogEvents"],
                # The group ARN as IAM's reference writes it, and with the `:*` suffix that
                # CloudWatch Logs has long evaluated log-group actions against.
                "Resource": [group_arn, f"{group_arn}:*"],
            }
        ],
    }


def pod_identity_trust_policy(
    cluster_arn: str, namespace: str, service_account: str
) -> dict[str, Any]:
    """EKS Pod Identity may assume the role only for this service account in this cluster."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "EksPodIdentityForTheAuditFalco",
                "Effect": "Allow",
                "Principal": {"Service": "pods.eks.amazonaws.com"},
                "Action": ["sts:AssumeRole", "sts:TagSession"],
                "Condition": {
                    "StringEquals": {
                        "aws:RequestTag/eks-cluster-arn": cluster_arn,
                        "aws:RequestTag/kubernetes-namespace": namespace,
                        "aws:RequestTag/kubernetes-service-account": service_account,
                    }
                },
            }
        ],
    }


class AuditDetection(pulumi.ComponentResource):
    release_name: pulumi.Output[str]
    role_arn: pulumi.Output[str]
    log_group_name: str

    def __init__(
        self,
        name: str,
        args: AuditDetectionArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(COMPONENT_TYPE, name, None, opts)
        # Before anything is declared: bad input fails the preview, not the Helm install.
        refs = artifact_refs(
            args.k8saudit_eks_version, args.json_plugin_version, args.k8saudit_rules_version
        )
        values = audit_falco_values(
            args.cluster_name,
            args.region,
            args.falco_minimum_priority,
            split_custom_rules(args.falco_custom_rules).audit,
            refs,
        )
        group_name = audit_log_group_name(args.cluster_name)
        group_arn = log_group_arn(args.partition, args.region, args.account_id, group_name)
        cluster_arn = eks_cluster_arn(
            args.partition, args.region, args.account_id, args.cluster_name
        )

        role = aws.iam.Role(
            f"{name}-role",
            description=f"Falco on EKS cluster {args.cluster_name}: reads its audit log",
            assume_role_policy=json.dumps(
                pod_identity_trust_policy(
                    cluster_arn, runtime_security.NAMESPACE, AUDIT_SERVICE_ACCOUNT
                )
            ),
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        policy = aws.iam.RolePolicy(
            f"{name}-read-audit-log",
            role=role.id,
            policy=json.dumps(audit_log_reader_policy(group_arn)),
            opts=pulumi.ResourceOptions(parent=self),
        )
        association = aws.eks.PodIdentityAssociation(
            f"{name}-identity",
            cluster_name=args.cluster_name,
            namespace=args.namespace,
            service_account=AUDIT_SERVICE_ACCOUNT,
            role_arn=role.arn,
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=args.depends_on),
        )
        provider = kubernetes.Provider(
            f"{name}-k8s",
            kubeconfig=args.kubeconfig_json,
            opts=pulumi.ResourceOptions(parent=self),
        )
        release = Release(
            f"{name}-falco",
            ReleaseArgs(
                name=AUDIT_RELEASE,
                chart=runtime_security.FALCO_CHART,
                version=args.falco_chart_version,
                repository_opts=RepositoryOptsArgs(repo=runtime_security.FALCO_REPOSITORY),
                namespace=args.namespace,
                values=values,
                atomic=True,
                cleanup_on_fail=True,
                timeout=runtime_security.RELEASE_TIMEOUT_SECONDS,
                max_history=runtime_security.RELEASE_MAX_HISTORY,
            ),
            # Pod Identity injects credentials when the pod is created: the association and the
            # role's permission must exist first, or the plugin fails its first poll.
            opts=pulumi.ResourceOptions(
                parent=self,
                provider=provider,
                depends_on=[association, policy, *args.depends_on],
            ),
        )

        self.release_name = release.name
        self.role_arn = role.arn
        self.log_group_name = group_name
        self.register_outputs(
            {
                "release_name": self.release_name,
                "role_arn": self.role_arn,
                "log_group_name": self.log_group_name,
            }
        )


__all__ = [
    "AUDIT_DETECTION_MODES",
    "AuditDetection",
    "AuditDetectionArgs",
    "AuditLogDisabled",
    "CustomRulesSplit",
    "audit_detections_enabled",
    "audit_falco_values",
    "audit_log_group_name",
    "audit_log_reader_policy",
    "split_custom_rules",
]
