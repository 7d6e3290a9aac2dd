"""The stack's settings: each defined once, as a field of ``Settings``.

A field's ``setting(...)`` declares everything about it: the config key (the field name in
camelCase, in the ``falco-securityhub:`` namespace), the type (the default's: str -> string,
int -> integer, bool -> boolean, tuple -> array of strings), the default, the description, the
allowed values and the checks. From that one definition come the validation below, the
``config:`` block of Pulumi.yaml and the README's settings table (``python -m components.settings``
rewrites both; a test fails when they are stale). Adding a setting is adding a field here and, if
it differs per stack, a line in that stack file.

Strictness: Pulumi hands every value over as text (lists as JSON), so a value must be the exact
text of its type: ``true``/``false`` (not ``yes``), an integer in plain digits (not ``2.0``), a JSON
list of strings (not a bare string). ``load_settings`` collects every problem, unknown keys
included, and raises one ``SettingsError`` naming each key, where its value came from and what is
allowed. Components receive validated values and do not check them again.
"""

from __future__ import annotations

import datetime
import difflib
import ipaddress
import json
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import pulumi
import yaml

from components.audit_detection import AUDIT_DETECTION_MODES
from components.findings_pipeline import MAX_FUNCTION_NAME_LENGTH, function_name_for
from components.network import NAT_PER_AZ, NAT_SINGLE
from components.runtime_security import FALCO_RULES_VERSION
from components.suppressions import Suppression, parse_suppressions
from handlers.names import FALCO_PRIORITIES, PROJECT, parse_priority

SettingType = Literal["string", "integer", "boolean", "array"]
SettingValue = str | int | bool | tuple[str, ...]
# A check returns why a value is refused, or None when it is fine.
Check = Callable[[Any], str | None]

# CloudWatch Logs accepts only these retention periods (PutRetentionPolicy).
LOG_RETENTION_DAYS = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
)  # fmt: skip
NODE_AMI_TYPES = ("AL2023_x86_64_STANDARD", "AL2023_ARM_64_STANDARD")
NAT_GATEWAY_MODES = (NAT_PER_AZ, NAT_SINGLE)
MAX_PUBLIC_ACCESS_CIDRS = 40  # EKS refuses more

_REGION = re.compile(r"[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d{1,2}")
_CLUSTER_NAME = re.compile(r"[0-9A-Za-z][A-Za-z0-9_-]{0,99}")
_KUBERNETES_VERSION = re.compile(r"1\.\d{2}")
_INSTANCE_TYPE = re.compile(r"([a-z]+)(\d+)([a-z0-9-]*)\.([a-z0-9]+)")
_EXACT_VERSION = re.compile(r"\d+\.\d+\.\d+")
_ADDON_VERSION = re.compile(r"v\d+\.\d+\.\d+-eksbuild\.\d+")
_ACCOUNT_ID = re.compile(r"\d{12}")
_EMAIL = re.compile(r"[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_IAM_PRINCIPAL = re.compile(
    r"arn:aws(-cn|-us-gov)?:iam::\d{12}:(role|user)/[A-Za-z0-9+=,.@_/-]{1,512}"
)
_PERMISSION_SET_NAME = re.compile(r"[A-Za-z0-9+=,.@_-]{1,32}")
_IAM_ROOT = re.compile(r"arn:aws(-cn|-us-gov)?:iam::\d{12}:root")
_PRIVATE_RANGES = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
)
# RFC 5737: they route nowhere, so an API endpoint limited to them is unreachable.
DOCUMENTATION_RANGES = tuple(
    ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
)
_INTEGER = re.compile(r"-?\d+")


# -- checks: each returns the reason a value is refused, or None -------------------------------
def _matches(pattern: re.Pattern[str], what: str) -> Check:
    return lambda value: None if pattern.fullmatch(value) else what


def _one_of(choices: tuple[Any, ...]) -> Check:
    return lambda value: None if value in choices else "not one of the allowed values"


def _between(low: int, high: int | None = None) -> Check:
    return lambda value: (
        None if value >= low and (high is None or value <= high) else "out of range"
    )


def _empty_or(check: Check) -> Check:
    return lambda value: None if value == "" else check(value)


def _no_duplicates(values: tuple[str, ...]) -> str | None:
    repeated = sorted({item for item in values if values.count(item) > 1})
    return f"duplicates: {', '.join(repeated)}" if repeated else None


def _each(check: Check) -> Check:
    """A list check: every item passes ``check``, and no item is repeated."""

    def check_all(values: tuple[str, ...]) -> str | None:
        reasons = [f"{item}: {reason}" for item in values if (reason := check(item))]
        reasons += filter(None, [_no_duplicates(values)])
        return "; ".join(reasons) or None

    return check_all


def _priority(value: str) -> str | None:
    try:
        parse_priority(value)
    except ValueError:
        return "unknown Falco priority"
    return None


def _ipv4_network(value: str) -> ipaddress.IPv4Network | str:
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError as error:
        return f"not an IPv4 network ({error})"
    return network if isinstance(network, ipaddress.IPv4Network) else "not IPv4"


def _vpc_cidr(value: str) -> str | None:
    network = _ipv4_network(value)
    if isinstance(network, str):
        return network
    if not any(network.subnet_of(private) for private in _PRIVATE_RANGES):
        return "not inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16"
    # /20 split eight ways leaves /23 subnets: the least that fits pods on VPC CNI addresses.
    return None if 16 <= network.prefixlen <= 20 else "prefix length outside /16../20"


def _public_cidr(value: str) -> str | None:
    network = _ipv4_network(value)
    if isinstance(network, str):
        return network
    if any(network.subnet_of(doc) for doc in DOCUMENTATION_RANGES):
        return (
            "a documentation range (RFC 5737) that reaches nothing; put in the real egress CIDR "
            "of where `pulumi up` runs (CI runners, VPN)"
        )
    if any(network.subnet_of(private) for private in _PRIVATE_RANGES):
        return "a private range; it reaches the private endpoint instead"
    return None


def _public_cidrs(values: tuple[str, ...]) -> str | None:
    if len(values) > MAX_PUBLIC_ACCESS_CIDRS:
        return f"{len(values)} entries"
    return _each(_public_cidr)(values)


def _principal(*, allow_root: bool) -> Check:
    def check(arn: str) -> str | None:
        if _IAM_PRINCIPAL.fullmatch(arn) or (allow_root and _IAM_ROOT.fullmatch(arn)):
            return None
        if ":assumed-role/" in arn:
            return "an STS session, not the role; use arn:aws:iam::<account>:role/<name>"
        return "not an IAM principal ARN"

    return check


def _member_account(entry: str) -> str | None:
    account_id, _, email = entry.partition(":")
    if _ACCOUNT_ID.fullmatch(account_id) and _EMAIL.fullmatch(email):
        return None
    return "not <12-digit account id>:<e-mail>"


def _member_accounts(entries: tuple[str, ...]) -> str | None:
    account_ids = tuple(entry.partition(":")[0] for entry in entries)
    return _each(_member_account)(entries) or _no_duplicates(account_ids)


def _instance_arch(instance_type: str) -> str | None:
    """'arm64' for Graviton families (a 'g' after the generation digit: m7g, c7gn, x2gd)."""
    match = _INSTANCE_TYPE.fullmatch(instance_type)
    if not match:
        return None
    return "arm64" if "g" in match.group(3) else "x86_64"


def _instance_types(values: tuple[str, ...]) -> str | None:
    if not values:
        return "empty"
    return _each(lambda t: None if _instance_arch(t) else "not an instance type")(values)


def _rules_file(path: str) -> str | None:
    return None if path == "" or path.endswith((".yaml", ".yml")) else "not a .yaml/.yml file"


def _optional(value: str) -> str | None:
    return value or None


@dataclass(frozen=True)
class MemberAccount:
    """A Security Hub member account the home region invites."""

    account_id: str
    email: str


def _to_member_accounts(entries: tuple[str, ...]) -> tuple[MemberAccount, ...]:
    return tuple(MemberAccount(*entry.split(":", 1)) for entry in entries)


# -- the model -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Setting:
    """One project setting: what Pulumi.yaml declares and the README documents about it."""

    default: SettingValue
    description: str
    allowed: str
    checks: tuple[Check, ...] = ()
    # Turns the checked value into what components receive ("" -> None, entries -> objects).
    convert: Callable[[Any], Any] | None = None
    key: str = ""  # the field name in camelCase, filled in by SETTINGS
    attr: str = ""

    @property
    def full_key(self) -> str:
        return f"{PROJECT}:{self.key}"

    @property
    def type(self) -> SettingType:
        if isinstance(self.default, bool):
            return "boolean"
        if isinstance(self.default, int):
            return "integer"
        return "array" if isinstance(self.default, tuple) else "string"


def setting(
    default: SettingValue,
    description: str,
    allowed: str,
    *checks: Check,
    convert: Callable[[Any], Any] | None = None,
) -> Any:
    """A ``Settings`` field that is a project setting; ``checks`` each return a reason or None."""
    spec = Setting(default, description, allowed, checks, convert)
    return field(metadata={"setting": spec})


_PRIORITY_TEXT = ", ".join(f"`{p}`" for p in FALCO_PRIORITIES) + " (any case, or `info`)"
_REGION_TEXT = "an AWS region name, e.g. `us-east-1`"


@dataclass(frozen=True, kw_only=True)
class Settings:
    """One stack's validated settings. Lists are tuples: nothing downstream can mutate them."""

    stack_name: str
    region: str  # aws:region of the stack

    # -- Security Hub regions --------------------------------------------------------------
    home_region: str = setting(
        "us-east-1",
        "Security Hub home (aggregation) region: its stack also deploys the central hub.",
        _REGION_TEXT,
        _matches(_REGION, "not an AWS region name"),
    )
    # Empty: the aggregator links every region (ALL_REGIONS, new ones included), so adding a
    # region is adding its stack file. Non-empty: the aggregator links only these; each linked
    # stack checks that its region is listed (through a StackReference to the home stack).
    linked_regions: tuple[str, ...] = setting(
        (),
        "Regions whose findings the home region aggregates; empty means all regions, new ones "
        "included. A list restricts it: then each new region must be added to it.",
        "empty, or AWS region names in the home region's partition, without the home region, "
        "no duplicates",
        _each(_matches(_REGION, "not an AWS region name")),
    )
    # -- network ---------------------------------------------------------------------------
    vpc_cidr: str = setting(
        "10.0.0.0/16",
        "IPv4 CIDR of the cluster VPC; split into eight equal blocks: private subnets in the "
        "first four, public subnets in the last four (one of each per AZ).",
        "a private (RFC 1918) IPv4 network from /16 to /20",
        _vpc_cidr,
    )
    availability_zone_count: int = setting(
        2,
        "How many availability zones the VPC and the node group span.",
        "2, 3 or 4 (EKS needs at least 2)",
        _between(2, 4),
    )
    nat_gateways: str = setting(
        "perAz",
        "`perAz`: one NAT gateway per AZ, so an AZ outage does not cut the others' egress "
        "(Fluent Bit -> CloudWatch Logs); `single`: one shared NAT gateway, cheaper, one AZ is "
        "a single point of failure.",
        "`perAz` or `single`",
        _one_of(NAT_GATEWAY_MODES),
    )
    vpc_flow_logs: bool = setting(
        True,
        "Send VPC flow logs (all traffic) to a KMS-encrypted CloudWatch log group.",
        "`true` or `false`",
    )
    # -- cluster ---------------------------------------------------------------------------
    existing_cluster_name: str | None = setting(
        "",
        "An EKS cluster in the stack's region to monitor; empty means the stack creates its own "
        "VPC and cluster. When set, the network, cluster and endpoint settings do not apply and "
        "the cluster is named what it is named.",
        "empty, or the name of an existing EKS cluster (letters, digits, `-` and `_`); not with "
        "`clusterName`",
        _empty_or(_matches(_CLUSTER_NAME, "not a valid EKS cluster name")),
        convert=_optional,
    )
    install_pod_identity_agent: bool = setting(
        False,
        "With `existingClusterName`: install the `eks-pod-identity-agent` add-on (only on a "
        "cluster that lacks it; `pulumi destroy` removes it). A cluster the stack creates always "
        "has it.",
        "`true` or `false`; `true` only with `existingClusterName`",
    )
    cluster_name: str = setting(
        "",
        "EKS cluster name; empty means `falco-<region>`.",
        "empty, or letters, digits, `-` and `_` (starting with a letter or digit), at most "
        f"{MAX_FUNCTION_NAME_LENGTH - len(function_name_for(''))} (the findings function is "
        "`<cluster>-falco-findings`)",
        _empty_or(_matches(_CLUSTER_NAME, "not a valid EKS cluster name")),
    )
    kubernetes_version: str = setting(
        "1.35",
        "Pinned Kubernetes minor version of the control plane (the nodes follow it).",
        "`major.minor` as EKS accepts it, e.g. `1.35`",
        _matches(_KUBERNETES_VERSION, "not a Kubernetes minor version"),
    )
    node_instance_types: tuple[str, ...] = setting(
        ("m6i.large",),
        "EC2 instance types of the managed node group.",
        "a non-empty list of instance types, all of `nodeAmiType`'s architecture (Graviton "
        "types such as `m7g.large` need the ARM AMI)",
        _instance_types,
    )
    node_ami_type: str = setting(
        "AL2023_x86_64_STANDARD",
        "EKS-optimized Amazon Linux 2023 AMI type of the nodes.",
        " or ".join(f"`{t}`" for t in NODE_AMI_TYPES),
        _one_of(NODE_AMI_TYPES),
    )
    node_min_size: int = setting(
        2,
        "Minimum number of nodes.",
        "an integer, 1 <= `nodeMinSize` <= `nodeDesiredSize` (Falco is a DaemonSet: zero nodes "
        "monitor nothing)",
        _between(1),
    )
    node_desired_size: int = setting(
        2,
        "Desired number of nodes.",
        "an integer, `nodeMinSize` <= `nodeDesiredSize` <= `nodeMaxSize`",
    )
    node_max_size: int = setting(4, "Maximum number of nodes.", "an integer >= `nodeDesiredSize`")
    node_disk_size_gb: int = setting(
        50,
        "Root volume size of each node in GiB (gp3, encrypted).",
        "an integer from 20 to 16384",
        _between(20, 16384),
    )
    endpoint_public_access: bool = setting(
        True,
        "Expose the Kubernetes API on a public endpoint limited to `publicAccessCidrs` (the "
        "private endpoint is always on); `pulumi up` must reach the API to install Falco and "
        "Fluent Bit.",
        "`true` or `false` (`false`: run `pulumi up` from inside the VPC)",
    )
    public_access_cidrs: tuple[str, ...] = setting(
        (),
        "Source CIDRs allowed to reach the public API endpoint: the egress CIDRs of where "
        "`pulumi up` runs (CI runners, VPN).",
        f"public IPv4 networks, at most {MAX_PUBLIC_ACCESS_CIDRS}, no documentation ranges "
        "(192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24); required when `endpointPublicAccess` "
        "is `true`, refused when it is `false`; `0.0.0.0/0` only with "
        "`allowPublicEndpointFromAnywhere`",
        _public_cidrs,
    )
    allow_public_endpoint_from_anywhere: bool = setting(
        False,
        "Explicit opt-in to let `publicAccessCidrs` contain `0.0.0.0/0` (the API is then "
        "reachable from the whole internet, protected by IAM authentication only).",
        "`true` or `false`",
    )
    admin_role_arns: tuple[str, ...] = setting(
        (),
        "IAM roles or users granted cluster-admin (`AmazonEKSClusterAdminPolicy`, cluster "
        "scope) through EKS access entries. The identity running `pulumi up` is admin as the "
        "cluster's creator.",
        "IAM role or user ARNs (`arn:aws:iam::<12 digits>:role/<name>`, not `sts` assumed-role "
        "sessions), no duplicates",
        _each(_principal(allow_root=False)),
    )
    pod_identity_agent_version: str | None = setting(
        "",
        "Pinned `eks-pod-identity-agent` add-on version; empty means EKS's default for the "
        "cluster version.",
        "empty, or an add-on version such as `v1.3.8-eksbuild.2`",
        _empty_or(_matches(_ADDON_VERSION, "not an add-on version")),
        convert=_optional,
    )
    # -- Falco and Fluent Bit --------------------------------------------------------------
    falco_chart_version: str = setting(
        "9.1.0",
        "Pinned version of the `falco` Helm chart (falcosecurity/charts).",
        "an exact version `x.y.z`, e.g. `9.1.0` (no ranges, no pre-releases, no `latest`)",
        _matches(_EXACT_VERSION, "not an exact chart version"),
    )
    fluent_bit_chart_version: str = setting(
        "0.58.1",
        "Pinned version of the `fluent-bit` Helm chart (fluent/helm-charts).",
        "an exact version `x.y.z`, e.g. `0.58.1`",
        _matches(_EXACT_VERSION, "not an exact chart version"),
    )
    falco_rules_version: str = setting(
        FALCO_RULES_VERSION,
        "Exact version of the `falco-rules` artifact falcoctl installs (the rules Falco 0.44.1 "
        "bundles). falcoctl's follow sidecar is off, so detection rules change only with a "
        "commit that changes this.",
        "an exact version `x.y.z` of falcosecurity/rules, e.g. `5.1.0`",
        _matches(_EXACT_VERSION, "not an exact rules version"),
    )
    falco_minimum_priority: str = setting(
        "Notice",
        "Lowest Falco rule priority Falco emits (and Fluent Bit ships to CloudWatch Logs).",
        _PRIORITY_TEXT,
        _priority,
        convert=parse_priority,
    )
    falco_custom_rules_file: str = setting(
        "",
        "Falco rules file (YAML, relative to the project directory) loaded after the default "
        "rules; empty means none.",
        "empty, or the path of an existing `.yaml`/`.yml` file holding a YAML list",
        _rules_file,
    )
    audit_detections: str = setting(
        "auto",
        "Falco on the cluster's Kubernetes audit log (k8saudit-eks plugin): `auto` runs it when "
        "the cluster sends its audit log to CloudWatch Logs; `on` requires it (the program "
        "refuses a cluster whose audit log is off); `off` never runs it.",
        "`auto`, `on` or `off`",
        _one_of(AUDIT_DETECTION_MODES),
    )
    # -- findings pipeline -----------------------------------------------------------------
    # Notice, not Warning: "Terminal shell in container", Falco's best-known detection, is a
    # Notice. Lower it to Informational to import everything Falco loads.
    findings_minimum_priority: str = setting(
        "Notice",
        "Lowest Falco priority that becomes a Security Hub finding; lower ones stay in the log "
        "group only. Below `falcoMinimumPriority` it has no effect.",
        _PRIORITY_TEXT,
        _priority,
        convert=parse_priority,
    )
    log_retention_days: int = setting(
        365,
        "Retention of every log group the program creates (Falco alerts, VPC flow logs, EKS "
        "control plane).",
        "one of " + ", ".join(str(d) for d in LOG_RETENTION_DAYS),
        _one_of(LOG_RETENTION_DAYS),
    )
    # 256: the largest events Lambda can deliver (1 MB asynchronous payload) peak at ~162 MB
    # (15,700 distinct alerts) and ~134 MB (a 27,000-event storm of one alert), measured by
    # bench/memory_probe.py (tests/handlers/test_memory.py keeps them <= 200 MB).
    lambda_memory_mb: int = setting(
        256,
        "Memory of the findings Lambda in MB. 256 holds the largest event Lambda can deliver "
        "(peak ~162 MB measured); more memory also buys CPU, for faster imports.",
        "an integer from 128 to 10240",
        _between(128, 10240),
    )
    # 180 s: a 1 MB event is ~10 BatchImportFindings requests sent one after another, and under
    # sustained throttling botocore may spend ~15 s on one of them (5 attempts, backoff).
    lambda_timeout_seconds: int = setting(
        180,
        "Timeout of the findings Lambda in seconds (room for Security Hub throttling retries "
        "on a 1 MB event).",
        "an integer from 1 to 900",
        _between(1, 900),
    )
    # 0 (no reservation) by default: AWS keeps 10 units unreserved, and new accounts often have a
    # quota of 10, where any reservation fails; the handler's back-off keeps within Security Hub's
    # quota without one.
    lambda_reserved_concurrency: int | None = setting(
        0,
        "Reserved concurrency of the findings Lambda; 0 means none (the function shares the "
        "account's unreserved pool). Set it to guarantee capacity or cap Security Hub API "
        "pressure, in accounts whose concurrency quota leaves 10 unreserved.",
        "0 (no reservation) or a positive integer",
        _between(0),
        convert=lambda value: value or None,
    )
    alarm_email: str | None = setting(
        "",
        "E-mail subscribed to the pipeline's alarm topic (confirm the subscription mail); empty "
        "means no subscription.",
        "empty, or an e-mail address",
        _empty_or(_matches(_EMAIL, "not an e-mail address")),
        convert=_optional,
    )
    # -- sensor coverage (docs/coverage.md) -----------------------------------------------
    heartbeat_interval_minutes: int = setting(
        15,
        "Interval of Falco's metrics snapshot, each node's heartbeat (Falco then runs at "
        "Informational; Fluent Bit still ships only `falcoMinimumPriority` and above).",
        "an integer from 5 to 360",
        _between(5, 360),
    )
    coverage_check_minutes: int = setting(
        5,
        "How often the coverage checker compares heartbeats with the cluster's EC2 nodes.",
        "an integer from 1 to 60",
        _between(1, 60),
    )
    coverage_grace_minutes: int = setting(
        30,
        "A node younger than this is not yet expected to report (boot, image pull, first "
        "snapshot one interval after Falco starts).",
        "an integer from `heartbeatIntervalMinutes` + 5 to 1440",
        _between(1, 1440),
    )
    coverage_drop_threshold_percent: int = setting(
        1,
        "A node whose Falco dropped more than this percentage of kernel events since its "
        "previous snapshot gets an event-drops finding.",
        "an integer from 0 to 100",
        _between(0, 100),
    )
    # -- alert storms and suppressions (docs/storms.md) -------------------------------------
    occurrence_window_minutes: int = setting(
        60,
        "Repeats of one behaviour (rule, cluster, namespace, workload, image, command line) "
        "within a window of this many minutes are one finding with an exact count.",
        "an integer from 5 to 1440 (one day)",
        _between(5, 1440),
    )
    suppressions_file: str = setting(
        "",
        "Suppressions (YAML, relative to the project directory): each entry becomes a Security "
        "Hub automation rule that sets matching Falco findings to SUPPRESSED with its reason; an "
        "expired entry stops the program. Empty means none.",
        "empty, or the path of a `.yaml`/`.yml` file holding a list of entries with `name`, "
        "`rule`, `reason`, `expires` (YYYY-MM-DD) and optional `namespace`, `image`, `process`",
        _rules_file,
    )
    # -- Security Hub ----------------------------------------------------------------------
    enable_default_standards: bool = setting(
        False,
        "Enable Security Hub's default standards (AWS FSBP, CIS) in each region; off because "
        "they bill per check and are often managed organization-wide.",
        "`true` or `false`",
    )
    triage_principal_arns: tuple[str, ...] = setting(
        (),
        "Principals allowed to assume the home region's findings-triage role.",
        "IAM role, user or account-root ARNs, no duplicates",
        _each(_principal(allow_root=True)),
    )
    triage_permission_sets: tuple[str, ...] = setting(
        (),
        "IAM Identity Center permission sets whose users may assume the home region's "
        "findings-triage role (MFA is enforced at sign-in); or attach the "
        "`falco-findings-triage` policy to a permission set directly.",
        "permission set names (letters, digits and `+=,.@-_`, at most 32), no duplicates",
        _each(_matches(_PERMISSION_SET_NAME, "not a permission set name")),
    )
    member_accounts: tuple[MemberAccount, ...] = setting(
        (),
        "Security Hub member accounts the home region invites, each as `<account-id>:<e-mail>`.",
        "entries `<12-digit account id>:<e-mail>`, no duplicate account ids",
        _member_accounts,
        convert=_to_member_accounts,
    )
    delegated_admin_account_id: str | None = setting(
        "",
        "Account made Security Hub delegated administrator (AWS Organizations); empty means none.",
        "empty, or a 12-digit account id",
        _empty_or(_matches(_ACCOUNT_ID, "not a 12-digit account id")),
        convert=_optional,
    )

    # The rules file's text (read at load time), or None.
    falco_custom_rules: str | None = None
    # The suppressions file's entries (read and checked at load time).
    suppressions: tuple[Suppression, ...] = ()

    @property
    def is_home_region(self) -> bool:
        return self.region == self.home_region

    @property
    def tags(self) -> dict[str, str]:
        # Ownership/cost tags (Owner, CostCenter) come from aws:defaultTags in the stack file.
        return {"Project": PROJECT, "Stack": self.stack_name}


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(word.capitalize() for word in rest)


SETTINGS: tuple[Setting, ...] = tuple(
    replace(f.metadata["setting"], key=_camel(f.name), attr=f.name)
    for f in fields(Settings)
    if "setting" in f.metadata
)
_BY_KEY = {spec.key: spec for spec in SETTINGS}


# -- loading -------------------------------------------------------------------------------------
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


def engine_config() -> dict[str, str]:
    """The stack's whole config as the engine hands it to the program (full keys, text values).

    Under the CLI it arrives in the PULUMI_CONFIG environment variable; under mocks (and from
    the language host) through ``set_all_config``. ``pulumi.Config`` reads the same two places.
    """
    from pulumi.runtime import config as runtime_config

    return {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}


def _decode(spec: Setting, raw: str) -> SettingValue | str:
    """The value of ``raw`` as the setting's type, or the reason it is not one (see module doc)."""
    if spec.type == "string":
        return raw
    if spec.type == "integer":
        return int(raw) if _INTEGER.fullmatch(raw) else "not an integer"
    if spec.type == "boolean":
        return raw == "true" if raw in ("true", "false") else "not a boolean"
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = None
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    return f"not a list of strings; set items with `pulumi config set --path '{spec.key}[0]' ...`"


def _cross_checks(v: Mapping[str, Any], region: str) -> Iterator[tuple[str, str]]:
    """Rules between settings, over the values that passed their own checks."""
    if {"home_region", "linked_regions"} <= v.keys():
        home, linked = v["home_region"], v["linked_regions"]
        if home in linked:
            yield "linked_regions", f"contains the home region {home}"
        # The finding aggregator cannot link regions across partitions.
        foreign = [r for r in linked if _partition(r) != _partition(home)]
        if foreign:
            yield "linked_regions", f"not in {home}'s partition: {', '.join(foreign)}"
    if {"node_instance_types", "node_ami_type"} <= v.keys():
        wanted = "arm64" if "ARM_64" in v["node_ami_type"] else "x86_64"
        wrong = [t for t in v["node_instance_types"] if _instance_arch(t) != wanted]
        if wrong:
            yield "node_instance_types", f"{', '.join(wrong)} cannot boot {v['node_ami_type']}"
    sizes = {"node_min_size", "node_desired_size"} <= v.keys()
    if sizes and v["node_desired_size"] < v["node_min_size"]:
        yield "node_desired_size", f"below nodeMinSize ({v['node_min_size']})"
    sizes = {"node_desired_size", "node_max_size"} <= v.keys()
    if sizes and v["node_max_size"] < v["node_desired_size"]:
        yield "node_max_size", f"below nodeDesiredSize ({v['node_desired_size']})"
    if {"heartbeat_interval_minutes", "coverage_grace_minutes"} <= v.keys():
        # Falco's first snapshot comes one interval after it starts: a shorter grace would
        # report every new node as silent.
        least = v["heartbeat_interval_minutes"] + 5
        if v["coverage_grace_minutes"] < least:
            yield "coverage_grace_minutes", f"shorter than heartbeatIntervalMinutes + 5 ({least})"
    existing = v.get("existing_cluster_name")
    if existing and v.get("cluster_name"):
        yield "cluster_name", "set with existingClusterName; drop it (the cluster keeps its name)"
    if v.get("install_pod_identity_agent") and not existing:
        yield "install_pod_identity_agent", "the cluster the stack creates has the agent already"
    keys = {"endpoint_public_access", "public_access_cidrs", "allow_public_endpoint_from_anywhere"}
    # The endpoint settings shape the cluster the stack creates; an existing one keeps its own
    # (and with an unusable existingClusterName, which mode is meant is unknown: no guess).
    if keys <= v.keys() and "existing_cluster_name" in v and not existing:
        cidrs = v["public_access_cidrs"]
        if not v["endpoint_public_access"] and cidrs:
            yield "public_access_cidrs", "set while endpointPublicAccess is false (ignored)"
        elif v["endpoint_public_access"] and not cidrs:
            yield "public_access_cidrs", "empty while endpointPublicAccess is true"
        elif "0.0.0.0/0" in cidrs and not v["allow_public_endpoint_from_anywhere"]:
            yield (
                "public_access_cidrs",
                "0.0.0.0/0 opens the Kubernetes API to the whole internet; set "
                "allowPublicEndpointFromAnywhere to true to mean it",
            )
    if "cluster_name" in v:
        key = "existing_cluster_name" if existing else "cluster_name"
        function_name = function_name_for(existing or v["cluster_name"] or f"falco-{region}")
        if len(function_name) > MAX_FUNCTION_NAME_LENGTH:
            yield (
                key,
                f"too long for the findings function name {function_name!r} (Lambda allows "
                f"{MAX_FUNCTION_NAME_LENGTH} characters)",
            )


def _partition(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    return "aws-us-gov" if region.startswith("us-gov-") else "aws"


def _read_rules(path_text: str, base_dir: Path) -> str | None:
    """The rules file's text; the reason it is unusable is raised as ValueError."""
    try:
        text = (base_dir / path_text).read_text(encoding="utf-8")
    except OSError as error:
        raise ValueError(f"cannot be read ({error.strerror})") from error
    try:
        rules = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"not valid YAML ({error})") from error
    if not isinstance(rules, list):
        raise ValueError("a Falco rules file is a YAML list of rule/macro/list items")
    for index, item in enumerate(rules, start=1):
        if not isinstance(item, dict):
            raise ValueError(f"item {index} is not a rule, macro or list (a YAML mapping)")
    return text


def load_settings(
    config: Mapping[str, str],
    stack_name: str,
    *,
    project_dir: Path | None = None,
    today: datetime.date | None = None,
) -> Settings:
    """Validate the stack's config (full keys -> text); raise one SettingsError for all problems.

    The engine merges Pulumi.yaml's defaults into the config it hands over, so a value is
    attributed to the stack file when it differs from the default, else to "default in Pulumi.yaml".

    ``project_dir`` resolves ``falcoCustomRulesFile`` (default: the working directory, which is
    the project directory when the Pulumi CLI runs the program).
    """
    here = stack_file(stack_name)
    problems: list[str] = []
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}

    def problem(spec: Setting, shown: object, reason: str) -> None:
        problems.append(
            f"{spec.full_key} ({origin[spec.attr]}): got {json.dumps(shown)}: {reason} "
            f"(allowed: {spec.allowed})"
        )

    region = config.get("aws:region", "")
    if not _REGION.fullmatch(region):
        problems.append(
            f"aws:region ({here}): got {json.dumps(region)}: the stack's AWS region is missing or "
            f"malformed (allowed: {_REGION_TEXT})"
        )
    for full_key in sorted(config):
        namespace, _, key = full_key.partition(":")
        if namespace == PROJECT and key not in _BY_KEY:
            close = difflib.get_close_matches(key, _BY_KEY, n=1)
            hint = f"did you mean {close[0]}?" if close else "see the README's Settings section"
            problems.append(f"{full_key} ({here}): not a setting of this project; {hint}")

    for spec in SETTINGS:
        raw = config.get(spec.full_key)
        decoded = spec.default if raw is None else _decode(spec, raw)
        is_default = raw is None or decoded == spec.default
        origin[spec.attr] = "default in Pulumi.yaml" if is_default else here
        if isinstance(decoded, str) and spec.type != "string":
            problem(spec, raw, decoded)
            continue
        reasons = [reason for check in spec.checks if (reason := check(decoded))]
        for reason in reasons:
            problem(spec, decoded, reason)
        if not reasons:
            values[spec.attr] = decoded
    for attr, reason in list(_cross_checks(values, region)):
        problem(_BY_KEY[_camel(attr)], values[attr], reason)

    custom_rules = None
    if values.get("falco_custom_rules_file"):
        try:
            custom_rules = _read_rules(values["falco_custom_rules_file"], project_dir or Path.cwd())
        except ValueError as error:
            problem(_BY_KEY["falcoCustomRulesFile"], values["falco_custom_rules_file"], str(error))
    suppressions: tuple[Suppression, ...] = ()
    if values.get("suppressions_file"):
        spec, path = _BY_KEY["suppressionsFile"], values["suppressions_file"]
        try:
            text = (project_dir or Path.cwd()).joinpath(path).read_text(encoding="utf-8")
        except OSError as error:
            problem(spec, path, f"cannot be read ({error.strerror})")
        else:
            # Suppressions expire at the end of their day, UTC: the same answer on every machine.
            found, reasons = parse_suppressions(
                text, today or datetime.datetime.now(datetime.UTC).date()
            )
            suppressions = found
            for reason in reasons:
                problem(spec, path, reason)
    if problems:
        raise SettingsError(stack_name, problems)

    typed = {
        spec.attr: spec.convert(values[spec.attr]) if spec.convert else values[spec.attr]
        for spec in SETTINGS
    }
    # An existing cluster is named what it is named: the log group and function follow it.
    typed["cluster_name"] = (
        typed["existing_cluster_name"] or typed["cluster_name"] or f"falco-{region}"
    )
    if typed["existing_cluster_name"]:
        typed["public_access_cidrs"] = ()
    return Settings(
        stack_name=stack_name,
        region=region,
        falco_custom_rules=custom_rules,
        suppressions=suppressions,
        **typed,
    )


# -- what follows from the model: Pulumi.yaml's config block and the README table ---------------
PULUMI_YAML_MARKER = "# Generated from components/settings.py by `python -m components.settings`."
README_BEGIN = "<!-- settings table: generated by `python -m components.settings` -->"
README_END = "<!-- end of settings table -->"


def pulumi_yaml_config() -> str:
    """The ``config:`` block of Pulumi.yaml: every setting's type, default and description."""
    declared: dict[str, Any] = {}
    for spec in SETTINGS:
        entry: dict[str, Any] = {"type": spec.type}
        if spec.type == "array":
            entry["items"] = {"type": "string"}
        entry["default"] = list(spec.default) if isinstance(spec.default, tuple) else spec.default
        entry["description"] = spec.description
        declared[spec.key] = entry
    return yaml.safe_dump({"config": declared}, sort_keys=False, width=1000, allow_unicode=True)


def readme_table() -> str:
    rows = [
        "| Setting | Type | Default | Description | Allowed |",
        "|---|---|---|---|---|",
    ]
    for spec in SETTINGS:
        default = list(spec.default) if isinstance(spec.default, tuple) else spec.default
        rows.append(
            f"| `{spec.key}` | {spec.type} | `{json.dumps(default)}` | {spec.description} | "
            f"{spec.allowed} |"
        )
    return "\n".join(rows) + "\n"


def render_pulumi_yaml(current: str) -> str:
    head = current.split(PULUMI_YAML_MARKER, 1)[0]
    return f"{head}{PULUMI_YAML_MARKER}\n{pulumi_yaml_config()}"


def render_readme(current: str) -> str:
    head, rest = current.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    return f"{head}{README_BEGIN}\n{readme_table()}{README_END}{tail}"


def main(project_dir: Path) -> None:
    """Rewrite Pulumi.yaml's config block and the README's settings table from the model."""
    for name, render in (("Pulumi.yaml", render_pulumi_yaml), ("README.md", render_readme)):
        path = project_dir / name
        path.write_text(render(path.read_text(encoding="utf-8")), encoding="utf-8")
        print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main(Path(__file__).resolve().parent.parent)
