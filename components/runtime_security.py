"""RuntimeSecurity: Falco on every node, Fluent Bit shipping Falco's alerts to CloudWatch Logs.

One per cluster. Both are Helm releases (`kubernetes.helm.v3.Release`) installed through a
Kubernetes provider built from the cluster's kubeconfig, in their own namespace:

    Falco (modern eBPF, JSON alerts on stdout)
      -> kubelet log file /var/log/containers/falco-<id>_falco_falco-<container>.log
      -> Fluent Bit (tails that file only; adds cluster_name and kubernetes.host)
      -> cloudwatch_logs output -> the findings pipeline's existing log group

Fluent Bit gets AWS credentials through EKS Pod Identity: a role that may only create streams in
and write events to that one log group. It runs in the pod network (no hostNetwork), so it cannot
reach the node's instance metadata (IMDSv2, hop limit 1) and never holds node credentials; the
price is that records carry no `aws` filter keys (ec2_instance_id, az). docs/runtime-security.md
explains the tradeoff and every chart value set here.

Values and policies are built by the pure functions below (plain arguments, `dict` results) so
tests read back exactly what Helm and IAM receive. Every key was checked against the pinned
charts (FALCO_CHART_VERSION, FLUENT_BIT_CHART_VERSION): re-check them when bumping a chart.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as kubernetes
from pulumi_kubernetes.helm.v3 import Release, ReleaseArgs, RepositoryOptsArgs

from handlers.names import FALCO_PRIORITIES, eks_cluster_arn

COMPONENT_TYPE = "falco-securityhub:index:RuntimeSecurity"

# One namespace for both releases. Falco's pod name, its container name and this namespace make
# up the log file name Fluent Bit tails, so the three are fixed here rather than configurable.
NAMESPACE = "falco"

FALCO_CHART = "falco"
FALCO_REPOSITORY = "https://falcosecurity.github.io/charts"
# The falco chart names the DaemonSet (and so its pods) after the release when the release name
# contains "falco", and names the main container after the chart: pods `falco-<5 chars>`,
# container `falco`. Sidecars are `falcoctl-artifact-follow` and `falcoctl-artifact-install`.
FALCO_RELEASE = "falco"
FALCO_CONTAINER = "falco"

FLUENT_BIT_CHART = "fluent-bit"
FLUENT_BIT_REPOSITORY = "https://fluent.github.io/helm-charts"
FLUENT_BIT_RELEASE = "fluent-bit"
# Set explicitly in the chart values and in the Pod Identity association: the two must agree or
# Fluent Bit runs without credentials.
FLUENT_BIT_SERVICE_ACCOUNT = "fluent-bit"

# The chart versions every value below was verified against (chart values.yaml and templates at
# these tags). Stack settings choose the version; a different one still installs, but its values
# are unverified until someone repeats that check.
FALCO_CHART_VERSION = "9.1.0"  # Falco 0.44.1
FLUENT_BIT_CHART_VERSION = "0.58.1"  # Fluent Bit 5.1.1
# The falco-rules artifact falcoctl installs, exact: the chart's default ref (falco-rules:5) is a
# floating major, and its follow sidecar would re-install newer rules every 168h. 5.1.0 is the
# rules release Falco 0.44.1 itself bundles (falco cmake/modules/rules.cmake at 0.44.1).
FALCO_RULES_VERSION = "5.1.0"

# Extra `output_fields` on every syscall alert. The default rules (falco-rules 5.x) name the
# process and user but not the pod, namespace or image; the container plugin resolves these from
# the container runtime (CRI labels), and the findings handler maps them to the ASFF Container
# resource and Process fields. Duplicates of fields a rule already prints are harmless.
FALCO_EXTRA_OUTPUT_FIELDS = (
    "k8s.ns.name",
    "k8s.pod.name",
    "k8s.pod.uid",
    "container.id",
    "container.name",
    "container.image.repository",
    "container.image.tag",
    "container.privileged",
    "proc.pid",
    "proc.ppid",
)

# A runtime sensor that skips a node is a coverage gap: tolerate every taint (dedicated pools,
# GPU nodes, NoExecute taints) and outrank ordinary pods when a node is full.
TOLERATE_EVERY_TAINT: list[dict[str, str]] = [{"operator": "Exists"}]
NODE_CRITICAL = "system-node-critical"
# ... except nodes where a DaemonSet pod can never run: with every taint tolerated, the DaemonSet
# controller would place pods on EKS Fargate's virtual nodes (and Windows nodes), where they stay
# Pending forever and keep the atomic Helm install from ever becoming ready.
LINUX_NODES_NOT_FARGATE: dict[str, Any] = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {
                    "matchExpressions": [
                        {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
                        {
                            "key": "eks.amazonaws.com/compute-type",
                            "operator": "NotIn",
                            "values": ["fargate"],
                        },
                    ]
                }
            ]
        }
    }
}

# How long Helm may wait for a DaemonSet to become ready on every node before the release is
# rolled back (atomic): image pulls plus falcoctl fetching rules and the container plugin.
RELEASE_TIMEOUT_SECONDS = 600
RELEASE_MAX_HISTORY = 10

# Fluent Bit's offsets database lives on the node so a restarted Fluent Bit resumes where it
# stopped instead of skipping (or resending) alerts; /var/log itself is mounted read-only.
FLUENT_BIT_STATE_DIR = "/var/lib/fluent-bit-falco"

# Strings interpolated into Fluent Bit's configuration: no whitespace (a newline would start a
# new directive) and no Helm template delimiters (the chart runs the config through `tpl`).
_CLUSTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
_LOG_GROUP_NAME = re.compile(r"^[A-Za-z0-9_./#-]{1,512}$")


@dataclass
class RuntimeSecurityArgs:
    cluster_name: str
    """The EKS cluster's name (plain: used in the Pod Identity association and trust policy)."""
    kubeconfig_json: pulumi.Input[str]
    """Kubeconfig for the cluster (secret); the releases go through a provider built from it."""
    region: str
    account_id: str
    partition: str
    log_group_name: pulumi.Input[str]
    """The findings pipeline's Falco alert log group; Fluent Bit writes here and creates nothing."""
    log_group_arn: pulumi.Input[str]
    falco_chart_version: str
    """Exact falco chart version (see FALCO_CHART_VERSION for the verified one)."""
    fluent_bit_chart_version: str
    """Exact fluent-bit chart version (see FLUENT_BIT_CHART_VERSION for the verified one)."""
    falco_minimum_priority: str
    """Lowest rule priority Falco loads, as the settings give it: Emergency ... Debug."""
    falco_custom_rules: str | None
    falco_rules_version: str
    """Exact falco-rules artifact version falcoctl installs (rules change only with a commit)."""
    """A Falco rules file (YAML text) loaded after the default rules, or None."""
    depends_on: list[pulumi.Resource]
    """The cluster, its node group and the Pod Identity agent add-on."""
    tags: dict[str, str]
    heartbeat_interval_minutes: int | None = None
    """Falco's metrics snapshot (the node's heartbeat, docs/coverage.md) every so many minutes;
    None: no heartbeats."""


def falco_priority(priority: str) -> str:
    """falco.yaml's spelling (lower case) of a priority as the settings give it (Title case)."""
    return priority.lower()


cluster_arn = eks_cluster_arn
# Falco's priorities as falco.yaml spells them (lower case), most to least severe.
_CONFIG_PRIORITIES = tuple(name.lower() for name in FALCO_PRIORITIES)


def falco_log_path(namespace: str = NAMESPACE) -> str:
    """The kubelet log files of Falco's main container only (not the falcoctl sidecars).

    Kubelet names them `<pod>_<namespace>_<container>-<container id>.log`; `falco-*` after the
    namespace cannot match `falcoctl-...` because the character after "falco" must be "-".
    """
    return f"/var/log/containers/{FALCO_RELEASE}-*_{namespace}_{FALCO_CONTAINER}-*.log"


def falco_rules_refs(rules_version: str) -> list[str]:
    """falcoctl's artifact references: the rules at the exact version settings validated."""
    return [f"falco-rules:{rules_version}"]


def falco_values(
    minimum_priority: str,
    custom_rules: str | None,
    *,
    rules_version: str = FALCO_RULES_VERSION,
) -> dict[str, Any]:
    """Values for the falco chart: JSON alerts with tags and fields, on stdout only."""
    refs = falco_rules_refs(rules_version)
    values: dict[str, Any] = {
        # Rules change only with a commit: falcoctl installs the pinned artifacts once per pod
        # start (init container) and no follow sidecar replaces them later. The container plugin
        # ref the chart appends (collectors.containerEngine.pluginRef) is already exact.
        "falcoctl": {
            "artifact": {"follow": {"enabled": False}},
            "config": {
                "artifact": {
                    "install": {"refs": refs},
                    # Unused while follow is off; pinned too, so turning it on cannot float.
                    "follow": {"refs": refs},
                }
            },
        },
        "driver": {
            "enabled": True,
            # CO-RE probe built into Falco: nothing compiled or downloaded per kernel (EKS AL2023
            # and Bottlerocket kernels support it). The chart then runs Falco privileged, which
            # also works under Bottlerocket's SELinux policy.
            "kind": "modern_ebpf",
        },
        "collectors": {
            "enabled": True,
            # The container plugin reads the container runtime (containerd) and fills
            # container.* and k8s.pod.name / k8s.ns.name from CRI labels.
            "containerEngine": {"enabled": True},
            # k8s-metacollector adds a Deployment with cluster-wide watch RBAC for k8smeta.*
            # fields (deployment, service, ...); the findings do not use them.
            "kubernetes": {"enabled": False},
        },
        # Alerts leave through stdout and Fluent Bit only; no falcosidekick Deployment.
        "falcosidekick": {"enabled": False},
        # FALCO_HOSTNAME = spec.nodeName, so each alert's `hostname` is the Kubernetes node name
        # (the chart's default since 4.3; stated here because the findings rely on it).
        "falcoHostnameEnv": True,
        "tolerations": TOLERATE_EVERY_TAINT,
        "affinity": LINUX_NODES_NOT_FARGATE,
        "podPriorityClassName": NODE_CRITICAL,
        # The chart's defaults, made explicit: the request is what the scheduler must find on
        # every node; the limits keep a syscall storm from starving workloads (Falco then
        # reports its own event drops as "Falco internal" alerts rather than stalling the node).
        "resources": {
            "requests": {"cpu": "100m", "memory": "512Mi"},
            "limits": {"cpu": "1000m", "memory": "1024Mi"},
        },
        "falco": {
            "priority": falco_priority(minimum_priority),
            "json_output": True,
            "json_include_output_property": True,
            "json_include_tags_property": True,
            "json_include_output_fields_property": True,
            # Flush every alert as it is written so it reaches the log file (and Fluent Bit) now.
            "buffered_outputs": False,
            "stdout_output": {"enabled": True},
            # One way out: the container has no syslog daemon, so syslog output only costs work.
            "syslog_output": {"enabled": False},
            "append_output": [
                # Kept from the chart default: plugin-suggested fields (container.id/name).
                {"suggested_output": True},
                {
                    "match": {"source": "syscall"},
                    "extra_fields": list(FALCO_EXTRA_OUTPUT_FIELDS),
                },
            ],
        },
    }
    if custom_rules is not None and custom_rules.strip():
        # Mounted at /etc/falco/rules.d, which the chart's rules_files loads after the default
        # rules, so custom rules may append to or override them.
        values["customRules"] = {"custom-rules.yaml": custom_rules}
    return values


# -- heartbeats (docs/coverage.md) --------------------------------------------------------------
# Falco writes its metrics snapshot as an Informational alert; the chart says Falco's `priority`
# must then be `info` or lower (charts/falco/values.yaml at 9.1.0, metrics.outputRule).
HEARTBEAT_PRIORITY = "informational"


def with_heartbeats(values: dict[str, Any], interval_minutes: int) -> dict[str, Any]:
    """The falco chart values, plus the metrics snapshot every `interval_minutes` as an alert.

    Falco then runs at Informational at least (rules below falcoMinimumPriority load too; Fluent
    Bit's priority filter keeps their alerts out of CloudWatch Logs). Only the counters a
    heartbeat uses stay on, to keep each snapshot small: kernel event counters (they give
    scap.n_drops_perc) and resource utilization; per-rule, state, libbpf, plugin and iterator
    counters are off. No metrics Service: nothing scrapes Prometheus here.
    """
    result = {**values, "falco": dict(values.get("falco", {}))}
    ranks = {name: rank for rank, name in enumerate(_CONFIG_PRIORITIES)}
    current = result["falco"].get("priority", HEARTBEAT_PRIORITY)
    if ranks.get(current, 0) < ranks[HEARTBEAT_PRIORITY]:
        result["falco"]["priority"] = HEARTBEAT_PRIORITY
    result["metrics"] = {
        "enabled": True,
        "interval": f"{interval_minutes}m",
        "outputRule": True,
        "kernelEventCountersEnabled": True,
        "resourceUtilizationEnabled": True,
        "rulesCountersEnabled": False,
        "stateCountersEnabled": False,
        "libbpfStatsEnabled": False,
        "pluginsMetricsEnabled": False,
        "kernelIterEventCountersEnabled": False,
        "service": {"create": False},
    }
    return result


def priority_filter(minimum_priority: str) -> str | None:
    """A Fluent Bit grep filter: alerts at `minimum_priority` or above, and Falco's metrics
    snapshot; None when every priority passes anyway (Informational, Debug).

    Falco writes compact JSON (nlohmann's dump), so the alert's own top-level members read
    `"priority":"Notice"` in the `log` string; text inside an alert's fields has its quotes
    escaped and cannot imitate them.
    """
    minimum = falco_priority(minimum_priority)
    kept = _CONFIG_PRIORITIES[: _CONFIG_PRIORITIES.index(minimum) + 1]
    if HEARTBEAT_PRIORITY in kept:
        return None
    names = "|".join(name.capitalize() for name in kept)
    return _section(
        "FILTER",
        [
            ("Name", "grep"),
            ("Match", "falco"),
            ("Logical_Op", "OR"),
            ("Regex", f'log "priority":"({names})"'),
            ("Regex", r'log "rule":"Falco\sinternal:\smetrics\ssnapshot"'),
        ],
    )


def _section(kind: str, entries: list[tuple[str, str]]) -> str:
    width = max(len(key) for key, _ in entries)
    lines = [f"[{kind}]"] + [f"    {key.ljust(width)} {value}" for key, value in entries]
    return "\n".join(lines) + "\n"


def fluent_bit_pipeline(
    cluster_name: str, region: str, log_group_name: str, minimum_priority: str | None = None
) -> dict[str, str]:
    """Fluent Bit's classic-mode configuration sections (the chart's `config.*` values)."""
    for label, value, pattern in (
        ("cluster name", cluster_name, _CLUSTER_NAME),
        ("region", region, _REGION),
        ("log group name", log_group_name, _LOG_GROUP_NAME),
    ):
        if not pattern.fullmatch(value):
            raise ValueError(f"{label} {value!r} cannot be written into Fluent Bit's config")
    service = _section(
        "SERVICE",
        [
            ("Daemon", "Off"),
            ("Flush", "1"),
            ("Log_Level", "info"),
            # The chart's liveness and readiness probes call this server on port 2020.
            ("HTTP_Server", "On"),
            ("HTTP_Listen", "0.0.0.0"),  # noqa: S104 - the pod's own IP; kubelet probes it
            ("HTTP_Port", "2020"),
            ("Health_Check", "On"),
        ],
    )
    inputs = _section(
        "INPUT",
        [
            ("Name", "tail"),
            ("Path", falco_log_path()),
            ("Tag", "falco"),
            # containerd writes CRI lines (`<time> <stream> <P|F> <log>`); the parser rejoins
            # lines kubelet split at 16 KiB and yields {time, stream, _p, log}.
            ("multiline.parser", "cri"),
            ("DB", f"{FLUENT_BIT_STATE_DIR}/tail.db"),
            # Alerts written before Fluent Bit first started are shipped too; the DB stops
            # restarts from sending them again.
            ("Read_from_Head", "On"),
            # A new Falco pod (restart, upgrade) is picked up within seconds, not a minute.
            ("Refresh_Interval", "10"),
            ("Mem_Buf_Limit", "5MB"),
            ("Buffer_Max_Size", "256k"),
            ("Skip_Long_Lines", "On"),
        ],
    )
    filters = "\n".join(
        [
            # Alerts only: Falco logs its own messages to stderr; stdout lines are JSON alerts.
            _section(
                "FILTER",
                [
                    ("Name", "grep"),
                    ("Match", "falco"),
                    ("Logical_Op", "AND"),
                    ("Regex", "stream ^stdout$"),
                    ("Regex", r"log ^\{"),
                ],
            ),
            # With heartbeats on, Falco runs at Informational: ship only what was asked for.
            *([kept] if minimum_priority and (kept := priority_filter(minimum_priority)) else []),
            # The alert stays a JSON string in `log` (no merge: the CRI `time` key would collide
            # with the alert's). cluster_name and the node name sit beside it, as the handler
            # reads them (handlers/alerts.py).
            _section(
                "FILTER",
                [
                    ("Name", "record_modifier"),
                    ("Match", "falco"),
                    ("Record", f"cluster_name {cluster_name}"),
                    ("Record", "kubernetes_host ${NODE_NAME}"),
                ],
            ),
            # kubernetes_host -> kubernetes.host, the key the kubernetes filter would use, without
            # that filter: it would describe Falco's own pod and need cluster-wide pod read RBAC.
            _section(
                "FILTER",
                [
                    ("Name", "nest"),
                    ("Match", "falco"),
                    ("Operation", "nest"),
                    ("Wildcard", "kubernetes_host"),
                    ("Nest_under", "kubernetes"),
                    ("Remove_prefix", "kubernetes_"),
                ],
            ),
        ]
    )
    outputs = _section(
        "OUTPUT",
        [
            # The core C plugin (not the legacy Go `cloudwatch`): it needs only CreateLogStream
            # and PutLogEvents when it does not create groups.
            ("Name", "cloudwatch_logs"),
            ("Match", "falco"),
            ("region", region),
            ("log_group_name", log_group_name),
            # The pipeline owns the group (retention, KMS, subscription filter).
            ("auto_create_group", "Off"),
            # One stream per node: "<node name>/falco" (prefix + tag).
            ("log_stream_prefix", "${NODE_NAME}/"),
            # Security alerts are kept until delivered; while CloudWatch is unreachable the tail
            # input pauses at Mem_Buf_Limit and resumes from its DB offset.
            ("Retry_Limit", "no_limits"),
        ],
    )
    return {"service": service, "inputs": inputs, "filters": filters, "outputs": outputs}


def fluent_bit_values(
    cluster_name: str, region: str, log_group_name: str, minimum_priority: str | None = None
) -> dict[str, Any]:
    """Values for the fluent-bit chart: a DaemonSet that ships Falco's alerts and nothing else."""
    return {
        "kind": "DaemonSet",
        # The chart's `helm test` pod (busybox:latest) is never needed here.
        "testFramework": {"enabled": False},
        "serviceAccount": {"create": True, "name": FLUENT_BIT_SERVICE_ACCOUNT},
        # The ClusterRole only serves the kubernetes filter (pods/namespaces read), not used.
        "rbac": {"create": False},
        # Pod network on purpose: the node's instance metadata (and its credentials) stay out of
        # reach with IMDSv2 hop limit 1, so no aws filter. See docs/runtime-security.md.
        "hostNetwork": False,
        "dnsPolicy": "ClusterFirst",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "resources": {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            # No CPU limit: throttling a log shipper only delays alerts.
            "limits": {"memory": "256Mi"},
        },
        # Wherever Falco runs, its alerts must be shipped.
        "tolerations": TOLERATE_EVERY_TAINT,
        "affinity": LINUX_NODES_NOT_FARGATE,
        "priorityClassName": NODE_CRITICAL,
        "env": [
            {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        ],
        # Only what the tail input reads (read-only) and its offsets DB; not the chart's
        # /var/log (read-write), /var/lib/docker/containers or /etc/machine-id.
        "daemonSetVolumes": [
            {"name": "varlogcontainers", "hostPath": {"path": "/var/log/containers"}},
            {"name": "varlogpods", "hostPath": {"path": "/var/log/pods"}},
            {
                "name": "state",
                "hostPath": {"path": FLUENT_BIT_STATE_DIR, "type": "DirectoryOrCreate"},
            },
        ],
        "daemonSetVolumeMounts": [
            {"name": "varlogcontainers", "mountPath": "/var/log/containers", "readOnly": True},
            {"name": "varlogpods", "mountPath": "/var/log/pods", "readOnly": True},
            {"name": "state", "mountPath": FLUENT_BIT_STATE_DIR},
        ],
        "config": fluent_bit_pipeline(cluster_name, region, log_group_name, minimum_priority),
    }


def fluent_bit_policy(log_group_arn: str) -> dict[str, Any]:
    """Fluent Bit's only permissions: create streams in and write to the one alert log group.

    The cloudwatch_logs plugin calls CreateLogStream and PutLogEvents (CreateLogGroup and
    PutRetentionPolicy only with auto_create_group, which is off; DescribeLogStreams never).
    """
    streams = f"{log_group_arn}:log-stream:*"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "CreateStreamsInTheAlertGroup",
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream"],
                # The group ARN as well, for evaluation against the group the stream goes in.
                "Resource": [log_group_arn, streams],
            },
            {
                "Sid": "WriteAlertsToItsStreams",
                "Effect": "Allow",
                "Action": ["logs:PutLogEvents"],
                "Resource": [streams],
            },
        ],
    }


def fluent_bit_trust_policy(cluster: str, namespace: str, service_account: str) -> dict[str, Any]:
    """EKS Pod Identity may assume the role only for this service account in this cluster.

    The conditions use the session tags Pod Identity sets on every AssumeRole (the association
    must keep session tags enabled); the cluster ARN also pins the account.
    """
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "EksPodIdentityForFluentBit",
                "Effect": "Allow",
                "Principal": {"Service": "pods.eks.amazonaws.com"},
                "Action": ["sts:AssumeRole", "sts:TagSession"],
                "Condition": {
                    "StringEquals": {
                        "aws:RequestTag/eks-cluster-arn": cluster,
                        "aws:RequestTag/kubernetes-namespace": namespace,
                        "aws:RequestTag/kubernetes-service-account": service_account,
                    }
                },
            }
        ],
    }


class RuntimeSecurity(pulumi.ComponentResource):
    namespace: pulumi.Output[str]
    falco_release_name: pulumi.Output[str]
    fluent_bit_release_name: pulumi.Output[str]
    fluent_bit_role_arn: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        args: RuntimeSecurityArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(COMPONENT_TYPE, name, None, opts)
        falco_version = args.falco_chart_version
        fluent_bit_version = args.fluent_bit_chart_version
        falco = falco_values(
            args.falco_minimum_priority,
            args.falco_custom_rules,
            rules_version=args.falco_rules_version,
        )
        # Heartbeats lower Falco's priority; Fluent Bit then filters by falcoMinimumPriority.
        shipped_minimum = None
        if args.heartbeat_interval_minutes is not None:
            falco = with_heartbeats(falco, args.heartbeat_interval_minutes)
            shipped_minimum = args.falco_minimum_priority

        provider = kubernetes.Provider(
            f"{name}-k8s",
            kubeconfig=args.kubeconfig_json,
            opts=pulumi.ResourceOptions(parent=self),
        )

        # Declared here rather than with create_namespace: both releases share it, Pulumi deletes
        # it on destroy (Helm never does), and it carries the Pod Security label Falco needs.
        namespace = kubernetes.core.v1.Namespace(
            f"{name}-namespace",
            metadata=kubernetes.meta.v1.ObjectMetaArgs(
                name=NAMESPACE,
                labels={
                    # Falco runs privileged (eBPF, host /proc); say so explicitly so a stricter
                    # cluster-wide Pod Security default cannot silently block the sensor.
                    "pod-security.kubernetes.io/enforce": "privileged",
                    "app.kubernetes.io/part-of": "falco-securityhub",
                },
            ),
            opts=pulumi.ResourceOptions(parent=self, provider=provider, depends_on=args.depends_on),
        )

        role = aws.iam.Role(
            f"{name}-fluent-bit-role",
            description=f"Fluent Bit on EKS cluster {args.cluster_name}: writes Falco alerts",
            assume_role_policy=json.dumps(
                fluent_bit_trust_policy(
                    cluster_arn(args.partition, args.region, args.account_id, args.cluster_name),
                    NAMESPACE,
                    FLUENT_BIT_SERVICE_ACCOUNT,
                )
            ),
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        policy = aws.iam.RolePolicy(
            f"{name}-fluent-bit-logs",
            role=role.id,
            policy=pulumi.Output.from_input(args.log_group_arn).apply(
                lambda arn: json.dumps(fluent_bit_policy(arn))
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        association = aws.eks.PodIdentityAssociation(
            f"{name}-fluent-bit-identity",
            cluster_name=args.cluster_name,
            namespace=namespace.metadata.name,
            service_account=FLUENT_BIT_SERVICE_ACCOUNT,
            role_arn=role.arn,
            tags=args.tags,
            # The agent add-on must exist for the association to hand out credentials.
            opts=pulumi.ResourceOptions(parent=self, depends_on=args.depends_on),
        )

        release_options: dict[str, Any] = {
            # Wait for every pod to be ready; on failure roll back instead of leaving a
            # half-installed sensor that `pulumi up` reports as a success.
            "atomic": True,
            "cleanup_on_fail": True,
            "timeout": RELEASE_TIMEOUT_SECONDS,
            "max_history": RELEASE_MAX_HISTORY,
        }
        falco_release = Release(
            f"{name}-falco",
            ReleaseArgs(
                name=FALCO_RELEASE,
                chart=FALCO_CHART,
                version=falco_version,
                repository_opts=RepositoryOptsArgs(repo=FALCO_REPOSITORY),
                namespace=namespace.metadata.name,
                values=falco,
                **release_options,
            ),
            opts=pulumi.ResourceOptions(
                parent=self, provider=provider, depends_on=[namespace, *args.depends_on]
            ),
        )
        fluent_bit_release = Release(
            f"{name}-fluent-bit",
            ReleaseArgs(
                name=FLUENT_BIT_RELEASE,
                chart=FLUENT_BIT_CHART,
                version=fluent_bit_version,
                repository_opts=RepositoryOptsArgs(repo=FLUENT_BIT_REPOSITORY),
                namespace=namespace.metadata.name,
                values=pulumi.Output.from_input(args.log_group_name).apply(
                    lambda group: fluent_bit_values(
                        args.cluster_name, args.region, group, shipped_minimum
                    )
                ),
                **release_options,
            ),
            # Pod Identity injects credentials when a pod is created, so the association and the
            # role's permissions must exist before the first Fluent Bit pod starts.
            opts=pulumi.ResourceOptions(
                parent=self,
                provider=provider,
                depends_on=[namespace, association, policy, *args.depends_on],
            ),
        )

        self.namespace = namespace.metadata.name
        self.falco_release_name = falco_release.name
        self.fluent_bit_release_name = fluent_bit_release.name
        self.fluent_bit_role_arn = role.arn
        self.register_outputs(
            {
                "namespace": self.namespace,
                "falco_release_name": self.falco_release_name,
                "fluent_bit_release_name": self.fluent_bit_release_name,
                "fluent_bit_role_arn": self.fluent_bit_role_arn,
            }
        )
