"""The stack's settings: read once, validated together, handed to components as typed values.

Every setting lives in the project namespace (``falco-securityhub:<key>``); its type, default and
description are declared in ``Pulumi.yaml`` and mirrored by ``SETTINGS`` below (a test keeps the
two, and the table in docs/deploy.md, identical). A stack file ``Pulumi.<stack>.yaml`` overrides
what differs per region. Bad values never reach a component: ``load_settings`` collects every
problem and raises one ``SettingsError`` that names each key, the stack file and what is allowed.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pulumi
import yaml

# One list of Falco's priorities for the program and the Lambda (most to least severe).
from handlers.names import FALCO_PRIORITIES, PROJECT

# Reads one full config key ("falco-securityhub:nodeMinSize", "aws:region") as the engine hands it
# over: a string (lists JSON-encoded), or None when unset. Injectable so tests need no engine.
ConfigReader = Callable[[str], str | None]

SettingType = Literal["string", "integer", "boolean", "array"]
SettingValue = str | int | bool | list[str]


# CloudWatch Logs accepts only these retention periods (PutRetentionPolicy).
LOG_RETENTION_DAYS = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
)  # fmt: skip

NODE_AMI_TYPES = ("AL2023_x86_64_STANDARD", "AL2023_ARM_64_STANDARD")
NAT_GATEWAY_MODES = ("perAz", "single")
# EKS rejects more than 40 public access CIDRs.
MAX_PUBLIC_ACCESS_CIDRS = 40

_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d{1,2}$")
_CLUSTER_NAME = re.compile(r"^[0-9A-Za-z][A-Za-z0-9_-]{0,99}$")
_KUBERNETES_VERSION = re.compile(r"^1\.\d{2}$")
_INSTANCE_TYPE = re.compile(r"^([a-z]+)(\d+)([a-z0-9-]*)\.([a-z0-9]+)$")
_SEMVER = re.compile(r"^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$")
_ACCOUNT_ID = re.compile(r"^\d{12}$")
_EMAIL = re.compile(r"^[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$")
_IAM_PRINCIPAL_ARN = re.compile(
    r"^arn:aws(-cn|-us-gov)?:iam::\d{12}:(role|user)/[A-Za-z0-9+=,.@_/-]{1,512}$"
)
_IAM_ROOT_ARN = re.compile(r"^arn:aws(-cn|-us-gov)?:iam::\d{12}:root$")
_PRIVATE_RANGES = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
)


@dataclass(frozen=True)
class SettingSpec:
    """One project setting as Pulumi.yaml declares it and docs/deploy.md documents it."""

    key: str
    type: SettingType
    default: SettingValue
    description: str
    allowed: str

    @property
    def full_key(self) -> str:
        return f"{PROJECT}:{self.key}"


SETTINGS: tuple[SettingSpec, ...] = (
    # -- Security Hub regions ------------------------------------------------------------------
    SettingSpec(
        "homeRegion", "string", "us-east-1",
        "Security Hub home (aggregation) region: its stack also deploys the central hub.",
        "an AWS region name, e.g. us-east-1",
    ),
    SettingSpec(
        "linkedRegions", "array", ["eu-west-1"],
        "Regions whose findings the home region aggregates; every other stack's region.",
        "a list of AWS region names, without the home region, no duplicates",
    ),
    # -- network -------------------------------------------------------------------------------
    SettingSpec(
        "vpcCidr", "string", "10.0.0.0/16",
        "IPv4 CIDR of the cluster VPC; split into a public and a private subnet per AZ.",
        "a private (RFC 1918) IPv4 network from /16 to /20, e.g. 10.0.0.0/16",
    ),
    SettingSpec(
        "availabilityZoneCount", "integer", 2,
        "How many availability zones the VPC and the node group span.",
        "2, 3 or 4",
    ),
    SettingSpec(
        "natGateways", "string", "perAz",
        "perAz: one NAT gateway per AZ (an AZ outage does not blind the others); "
        "single: one shared NAT gateway (cheaper, one AZ is a single point of failure).",
        "perAz or single",
    ),
    SettingSpec(
        "vpcFlowLogs", "boolean", True,
        "Send VPC flow logs (all traffic) to a KMS-encrypted CloudWatch log group.",
        "true or false",
    ),
    # -- cluster -------------------------------------------------------------------------------
    SettingSpec(
        "clusterName", "string", "",
        "EKS cluster name; empty means falco-<region>.",
        "empty, or letters, digits, - and _ (starting with a letter or digit), at most 100",
    ),
    SettingSpec(
        "kubernetesVersion", "string", "1.35",
        "Pinned Kubernetes minor version of the control plane (and of the nodes).",
        "major.minor as EKS accepts it, e.g. 1.35",
    ),
    SettingSpec(
        "nodeInstanceTypes", "array", ["m6i.large"],
        "EC2 instance types of the managed node group.",
        "a non-empty list of instance types, all matching nodeAmiType's architecture",
    ),
    SettingSpec(
        "nodeAmiType", "string", "AL2023_x86_64_STANDARD",
        "EKS-optimized Amazon Linux 2023 AMI type of the nodes.",
        " or ".join(NODE_AMI_TYPES),
    ),
    SettingSpec(
        "nodeMinSize", "integer", 2,
        "Minimum number of nodes.",
        "an integer, 1 <= nodeMinSize <= nodeDesiredSize",
    ),
    SettingSpec(
        "nodeDesiredSize", "integer", 2,
        "Desired number of nodes.",
        "an integer, nodeMinSize <= nodeDesiredSize <= nodeMaxSize",
    ),
    SettingSpec(
        "nodeMaxSize", "integer", 4,
        "Maximum number of nodes.",
        "an integer, nodeMaxSize >= nodeDesiredSize",
    ),
    SettingSpec(
        "nodeDiskSizeGb", "integer", 50,
        "Root volume size of each node in GiB (gp3, encrypted).",
        "an integer from 20 to 16384",
    ),
    SettingSpec(
        "endpointPublicAccess", "boolean", True,
        "Expose the Kubernetes API on a public endpoint (limited to publicAccessCidrs); "
        "`pulumi up` must reach the API to install Falco and Fluent Bit.",
        "true or false",
    ),
    SettingSpec(
        "publicAccessCidrs", "array", [],
        "Source CIDRs allowed to reach the public API endpoint (CI runners, VPN egress).",
        "public IPv4 networks, at most 40; required when endpointPublicAccess is true; "
        "0.0.0.0/0 only with allowPublicEndpointFromAnywhere",
    ),
    SettingSpec(
        "allowPublicEndpointFromAnywhere", "boolean", False,
        "Explicit opt-in to let publicAccessCidrs contain 0.0.0.0/0.",
        "true or false",
    ),
    SettingSpec(
        "adminRoleArns", "array", [],
        "IAM roles/users granted cluster-admin through EKS access entries (the deploying "
        "identity is admin as cluster creator).",
        "IAM role or user ARNs (arn:aws:iam::<12 digits>:role/<name>), no duplicates",
    ),
    SettingSpec(
        "podIdentityAgentVersion", "string", "",
        "Pinned eks-pod-identity-agent add-on version; empty means EKS's default for the "
        "cluster version.",
        "empty, or an add-on version such as v1.3.8-eksbuild.2",
    ),
    # -- Falco and Fluent Bit ------------------------------------------------------------------
    SettingSpec(
        "falcoChartVersion", "string", "9.1.0",
        "Pinned version of the falco Helm chart (falcosecurity/charts).",
        "an exact semantic version, e.g. 9.1.0",
    ),
    SettingSpec(
        "fluentBitChartVersion", "string", "0.58.1",
        "Pinned version of the fluent-bit Helm chart (fluent/helm-charts).",
        "an exact semantic version, e.g. 0.58.1",
    ),
    SettingSpec(
        "falcoMinimumPriority", "string", "Notice",
        "Lowest Falco rule priority Falco emits (and Fluent Bit ships to CloudWatch Logs).",
        ", ".join(FALCO_PRIORITIES) + " (any case)",
    ),
    SettingSpec(
        "falcoCustomRulesFile", "string", "",
        "Falco rules file (YAML, relative to the project directory) loaded after the "
        "default rules; empty means none.",
        "empty, or the path of an existing .yaml/.yml file holding a YAML list",
    ),
    # -- findings pipeline ---------------------------------------------------------------------
    SettingSpec(
        # Notice, not Warning: "Terminal shell in container", Falco's best-known detection, is a
        # Notice. Lower it to Informational to import everything Falco loads.
        "findingsMinimumPriority", "string", "Notice",
        "Lowest Falco priority that becomes a Security Hub finding (lower ones stay in the "
        "log group only).",
        ", ".join(FALCO_PRIORITIES) + " (any case)",
    ),
    SettingSpec(
        "logRetentionDays", "integer", 365,
        "Retention of every log group the program creates (alerts, flow logs, control plane).",
        "one of " + ", ".join(str(d) for d in LOG_RETENTION_DAYS),
    ),
    SettingSpec(
        "lambdaMemoryMb", "integer", 256,
        "Memory of the findings Lambda in MB.",
        "an integer from 128 to 10240",
    ),
    SettingSpec(
        # 180 s: a 1 MB event is ~10 BatchImportFindings requests sent one after another, and under
        # sustained throttling botocore may spend ~15 s on one of them (5 attempts, backoff).
        "lambdaTimeoutSeconds", "integer", 180,
        "Timeout of the findings Lambda in seconds.",
        "an integer from 1 to 900",
    ),
    SettingSpec(
        "lambdaReservedConcurrency", "integer", 5,
        "Reserved concurrency of the findings Lambda (caps Security Hub API pressure).",
        "an integer >= 1",
    ),
    # -- sensor coverage (docs/coverage.md) ---------------------------------------------------
    SettingSpec(
        "heartbeatIntervalMinutes", "integer", 15,
        "Interval of Falco's metrics snapshot, each node's heartbeat (Falco then runs at "
        "Informational; Fluent Bit still ships only falcoMinimumPriority and above).",
        "an integer from 5 to 360",
    ),
    SettingSpec(
        "coverageCheckMinutes", "integer", 5,
        "How often the coverage checker compares heartbeats with the cluster's EC2 nodes.",
        "an integer from 1 to 60",
    ),
    SettingSpec(
        "coverageGraceMinutes", "integer", 30,
        "A node younger than this is not yet expected to report (boot, image pull, first "
        "snapshot one interval after Falco starts).",
        "an integer from heartbeatIntervalMinutes + 5 to 1440",
    ),
    SettingSpec(
        "coverageDropThresholdPercent", "integer", 1,
        "A node whose Falco dropped more than this percentage of kernel events since its "
        "previous snapshot gets an event-drops finding.",
        "an integer from 0 to 100",
    ),
    SettingSpec(
        "alarmEmail", "string", "",
        "E-mail subscribed to the pipeline's alarm topic; empty means no subscription.",
        "empty, or an e-mail address",
    ),
    # -- Security Hub --------------------------------------------------------------------------
    SettingSpec(
        "enableDefaultStandards", "boolean", False,
        "Enable Security Hub's default standards (FSBP, CIS) in each region; off because "
        "they bill per check and are often managed organization-wide.",
        "true or false",
    ),
    SettingSpec(
        "triagePrincipalArns", "array", [],
        "Principals allowed to assume the home region's findings-triage role.",
        "IAM role, user or account-root ARNs, no duplicates",
    ),
    SettingSpec(
        "memberAccounts", "array", [],
        "Security Hub member accounts invited by the home region, as <account-id>:<e-mail>.",
        "entries <12-digit account id>:<e-mail>, no duplicate account ids",
    ),
    SettingSpec(
        "delegatedAdminAccountId", "string", "",
        "Account made Security Hub delegated administrator (Organizations); empty means none.",
        "empty, or a 12-digit account id",
    ),
)  # fmt: skip

_SPECS = {spec.key: spec for spec in SETTINGS}


@dataclass(frozen=True)
class MemberAccount:
    """A Security Hub member account the home region invites."""

    account_id: str
    email: str


@dataclass(frozen=True)
class Settings:
    """One stack's validated settings. Lists are tuples: nothing downstream can mutate them."""

    stack_name: str
    region: str
    home_region: str
    linked_regions: tuple[str, ...]
    vpc_cidr: str
    availability_zone_count: int
    nat_gateway_mode: str
    vpc_flow_logs: bool
    cluster_name: str
    kubernetes_version: str
    node_instance_types: tuple[str, ...]
    node_ami_type: str
    node_min_size: int
    node_desired_size: int
    node_max_size: int
    node_disk_size_gb: int
    endpoint_public_access: bool
    public_access_cidrs: tuple[str, ...]
    allow_public_endpoint_from_anywhere: bool
    admin_role_arns: tuple[str, ...]
    pod_identity_agent_version: str | None
    falco_chart_version: str
    fluent_bit_chart_version: str
    falco_minimum_priority: str
    falco_custom_rules: str | None
    findings_minimum_priority: str
    log_retention_days: int
    lambda_memory_mb: int
    lambda_timeout_seconds: int
    lambda_reserved_concurrency: int
    alarm_email: str | None
    enable_default_standards: bool
    heartbeat_interval_minutes: int
    coverage_check_minutes: int
    coverage_grace_minutes: int
    coverage_drop_threshold_percent: int
    triage_principal_arns: tuple[str, ...]
    member_accounts: tuple[MemberAccount, ...]
    delegated_admin_account_id: str | None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def is_home_region(self) -> bool:
        return self.region == self.home_region


class SettingsError(pulumi.RunError):
    """Every problem with a stack's settings, one line each; RunError prints without a trace."""

    def __init__(self, stack_name: str, problems: list[str]) -> None:
        self.problems = problems
        header = (
            f"{len(problems)} invalid setting(s) for stack {stack_name!r}; fix them in "
            f"{stack_file(stack_name)} (pulumi config set <key> <value>):"
        )
        super().__init__("\n".join([header, *(f"  - {p}" for p in problems)]))


def stack_file(stack_name: str) -> str:
    return f"Pulumi.{stack_name}.yaml"


def pulumi_config_reader() -> ConfigReader:
    """The engine's config: project defaults from Pulumi.yaml merged with the stack file."""

    def read(full_key: str) -> str | None:
        namespace, key = full_key.split(":", 1)
        return pulumi.Config(namespace).get(key)

    return read


class _Reader:
    """Parses raw config strings by declared type, collecting problems instead of raising."""

    def __init__(self, read: ConfigReader, stack_name: str) -> None:
        self._read = read
        self._file = stack_file(stack_name)
        self.problems: list[str] = []

    def problem(self, key: str, got: object, reason: str) -> None:
        spec = _SPECS.get(key)
        full_key = spec.full_key if spec else key
        allowed = spec.allowed if spec else reason
        shown = json.dumps(got) if not isinstance(got, str) else repr(got)
        self.problems.append(
            f"{full_key} in {self._file}: got {shown}: {reason} (allowed: {allowed})"
        )

    def raw(self, key: str) -> str | None:
        return self._read(_SPECS[key].full_key)

    def string(self, key: str) -> str:
        value = self.raw(key)
        default = _SPECS[key].default
        return value.strip() if value is not None else str(default)

    def integer(self, key: str) -> int:
        """The value, or the default after recording a problem (so checks can carry on)."""
        default = _SPECS[key].default
        assert isinstance(default, int)
        value = self.raw(key)
        if value is None:
            return default
        try:
            return int(value.strip())
        except ValueError:
            self.problem(key, value, "not an integer")
            return default

    def boolean(self, key: str) -> bool:
        value = self.raw(key)
        if value is None:
            return bool(_SPECS[key].default)
        if value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        self.problem(key, value, "not a boolean")
        return bool(_SPECS[key].default)

    def array(self, key: str) -> list[str]:
        default = _SPECS[key].default
        assert isinstance(default, list)
        value = self.raw(key)
        if value is None:
            return list(default)
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        if not isinstance(parsed, list) or not all(isinstance(v, str) for v in parsed):
            self.problem(
                key,
                value,
                f"not a list of strings; set items with "
                f"`pulumi config set --path '{key}[0]' <value>`",
            )
            return []
        return [v.strip() for v in parsed]


def load_settings(
    config_reader: ConfigReader,
    stack_name: str,
    *,
    project_dir: Path | None = None,
) -> Settings:
    """Read and validate every setting of ``stack_name``; raise one SettingsError for all problems.

    ``project_dir`` resolves ``falcoCustomRulesFile`` (default: the working directory, which is
    the project directory when the Pulumi CLI runs the program).
    """
    r = _Reader(config_reader, stack_name)
    base_dir = project_dir or Path.cwd()

    region = (config_reader("aws:region") or "").strip()
    if not _REGION.match(region):
        r.problems.append(
            f"aws:region in {stack_file(stack_name)}: got {region!r}: the stack's AWS region is "
            f"missing or malformed (allowed: an AWS region name, e.g. us-east-1)"
        )

    home_region = r.string("homeRegion")
    linked_regions = r.array("linkedRegions")
    _check_regions(r, region, home_region, linked_regions)

    vpc_cidr = r.string("vpcCidr")
    _check_vpc_cidr(r, vpc_cidr)
    az_count = r.integer("availabilityZoneCount")
    if not 2 <= az_count <= 4:
        r.problem("availabilityZoneCount", az_count, "EKS needs at least 2 AZs; 4 at most")
    nat_mode = r.string("natGateways")
    if nat_mode not in NAT_GATEWAY_MODES:
        r.problem("natGateways", nat_mode, "unknown NAT gateway mode")
    flow_logs = r.boolean("vpcFlowLogs")

    cluster_name = r.string("clusterName") or f"falco-{region}"
    if not _CLUSTER_NAME.match(cluster_name):
        r.problem("clusterName", cluster_name, "not a valid EKS cluster name")
    kubernetes_version = r.string("kubernetesVersion")
    if not _KUBERNETES_VERSION.match(kubernetes_version):
        r.problem("kubernetesVersion", kubernetes_version, "not a Kubernetes minor version")

    ami_type = r.string("nodeAmiType")
    if ami_type not in NODE_AMI_TYPES:
        r.problem("nodeAmiType", ami_type, "not an AL2023 AMI type")
    instance_types = r.array("nodeInstanceTypes")
    _check_instance_types(r, instance_types, ami_type)
    node_min = r.integer("nodeMinSize")
    node_desired = r.integer("nodeDesiredSize")
    node_max = r.integer("nodeMaxSize")
    _check_node_sizes(r, node_min, node_desired, node_max)
    disk_size = r.integer("nodeDiskSizeGb")
    if not 20 <= disk_size <= 16384:
        r.problem("nodeDiskSizeGb", disk_size, "out of range")

    public_access = r.boolean("endpointPublicAccess")
    allow_anywhere = r.boolean("allowPublicEndpointFromAnywhere")
    public_cidrs = r.array("publicAccessCidrs")
    _check_public_access(r, public_access, public_cidrs, allow_anywhere)

    admin_arns = r.array("adminRoleArns")
    _check_principals(r, "adminRoleArns", admin_arns, allow_root=False)
    triage_arns = r.array("triagePrincipalArns")
    _check_principals(r, "triagePrincipalArns", triage_arns, allow_root=True)

    falco_chart = _semver(r, "falcoChartVersion")
    fluent_bit_chart = _semver(r, "fluentBitChartVersion")
    falco_priority = _priority(r, "falcoMinimumPriority")
    findings_priority = _priority(r, "findingsMinimumPriority")
    custom_rules = _custom_rules(r, base_dir)

    retention = r.integer("logRetentionDays")
    if retention not in LOG_RETENTION_DAYS:
        r.problem("logRetentionDays", retention, "not a CloudWatch Logs retention period")
    memory = _bounded(r, "lambdaMemoryMb", 128, 10240)
    timeout = _bounded(r, "lambdaTimeoutSeconds", 1, 900)
    concurrency = _bounded(r, "lambdaReservedConcurrency", 1, None)
    alarm_email = r.string("alarmEmail")
    if alarm_email and not _EMAIL.match(alarm_email):
        r.problem("alarmEmail", alarm_email, "not an e-mail address")

    heartbeat_minutes = _bounded(r, "heartbeatIntervalMinutes", 5, 360)
    check_minutes = _bounded(r, "coverageCheckMinutes", 1, 60)
    # Falco's first snapshot comes one interval after it starts: a shorter grace would report
    # every new node as silent.
    grace_minutes = _bounded(r, "coverageGraceMinutes", heartbeat_minutes + 5, 1440)
    drop_threshold = _bounded(r, "coverageDropThresholdPercent", 0, 100)

    member_accounts = _member_accounts(r)
    delegated_admin = r.string("delegatedAdminAccountId")
    if delegated_admin and not _ACCOUNT_ID.match(delegated_admin):
        r.problem("delegatedAdminAccountId", delegated_admin, "not a 12-digit account id")

    enable_standards = r.boolean("enableDefaultStandards")
    agent_version = r.string("podIdentityAgentVersion")
    if r.problems:
        raise SettingsError(stack_name, r.problems)

    return Settings(
        stack_name=stack_name,
        region=region,
        home_region=home_region,
        linked_regions=tuple(linked_regions),
        vpc_cidr=vpc_cidr,
        availability_zone_count=az_count,
        nat_gateway_mode=nat_mode,
        vpc_flow_logs=flow_logs,
        cluster_name=cluster_name,
        kubernetes_version=kubernetes_version,
        node_instance_types=tuple(instance_types),
        node_ami_type=ami_type,
        node_min_size=node_min,
        node_desired_size=node_desired,
        node_max_size=node_max,
        node_disk_size_gb=disk_size,
        endpoint_public_access=public_access,
        public_access_cidrs=tuple(public_cidrs) if public_access else (),
        allow_public_endpoint_from_anywhere=allow_anywhere,
        admin_role_arns=tuple(admin_arns),
        pod_identity_agent_version=agent_version or None,
        falco_chart_version=falco_chart,
        fluent_bit_chart_version=fluent_bit_chart,
        falco_minimum_priority=falco_priority,
        falco_custom_rules=custom_rules,
        findings_minimum_priority=findings_priority,
        log_retention_days=retention,
        lambda_memory_mb=memory,
        lambda_timeout_seconds=timeout,
        lambda_reserved_concurrency=concurrency,
        alarm_email=alarm_email or None,
        enable_default_standards=enable_standards,
        heartbeat_interval_minutes=heartbeat_minutes,
        coverage_check_minutes=check_minutes,
        coverage_grace_minutes=grace_minutes,
        coverage_drop_threshold_percent=drop_threshold,
        triage_principal_arns=tuple(triage_arns),
        member_accounts=tuple(member_accounts),
        delegated_admin_account_id=delegated_admin or None,
        # Ownership/cost tags (Owner, CostCenter) come from aws:defaultTags in the stack file.
        tags={"Project": PROJECT, "Stack": stack_name},
    )


# -- checks ------------------------------------------------------------------------------------
def _partition(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def _check_regions(r: _Reader, region: str, home: str, linked: list[str]) -> None:
    if not _REGION.match(home):
        r.problem("homeRegion", home, "not an AWS region name")
    bad = [name for name in linked if not _REGION.match(name)]
    if bad:
        r.problem("linkedRegions", linked, f"not AWS region names: {', '.join(bad)}")
    if home in linked:
        r.problem("linkedRegions", linked, f"contains the home region {home}")
    if _duplicates(linked):
        r.problem("linkedRegions", linked, f"duplicates: {', '.join(_duplicates(linked))}")
    # The finding aggregator cannot link regions across partitions.
    foreign = [name for name in linked if _partition(name) != _partition(home)]
    if foreign:
        r.problem("linkedRegions", linked, f"not in {home}'s partition: {', '.join(foreign)}")
    if _REGION.match(region) and _REGION.match(home) and region != home and region not in linked:
        r.problem(
            "linkedRegions",
            linked,
            f"this stack's region {region} (aws:region) is neither homeRegion ({home}) nor "
            f"linked; add it so the home region aggregates its findings",
        )


def _check_vpc_cidr(r: _Reader, cidr: str) -> None:
    try:
        network = ipaddress.ip_network(cidr, strict=True)
    except ValueError as error:
        r.problem("vpcCidr", cidr, f"not an IPv4 network ({error})")
        return
    if not isinstance(network, ipaddress.IPv4Network):
        r.problem("vpcCidr", cidr, "not IPv4")
    elif not any(network.subnet_of(private) for private in _PRIVATE_RANGES):
        r.problem("vpcCidr", cidr, "not inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16")
    elif not 16 <= network.prefixlen <= 20:
        # /20 split eight ways leaves /23 subnets: the least that fits pods on VPC CNI IPs.
        r.problem("vpcCidr", cidr, "prefix length outside /16../20")


def _instance_arch(instance_type: str) -> str | None:
    """'arm64' for Graviton families (a 'g' after the generation digit: m7g, c7gn, x2gd)."""
    match = _INSTANCE_TYPE.match(instance_type)
    if not match:
        return None
    return "arm64" if "g" in match.group(3) else "x86_64"


def _check_instance_types(r: _Reader, instance_types: list[str], ami_type: str) -> None:
    if not instance_types:
        r.problem("nodeInstanceTypes", instance_types, "empty")
        return
    bad = [t for t in instance_types if _instance_arch(t) is None]
    if bad:
        r.problem("nodeInstanceTypes", instance_types, f"not instance types: {', '.join(bad)}")
        return
    wanted = "arm64" if "ARM_64" in ami_type else "x86_64"
    mismatched = [t for t in instance_types if _instance_arch(t) != wanted]
    if ami_type in NODE_AMI_TYPES and mismatched:
        r.problem(
            "nodeInstanceTypes",
            instance_types,
            f"{', '.join(mismatched)} cannot boot {ami_type} ({wanted})",
        )


def _check_node_sizes(r: _Reader, low: int, desired: int, high: int) -> None:
    if low < 1:
        # Falco is a DaemonSet: a node group scaled to zero monitors nothing.
        r.problem("nodeMinSize", low, "must be at least 1")
    if desired < low:
        r.problem("nodeDesiredSize", desired, f"below nodeMinSize ({low})")
    if high < desired:
        r.problem("nodeMaxSize", high, f"below nodeDesiredSize ({desired})")


def _check_public_access(r: _Reader, enabled: bool, cidrs: list[str], anywhere: bool) -> None:
    key = "publicAccessCidrs"
    if not enabled:
        if cidrs:
            r.problem(key, cidrs, "set while endpointPublicAccess is false (it would be ignored)")
        return
    if not cidrs:
        r.problem(key, cidrs, "empty while endpointPublicAccess is true")
    if len(cidrs) > MAX_PUBLIC_ACCESS_CIDRS:
        r.problem(key, cidrs, f"{len(cidrs)} entries")
    for cidr in cidrs:
        try:
            network = ipaddress.ip_network(cidr, strict=True)
        except ValueError as error:
            r.problem(key, cidr, f"not an IPv4 network ({error})")
            continue
        if not isinstance(network, ipaddress.IPv4Network):
            r.problem(key, cidr, "not IPv4")
        elif network.prefixlen == 0 and not anywhere:
            r.problem(
                key,
                cidr,
                "opens the Kubernetes API to the whole internet; set "
                "allowPublicEndpointFromAnywhere to true to mean it",
            )
        elif any(network.subnet_of(private) for private in _PRIVATE_RANGES):
            # The public endpoint only ever sees public source addresses.
            r.problem(key, cidr, "a private range; it reaches the private endpoint instead")
    if _duplicates(cidrs):
        r.problem(key, cidrs, f"duplicates: {', '.join(_duplicates(cidrs))}")


def _check_principals(r: _Reader, key: str, arns: list[str], *, allow_root: bool) -> None:
    for arn in arns:
        if _IAM_PRINCIPAL_ARN.match(arn) or (allow_root and _IAM_ROOT_ARN.match(arn)):
            continue
        hint = (
            "an STS session, not the role; use arn:aws:iam::<account>:role/<name>"
            if ":assumed-role/" in arn
            else "not an IAM principal ARN"
        )
        r.problem(key, arn, hint)
    if _duplicates(arns):
        r.problem(key, arns, f"duplicates: {', '.join(_duplicates(arns))}")


def _semver(r: _Reader, key: str) -> str:
    version = r.string(key)
    if not _SEMVER.match(version):
        # Ranges and "latest" would let a chart upgrade slip into a `pulumi up` unreviewed.
        r.problem(key, version, "not an exact chart version")
    return version


def _priority(r: _Reader, key: str) -> str:
    value = r.string(key)
    canonical = {p.lower(): p for p in FALCO_PRIORITIES}.get(value.lower())
    if canonical is None:
        r.problem(key, value, "unknown Falco priority")
        return value
    return canonical


def _custom_rules(r: _Reader, base_dir: Path) -> str | None:
    key = "falcoCustomRulesFile"
    path_text = r.string(key)
    if not path_text:
        return None
    path = base_dir / path_text
    if path.suffix not in (".yaml", ".yml"):
        r.problem(key, path_text, "not a .yaml/.yml file")
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        r.problem(key, path_text, f"cannot be read ({error.strerror})")
        return None
    try:
        rules = yaml.safe_load(text)
    except yaml.YAMLError as error:
        r.problem(key, path_text, f"not valid YAML ({error})")
        return None
    if not isinstance(rules, list):
        r.problem(key, path_text, "a Falco rules file is a YAML list of rule/macro/list items")
        return None
    return text


def _bounded(r: _Reader, key: str, low: int, high: int | None) -> int:
    value = r.integer(key)
    if value < low or (high is not None and value > high):
        r.problem(key, value, "out of range")
    return value


def _member_accounts(r: _Reader) -> list[MemberAccount]:
    key = "memberAccounts"
    accounts: list[MemberAccount] = []
    for entry in r.array(key):
        account_id, _, email = entry.partition(":")
        account_id, email = account_id.strip(), email.strip()
        if not _ACCOUNT_ID.match(account_id) or not _EMAIL.match(email):
            r.problem(key, entry, "not <12-digit account id>:<e-mail>")
            continue
        accounts.append(MemberAccount(account_id=account_id, email=email))
    ids = [a.account_id for a in accounts]
    if _duplicates(ids):
        r.problem(key, ids, f"duplicate account ids: {', '.join(_duplicates(ids))}")
    return accounts


def _duplicates(values: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    repeated: list[str] = []
    for value in values:
        if value in seen and value not in repeated:
            repeated.append(value)
        seen.add(value)
    return repeated
