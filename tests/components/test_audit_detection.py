"""AuditDetection under Pulumi mocks: the audit Falco, its role and its Pod Identity association.

Each test states what a reviewer of `pulumi preview --diff` would check: one replica without a
kernel driver, plugins and rules pinned and never auto-updated, alerts written exactly like the
syscall Falco's and in a file Fluent Bit tails, a role that can only read the cluster's audit log,
and the refusal to deploy on a cluster whose audit log is off.
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pytest
import yaml
from conftest import ACCOUNT_ID, DEFAULT_REGION, RecordedResource, RecordingMocks

from components import audit_detection as ad
from components import runtime_security as rs
from components.audit_detection import AuditDetection, AuditDetectionArgs
from components.cluster import CONTROL_PLANE_LOG_TYPES

CLUSTER = "falco-us-east-1"
CLUSTER_ARN = f"arn:aws:eks:{DEFAULT_REGION}:{ACCOUNT_ID}:cluster/{CLUSTER}"
AUDIT_GROUP_ARN = f"arn:aws:logs:{DEFAULT_REGION}:{ACCOUNT_ID}:log-group:/aws/eks/{CLUSTER}/cluster"
KUBECONFIG = json.dumps({"apiVersion": "v1", "kind": "Config", "clusters": [], "users": []})
CUSTOM_RULES = """\
- rule: Shell in payments namespace
  desc: Any shell in a payments pod
  condition: spawned_process and container and k8s.ns.name = payments and proc.name in (sh, bash)
  output: Shell in payments (pod=%k8s.pod.name cmd=%proc.cmdline)
  priority: CRITICAL
  tags: [mitre_execution, T1059]
- rule: Secret read in payments
  desc: Any read of a secret in the payments namespace
  condition: kevt and secret and kget and ka.target.namespace = payments
  output: Secret read in payments (user=%ka.user.name secret=%ka.target.name)
  priority: WARNING
  source: k8s_audit
  tags: [k8s]
"""

RELEASE = "kubernetes:helm.sh/v3:Release"
ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
ASSOCIATION = "aws:eks/podIdentityAssociation:PodIdentityAssociation"
SEMVER_REF = re.compile(r"^[a-z0-9-]+:\d+\.\d+\.\d+$")


@dataclass
class Deployment:
    mocks: RecordingMocks
    dependencies: dict[str, set[str]]

    @property
    def audit_release(self) -> RecordedResource:
        return self.mocks.one(RELEASE, "audit-falco")

    @property
    def syscall_release(self) -> RecordedResource:
        return self.mocks.one(RELEASE, "runtime-falco")

    @property
    def values(self) -> dict[str, Any]:
        return self.audit_release.inputs["values"]


@pytest.fixture
def dependencies(monkeypatch: pytest.MonkeyPatch) -> dict[str, set[str]]:
    from conftest import ResourceReferenceFreeMonitor

    seen: dict[str, set[str]] = {}
    register = ResourceReferenceFreeMonitor.RegisterResource

    def recording_register(self: ResourceReferenceFreeMonitor, request: Any) -> Any:
        seen[request.name] = set(request.dependencies)
        return register(self, request)

    monkeypatch.setattr(ResourceReferenceFreeMonitor, "RegisterResource", recording_register)
    return seen


def deploy(
    mocks: RecordingMocks,
    dependencies: dict[str, set[str]],
    *,
    custom_rules: str | None = CUSTOM_RULES,
) -> Deployment:
    @pulumi.runtime.test
    def declare() -> pulumi.Output[Any]:
        # A created cluster: what the Cluster component hands over in depends_on.
        agent = aws.eks.Addon("pod-identity-agent", cluster_name=CLUSTER, addon_name="x")
        group = aws.cloudwatch.LogGroup("alerts", name="/falco/alerts")
        runtime = rs.RuntimeSecurity(
            "runtime",
            rs.RuntimeSecurityArgs(
                cluster_name=CLUSTER,
                kubeconfig_json=pulumi.Output.secret(KUBECONFIG),
                region=DEFAULT_REGION,
                account_id=ACCOUNT_ID,
                partition="aws",
                log_group_name=group.name,
                log_group_arn=group.arn,
                falco_chart_version=rs.FALCO_CHART_VERSION,
                fluent_bit_chart_version=rs.FLUENT_BIT_CHART_VERSION,
                falco_minimum_priority="Notice",
                falco_custom_rules=None,
                falco_rules_version=rs.FALCO_RULES_VERSION,
                depends_on=[agent],
                tags={"project": "falco-securityhub"},
            ),
        )
        audit = AuditDetection(
            "audit",
            AuditDetectionArgs(
                cluster_name=CLUSTER,
                kubeconfig_json=pulumi.Output.secret(KUBECONFIG),
                namespace=runtime.namespace,
                region=DEFAULT_REGION,
                account_id=ACCOUNT_ID,
                partition="aws",
                falco_chart_version=rs.FALCO_CHART_VERSION,
                falco_minimum_priority="Notice",
                falco_custom_rules=custom_rules,
                depends_on=[agent],
                tags={"project": "falco-securityhub"},
            ),
        )

        return pulumi.Output.all(audit.release_name, audit.role_arn)

    declare()
    return Deployment(mocks, dependencies)


@pytest.fixture
def deployment(pulumi_mocks: RecordingMocks, dependencies: dict[str, set[str]]) -> Deployment:
    return deploy(pulumi_mocks, dependencies)


def test_the_audit_falco_is_one_replica_without_a_kernel_driver(deployment: Deployment) -> None:
    release = deployment.audit_release
    assert release.inputs["chart"] == "falco"
    assert release.inputs["version"] == rs.FALCO_CHART_VERSION
    assert release.inputs["repositoryOpts"]["repo"] == rs.FALCO_REPOSITORY
    assert release.inputs["namespace"] == rs.NAMESPACE
    values = deployment.values
    assert values["controller"] == {"kind": "deployment", "deployment": {"replicas": 1}}
    assert values["driver"] == {"enabled": False}
    assert values["collectors"] == {"enabled": False}
    assert values["falco"]["plugins_hostinfo"] is False  # no host /proc mount


def test_it_reads_this_clusters_audit_log_through_the_pinned_plugins(
    deployment: Deployment,
) -> None:
    falco = deployment.values["falco"]
    plugins = {plugin["name"]: plugin for plugin in falco["plugins"]}
    assert falco["load_plugins"] == ["k8saudit-eks", "json"]
    eks = plugins["k8saudit-eks"]
    assert eks["library_path"] == "libk8saudit-eks.so"
    assert eks["open_params"] == CLUSTER
    assert eks["init_config"]["region"] == DEFAULT_REGION
    # shift is nanoseconds for the pinned plugin: two minutes, not two minutes of nanoseconds.
    assert eks["init_config"]["shift"] == 120_000_000_000
    assert plugins["json"]["library_path"] == "libjson.so"
    assert falco["rules_files"][0] == "/etc/falco/k8s_audit_rules.yaml"


def test_plugins_and_rules_are_pinned_and_never_followed(deployment: Deployment) -> None:
    falcoctl = deployment.values["falcoctl"]
    assert falcoctl["artifact"]["follow"] == {"enabled": False}
    install = falcoctl["config"]["artifact"]["install"]
    assert install["resolveDeps"] is False
    assert install["refs"] == [
        f"k8saudit-rules:{ad.K8SAUDIT_RULES_VERSION}",
        f"k8saudit-eks:{ad.K8SAUDIT_EKS_VERSION}",
        f"json:{ad.JSON_PLUGIN_VERSION}",
    ]
    assert all(SEMVER_REF.fullmatch(ref) for ref in install["refs"])
    assert falcoctl["config"]["artifact"]["follow"]["refs"] == []


@pytest.mark.parametrize("version", ["0", "0.18", "latest", ""])
def test_a_floating_artifact_version_is_refused(version: str) -> None:
    with pytest.raises(ValueError, match="not an exact version"):
        ad.artifact_refs(ad.K8SAUDIT_EKS_VERSION, ad.JSON_PLUGIN_VERSION, version)


def test_alerts_are_written_like_the_syscall_falcos(deployment: Deployment) -> None:
    audit = deployment.values["falco"]
    syscall = deployment.syscall_release.inputs["values"]["falco"]
    for key in (*ad.SHARED_OUTPUT_SETTINGS, "priority"):
        assert audit[key] == syscall[key], key
    assert audit["json_output"] is True
    assert deployment.values["falcoHostnameEnv"] is True


def test_every_audit_alert_carries_the_object_actor_and_source_fields(
    deployment: Deployment,
) -> None:
    appended = [
        entry
        for entry in deployment.values["falco"]["append_output"]
        if entry.get("match") == {"source": "k8s_audit"}
    ]
    assert len(appended) == 1
    fields = appended[0]["extra_fields"]
    for name in ("ka.target.name", "ka.resp.name", "ka.user.name", "ka.sourceips", "ka.verb"):
        assert name in fields
    assert {"eks.user.canonical_arn": "%jevt.value[/user/extra/canonicalArn/0]"} in fields


def test_fluent_bit_tails_the_audit_falcos_main_container_only(deployment: Deployment) -> None:
    pattern = rs.falco_log_path(deployment.audit_release.inputs["namespace"])
    release = deployment.audit_release.inputs["name"]
    # A Deployment's pods are <deployment>-<replicaset hash>-<5 chars>; the chart names the
    # Deployment after a release whose name contains "falco", and the main container "falco".
    pod = f"{release}-5d8f7b9c4-x2k4q"
    container_id = "0" * 64
    main = f"/var/log/containers/{pod}_{rs.NAMESPACE}_falco-{container_id}.log"
    init = f"/var/log/containers/{pod}_{rs.NAMESPACE}_falcoctl-artifact-install-{container_id}.log"
    assert "falco" in release
    assert fnmatch.fnmatch(main, pattern)
    assert not fnmatch.fnmatch(init, pattern)


def test_the_role_can_only_read_the_clusters_audit_log_group(deployment: Deployment) -> None:
    policy = deployment.mocks.one(ROLE_POLICY, "audit-read-audit-log").policy()
    statements = policy["Statement"]
    assert len(statements) == 1
    (statement,) = statements
    assert statement["Effect"] == "Allow"
    assert statement["Action"] == ["logs:FilterLogEvents"]
    assert statement["Resource"] == [AUDIT_GROUP_ARN, f"{AUDIT_GROUP_ARN}:*"]


def test_only_the_audit_falcos_service_account_can_assume_the_role(
    deployment: Deployment,
) -> None:
    role = deployment.mocks.one(ROLE, "audit-role")
    (statement,) = role.policy("assumeRolePolicy")["Statement"]
    assert statement["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert sorted(statement["Action"]) == ["sts:AssumeRole", "sts:TagSession"]
    assert statement["Condition"]["StringEquals"] == {
        "aws:RequestTag/eks-cluster-arn": CLUSTER_ARN,
        "aws:RequestTag/kubernetes-namespace": rs.NAMESPACE,
        "aws:RequestTag/kubernetes-service-account": ad.AUDIT_SERVICE_ACCOUNT,
    }


def test_the_association_binds_the_role_to_the_charts_service_account(
    deployment: Deployment,
) -> None:
    association = deployment.mocks.one(ASSOCIATION, "audit-identity")
    role = deployment.mocks.one(ROLE, "audit-role")
    assert association.inputs["clusterName"] == CLUSTER
    assert association.inputs["namespace"] == rs.NAMESPACE
    assert association.inputs["serviceAccount"] == ad.AUDIT_SERVICE_ACCOUNT
    assert association.inputs["roleArn"] == role.outputs["arn"]
    assert deployment.values["serviceAccount"] == {
        "create": True,
        "name": association.inputs["serviceAccount"],
    }


def test_the_release_waits_for_its_credentials_and_the_cluster(deployment: Deployment) -> None:
    needs = deployment.dependencies["audit-falco"]
    names = {urn.rsplit("::", 1)[-1] for urn in needs}
    assert {"audit-identity", "audit-read-audit-log", "pod-identity-agent"} <= names


def test_only_the_audit_part_of_the_custom_rules_reaches_the_audit_falco(
    deployment: Deployment,
) -> None:
    loaded = yaml.safe_load(deployment.values["customRules"]["custom-rules.yaml"])
    assert [item["rule"] for item in loaded] == ["Secret read in payments"]


def test_without_audit_rules_the_audit_falco_gets_no_custom_rules_file(
    pulumi_mocks: RecordingMocks, dependencies: dict[str, set[str]]
) -> None:
    syscall_only = CUSTOM_RULES.split("- rule: Secret read")[0]
    deployment = deploy(pulumi_mocks, dependencies, custom_rules=syscall_only)
    assert "customRules" not in deployment.values


# -- which instance loads what ---------------------------------------------------------------
def rules_of(text: str | None) -> list[Any]:
    return yaml.safe_load(text) if text else []


def test_appends_go_where_the_changed_item_lives() -> None:
    split = ad.split_custom_rules(
        """\
- required_engine_version: 15
- required_plugin_versions:
    - name: k8saudit-eks
      version: 0.12.0
    - name: container
      version: 0.7.1
- list: allowed_k8s_users
  items: [ci-bot]
  override:
    items: append
  source: k8s_audit
- list: shell_binaries
  items: [fish]
  override:
    items: append
- rule: Terminal shell in container
  exceptions:
    - name: debug_pods
      fields: [k8s.ns.name]
      values: [[debug]]
  override:
    exceptions: append
- rule: Attach/Exec Pod
  enabled: false
  source: k8s_audit
- macro: payments_ns
  condition: ka.target.namespace = payments
"""
    )
    syscall, audit = rules_of(split.syscall), rules_of(split.audit)

    assert {"required_engine_version": 15} in syscall
    assert {"required_engine_version": 15} in audit
    assert {"required_plugin_versions": [{"name": "k8saudit-eks", "version": "0.12.0"}]} in audit
    assert {"required_plugin_versions": [{"name": "container", "version": "0.7.1"}]} in syscall
    # The k8saudit list is changed in the audit Falco only, without the routing key Falco
    # would warn about on a list.
    assert {"list": "allowed_k8s_users", "items": ["ci-bot"], "override": {"items": "append"}} in (
        audit
    )
    assert not any(item.get("list") == "allowed_k8s_users" for item in syscall)
    assert any(item.get("list") == "shell_binaries" for item in syscall)
    assert not any(item.get("list") == "shell_binaries" for item in audit)
    assert any(item.get("rule") == "Terminal shell in container" for item in syscall)
    assert not any(item.get("rule") == "Terminal shell in container" for item in audit)
    assert any(item.get("rule") == "Attach/Exec Pod" for item in audit)
    assert not any(item.get("rule") == "Attach/Exec Pod" for item in syscall)
    # A new macro is harmless where unused (a warning), and needed where a rule uses it.
    assert any(item.get("macro") == "payments_ns" for item in syscall)
    assert any(item.get("macro") == "payments_ns" for item in audit)


def test_an_append_to_a_rule_defined_in_the_file_follows_that_rule() -> None:
    split = ad.split_custom_rules(
        CUSTOM_RULES
        + """\
- rule: Secret read in payments
  condition: and not ka.user.name = auditor
  override:
    condition: append
"""
    )
    audit = rules_of(split.audit)
    assert [item["rule"] for item in audit] == ["Secret read in payments"] * 2
    assert [item["rule"] for item in rules_of(split.syscall)] == ["Shell in payments namespace"]


def test_no_custom_rules_means_nothing_to_load() -> None:
    assert ad.split_custom_rules(None) == ad.CustomRulesSplit(None, None)
    assert ad.split_custom_rules("  \n") == ad.CustomRulesSplit(None, None)


# -- on, off, auto -----------------------------------------------------------------------------
def test_a_created_cluster_gets_audit_detections_by_default() -> None:
    assert ad.audit_detections_enabled("auto", CLUSTER, CONTROL_PLANE_LOG_TYPES) is True
    assert ad.audit_detections_enabled("on", CLUSTER, CONTROL_PLANE_LOG_TYPES) is True
    assert ad.audit_detections_enabled("off", CLUSTER, CONTROL_PLANE_LOG_TYPES) is False


def test_auto_skips_an_existing_cluster_whose_audit_log_is_off() -> None:
    assert ad.audit_detections_enabled("auto", "legacy", ["api", "authenticator"]) is False
    assert ad.audit_detections_enabled("auto", "legacy", []) is False


def test_on_is_refused_for_an_existing_cluster_whose_audit_log_is_off() -> None:
    with pytest.raises(ad.AuditLogDisabled) as refused:
        ad.audit_detections_enabled("on", "legacy", ["api"])
    message = str(refused.value)
    assert "falco-securityhub:auditDetections" in message
    assert "'legacy'" in message
    assert "enabled log types: api" in message
    assert "update-cluster-config --name legacy" in message


def test_an_unknown_log_configuration_does_not_block_on() -> None:
    assert ad.audit_detections_enabled("on", "legacy", None) is True
