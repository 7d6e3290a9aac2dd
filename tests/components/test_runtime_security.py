"""RuntimeSecurity under Pulumi mocks: what Helm, IAM and EKS would receive.

Each test states one property a reviewer of `pulumi preview --diff` would check: the charts are
pinned, Falco's alerts leave as JSON on stdout, Fluent Bit tails only Falco's container and writes
only to the pipeline's log group, its role can do nothing else, and the ordering holds.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pytest
from conftest import ACCOUNT_ID, DEFAULT_REGION, RecordedResource, ResourceReferenceFreeMonitor

from components import runtime_security as rs
from components.runtime_security import FALCO_RULES_VERSION, RuntimeSecurity, RuntimeSecurityArgs

CLUSTER = "falco-us-east-1"
CLUSTER_ARN = f"arn:aws:eks:{DEFAULT_REGION}:{ACCOUNT_ID}:cluster/{CLUSTER}"
LOG_GROUP = "/falco-securityhub/falco-alerts"
LOG_GROUP_ARN = f"arn:aws:logs:{DEFAULT_REGION}:{ACCOUNT_ID}:log-group:{LOG_GROUP}"
KUBECONFIG = json.dumps({"apiVersion": "v1", "kind": "Config", "clusters": [], "users": []})
CUSTOM_RULES = """\
- rule: Shell in payments namespace
  desc: Any shell in a payments pod
  condition: spawned_process and container and k8s.ns.name = payments and proc.name in (sh, bash)
  output: Shell in payments (pod=%k8s.pod.name cmd=%proc.cmdline)
  priority: CRITICAL
  tags: [mitre_execution, T1059]
"""

# How the engine marks a secret value in recorded inputs (pulumi.runtime.rpc).
SIGNATURE_KEY = "4dabf18193072939515e22adb298388d"
SECRET_SIGNATURE = "1b47061264138c4ac30d75fd1eb44270"

RELEASE = "kubernetes:helm.sh/v3:Release"
NAMESPACE = "kubernetes:core/v1:Namespace"
K8S_PROVIDER = "pulumi:providers:kubernetes"
ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
ASSOCIATION = "aws:eks/podIdentityAssociation:PodIdentityAssociation"


@dataclass
class Deployment:
    mocks: Any
    outputs: dict[str, Any]
    dependencies: dict[str, set[str]]
    upstream_urns: list[str]

    def resource(self, typ: str, name: str | None = None) -> RecordedResource:
        return self.mocks.one(typ, name)

    @property
    def falco(self) -> RecordedResource:
        return self.resource(RELEASE, "runtime-falco")

    @property
    def fluent_bit(self) -> RecordedResource:
        return self.resource(RELEASE, "runtime-fluent-bit")


@pytest.fixture
def dependencies(monkeypatch: pytest.MonkeyPatch) -> dict[str, set[str]]:
    """Every resource's dependencies (explicit depends_on and implicit) as the engine sees them."""
    seen: dict[str, set[str]] = {}
    register = ResourceReferenceFreeMonitor.RegisterResource

    def recording_register(self: ResourceReferenceFreeMonitor, request: Any) -> Any:
        seen[request.name] = set(request.dependencies)
        return register(self, request)

    monkeypatch.setattr(ResourceReferenceFreeMonitor, "RegisterResource", recording_register)
    return seen


def deploy(
    mocks: Any,
    dependencies: dict[str, set[str]],
    *,
    custom_rules: str | None = CUSTOM_RULES,
    priority: str = "Warning",
) -> Deployment:
    outputs: dict[str, Any] = {}
    upstream: list[str] = []

    @pulumi.runtime.test
    def declare() -> pulumi.Output[Any]:
        # Stand-ins for what the cluster component hands over in depends_on.
        cluster = aws.eks.Cluster(
            "cluster",
            name=CLUSTER,
            role_arn=f"arn:aws:iam::{ACCOUNT_ID}:role/cluster",
            vpc_config={"subnet_ids": ["subnet-a", "subnet-b"]},
        )
        nodes = aws.eks.NodeGroup(
            "nodes",
            cluster_name=CLUSTER,
            node_role_arn=f"arn:aws:iam::{ACCOUNT_ID}:role/nodes",
            subnet_ids=["subnet-a", "subnet-b"],
            scaling_config={"desired_size": 2, "min_size": 2, "max_size": 3},
        )
        agent = aws.eks.Addon("pod-identity-agent", cluster_name=CLUSTER, addon_name="x")
        group = aws.cloudwatch.LogGroup("alerts", name=LOG_GROUP)
        component = RuntimeSecurity(
            "runtime",
            RuntimeSecurityArgs(
                cluster_name=CLUSTER,
                kubeconfig_json=pulumi.Output.secret(KUBECONFIG),
                region=DEFAULT_REGION,
                account_id=ACCOUNT_ID,
                partition="aws",
                log_group_name=group.name,
                log_group_arn=group.arn,
                falco_chart_version=rs.FALCO_CHART_VERSION,
                fluent_bit_chart_version=rs.FLUENT_BIT_CHART_VERSION,
                falco_minimum_priority=priority,
                falco_custom_rules=custom_rules,
                falco_rules_version=FALCO_RULES_VERSION,
                depends_on=[cluster, nodes, agent],
                tags={"project": "falco-securityhub"},
            ),
        )

        def keep(values: list[Any]) -> None:
            names = ("namespace", "falco", "fluent_bit", "role_arn")
            outputs.update(zip(names, values[:4], strict=True))
            upstream.extend(values[4:])

        return pulumi.Output.all(
            component.namespace,
            component.falco_release_name,
            component.fluent_bit_release_name,
            component.fluent_bit_role_arn,
            cluster.urn,
            nodes.urn,
            agent.urn,
        ).apply(keep)

    declare()
    return Deployment(mocks, outputs, dependencies, upstream)


@pytest.fixture
def deployed(pulumi_mocks: Any, dependencies: dict[str, set[str]]) -> Deployment:
    return deploy(pulumi_mocks, dependencies)


# -- Fluent Bit's classic configuration, read back -------------------------------------------------


def sections(text: str) -> list[tuple[str, list[tuple[str, str]]]]:
    parsed: list[tuple[str, list[tuple[str, str]]]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            parsed.append((line.strip("[]").upper(), []))
            continue
        key, _, value = line.partition(" ")
        parsed[-1][1].append((key.lower(), value.strip()))
    return parsed


def entries(section: list[tuple[str, str]], key: str) -> list[str]:
    return [value for k, value in section if k == key.lower()]


def one(section: list[tuple[str, str]], key: str) -> str:
    values = entries(section, key)
    assert len(values) == 1, f"expected one {key}, found {values}"
    return values[0]


def pipeline(deployment: Deployment) -> list[tuple[str, list[tuple[str, str]]]]:
    config = deployment.fluent_bit.inputs["values"]["config"]
    return sections("\n".join(config[part] for part in ("service", "inputs", "filters", "outputs")))


def named(
    parsed: list[tuple[str, list[tuple[str, str]]]], kind: str, plugin: str
) -> list[list[tuple[str, str]]]:
    return [body for k, body in parsed if k == kind and one(body, "name") == plugin]


# -- the releases ----------------------------------------------------------------------------------


def test_falco_release_is_the_pinned_chart_from_falcosecurity(deployed: Deployment):
    falco = deployed.falco.inputs
    assert falco["chart"] == "falco"
    assert falco["version"] == "9.1.0" == rs.FALCO_CHART_VERSION
    assert falco["repositoryOpts"] == {"repo": "https://falcosecurity.github.io/charts"}
    assert falco["name"] == "falco"
    assert deployed.outputs["falco"] == "falco"


def test_fluent_bit_release_is_the_pinned_upstream_chart(deployed: Deployment):
    fluent_bit = deployed.fluent_bit.inputs
    assert fluent_bit["chart"] == "fluent-bit"
    assert fluent_bit["version"] == "0.58.1" == rs.FLUENT_BIT_CHART_VERSION
    assert fluent_bit["repositoryOpts"] == {"repo": "https://fluent.github.io/helm-charts"}
    assert fluent_bit["name"] == "fluent-bit"
    assert deployed.outputs["fluent_bit"] == "fluent-bit"


def test_both_releases_install_into_the_declared_falco_namespace(deployed: Deployment):
    namespace = deployed.resource(NAMESPACE).inputs["metadata"]
    assert namespace["name"] == "falco"
    # Falco is privileged: the namespace says so rather than relying on the cluster default.
    assert namespace["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    for release in (deployed.falco, deployed.fluent_bit):
        assert release.inputs["namespace"] == "falco"
        assert not release.inputs.get("createNamespace")
    assert deployed.outputs["namespace"] == "falco"


@pytest.mark.parametrize("release", ["runtime-falco", "runtime-fluent-bit"])
def test_releases_wait_for_ready_pods_and_roll_back_on_failure(deployed: Deployment, release: str):
    inputs = deployed.resource(RELEASE, release).inputs
    assert inputs["atomic"] is True
    assert inputs["cleanupOnFail"] is True
    assert 300 <= inputs["timeout"] <= 900
    assert not inputs.get("skipAwait")


def test_releases_and_namespace_go_through_the_cluster_kubeconfig_provider(deployed: Deployment):
    kubeconfig = deployed.resource(K8S_PROVIDER).inputs["kubeconfig"]
    # The kubeconfig reaches the provider as given, and still a secret.
    assert kubeconfig == {SIGNATURE_KEY: SECRET_SIGNATURE, "value": KUBECONFIG}
    # A provider reference is "<provider URN>::<provider id>".
    expected = f"${K8S_PROVIDER}::runtime-k8s::runtime-k8s-id"
    for resource in (deployed.falco, deployed.fluent_bit, deployed.resource(NAMESPACE)):
        assert resource.provider.endswith(expected), resource.provider


def test_releases_wait_for_the_cluster_nodes_and_pod_identity_agent(deployed: Deployment):
    upstream = set(deployed.upstream_urns)
    assert len(upstream) == 3
    deps = deployed.dependencies
    namespace_urn = next(
        u for u in deps["runtime-falco"] if u.endswith(f"${NAMESPACE}::runtime-namespace")
    )
    assert upstream | {namespace_urn} <= deps["runtime-falco"]
    assert upstream | {namespace_urn} <= deps["runtime-fluent-bit"]
    assert upstream <= deps["runtime-namespace"]
    assert upstream <= deps["runtime-fluent-bit-identity"]


def test_fluent_bit_starts_only_after_its_identity_and_permissions_exist(deployed: Deployment):
    # Pod Identity injects credentials at pod creation: a pod created before the association
    # would run without credentials until restarted.
    deps = deployed.dependencies["runtime-fluent-bit"]
    assert any(urn.endswith(f"${ASSOCIATION}::runtime-fluent-bit-identity") for urn in deps)
    assert any(urn.endswith(f"${ROLE_POLICY}::runtime-fluent-bit-logs") for urn in deps)


# -- Falco values ----------------------------------------------------------------------------------


def test_falco_uses_the_modern_ebpf_driver(deployed: Deployment):
    driver = deployed.falco.inputs["values"]["driver"]
    assert driver == {"enabled": True, "kind": "modern_ebpf"}


def test_falco_writes_json_alerts_with_output_tags_and_fields_to_stdout(deployed: Deployment):
    values = deployed.falco.inputs["values"]
    falco = values["falco"]
    assert falco["json_output"] is True
    assert falco["json_include_output_property"] is True
    assert falco["json_include_tags_property"] is True
    assert falco["json_include_output_fields_property"] is True
    assert falco["stdout_output"] == {"enabled": True}
    assert falco["buffered_outputs"] is False
    # Nothing else carries alerts: no sidekick, no HTTP or program output.
    assert values["falcosidekick"] == {"enabled": False}
    for other in ("http_output", "program_output", "file_output", "grpc_output"):
        assert not falco.get(other, {}).get("enabled")


def test_falco_minimum_priority_comes_from_the_args(pulumi_mocks, dependencies):
    deployment = deploy(pulumi_mocks, dependencies, priority="Error")
    assert deployment.falco.inputs["values"]["falco"]["priority"] == "error"


def test_custom_rules_become_a_rules_file_when_given(deployed: Deployment):
    assert deployed.falco.inputs["values"]["customRules"] == {"custom-rules.yaml": CUSTOM_RULES}


@pytest.mark.parametrize("rules", [None, "", "  \n"])
def test_no_custom_rules_value_without_custom_rules(pulumi_mocks, dependencies, rules):
    deployment = deploy(pulumi_mocks, dependencies, custom_rules=rules)
    assert "customRules" not in deployment.falco.inputs["values"]


def test_falco_runs_on_every_node_with_bounded_resources(deployed: Deployment):
    values = deployed.falco.inputs["values"]
    assert values["tolerations"] == [{"operator": "Exists"}]
    assert values["podPriorityClassName"] == "system-node-critical"
    assert set(values["resources"]["requests"]) == {"cpu", "memory"}
    assert set(values["resources"]["limits"]) == {"cpu", "memory"}


@pytest.mark.parametrize("release", ["runtime-falco", "runtime-fluent-bit"])
def test_node_agents_skip_only_fargate_and_non_linux_nodes(deployed: Deployment, release: str):
    values = deployed.resource(RELEASE, release).inputs["values"]
    assert values["tolerations"] == [{"operator": "Exists"}]
    required = values["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    (term,) = required["nodeSelectorTerms"]
    assert sorted(term["matchExpressions"], key=lambda e: e["key"]) == [
        {"key": "eks.amazonaws.com/compute-type", "operator": "NotIn", "values": ["fargate"]},
        {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
    ]


def test_falco_alert_hostname_is_the_node_name(deployed: Deployment):
    assert deployed.falco.inputs["values"]["falcoHostnameEnv"] is True


def test_falco_alerts_carry_pod_namespace_and_image(deployed: Deployment):
    values = deployed.falco.inputs["values"]
    assert values["collectors"]["enabled"] is True
    assert values["collectors"]["containerEngine"]["enabled"] is True
    append = values["falco"]["append_output"]
    assert {"suggested_output": True} in append
    syscall = [entry for entry in append if entry.get("match") == {"source": "syscall"}]
    assert len(syscall) == 1
    for field in ("k8s.pod.name", "k8s.ns.name", "container.image.repository", "container.id"):
        assert field in syscall[0]["extra_fields"]


# -- Fluent Bit values -----------------------------------------------------------------------------


def test_fluent_bit_values_are_exactly_what_the_pure_function_builds(deployed: Deployment):
    expected = rs.fluent_bit_values(CLUSTER, DEFAULT_REGION, LOG_GROUP)
    assert deployed.fluent_bit.inputs["values"] == expected


def test_fluent_bit_tails_only_the_falco_container(deployed: Deployment):
    parsed = pipeline(deployed)
    inputs = [body for kind, body in parsed if kind == "INPUT"]
    assert len(inputs) == 1
    tail = inputs[0]
    assert one(tail, "name") == "tail"
    assert one(tail, "multiline.parser") == "cri"
    path = one(tail, "path")
    container_id = "0" * 64
    falco = f"/var/log/containers/falco-x7k2p_falco_falco-{container_id}.log"
    assert fnmatch.fnmatch(falco, path)
    for other in (
        f"/var/log/containers/falco-x7k2p_falco_falcoctl-artifact-follow-{container_id}.log",
        f"/var/log/containers/falco-x7k2p_falco_falcoctl-artifact-install-{container_id}.log",
        f"/var/log/containers/fluent-bit-9qz4d_falco_fluent-bit-{container_id}.log",
        f"/var/log/containers/falco-x7k2p_default_falco-{container_id}.log",
        f"/var/log/containers/api-6d9f_payments_falco-{container_id}.log",
    ):
        assert not fnmatch.fnmatch(other, path), other


def test_fluent_bit_drops_falco_stderr_before_anything_else(deployed: Deployment):
    parsed = pipeline(deployed)
    filters = [body for kind, body in parsed if kind == "FILTER"]
    first = filters[0]
    assert one(first, "name") == "grep"
    assert "stream ^stdout$" in entries(first, "regex")
    assert one(first, "logical_op") == "AND"


def test_fluent_bit_adds_cluster_name_and_node_name_beside_the_alert(deployed: Deployment):
    parsed = pipeline(deployed)
    (modifier,) = named(parsed, "FILTER", "record_modifier")
    records = entries(modifier, "record")
    assert f"cluster_name {CLUSTER}" in records
    assert "kubernetes_host ${NODE_NAME}" in records
    (nest,) = named(parsed, "FILTER", "nest")
    assert one(nest, "wildcard") == "kubernetes_host"
    assert one(nest, "nest_under") == "kubernetes"
    assert one(nest, "remove_prefix") == "kubernetes_"
    env = deployed.fluent_bit.inputs["values"]["env"]
    assert {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}} in env
    # The alert stays a JSON string in `log`: no filter parses or merges it.
    assert not named(parsed, "FILTER", "kubernetes")
    assert not named(parsed, "FILTER", "parser")


def test_fluent_bit_ships_to_the_existing_log_group_only(deployed: Deployment):
    parsed = pipeline(deployed)
    outputs = [body for kind, body in parsed if kind == "OUTPUT"]
    assert len(outputs) == 1
    output = outputs[0]
    assert one(output, "name") == "cloudwatch_logs"
    assert one(output, "match") == "falco"
    assert one(output, "log_group_name") == LOG_GROUP
    assert one(output, "region") == DEFAULT_REGION
    assert one(output, "auto_create_group").lower() in ("off", "false")
    assert "${NODE_NAME}" in one(output, "log_stream_prefix")
    assert not entries(output, "log_key")  # the whole record, with cluster_name, is sent


def test_fluent_bit_runs_in_the_pod_network_without_kubernetes_api_rights(deployed: Deployment):
    values = deployed.fluent_bit.inputs["values"]
    assert values["hostNetwork"] is False
    assert values["rbac"] == {"create": False}
    assert values["tolerations"] == [{"operator": "Exists"}]
    assert not named(pipeline(deployed), "FILTER", "aws")
    mounts = {m["mountPath"]: m for m in values["daemonSetVolumeMounts"]}
    assert mounts["/var/log/containers"]["readOnly"] is True
    assert mounts["/var/log/pods"]["readOnly"] is True
    assert "/var/log" not in mounts


@pytest.mark.parametrize(
    ("cluster", "region", "group"),
    [("bad name", "us-east-1", LOG_GROUP), (CLUSTER, "us-east-1\n", LOG_GROUP),
     (CLUSTER, "us-east-1", "/group\n[OUTPUT]"), (CLUSTER, "us-east-1", "{{ .Values }}")],
)  # fmt: skip
def test_fluent_bit_config_refuses_values_that_would_rewrite_it(cluster, region, group):
    with pytest.raises(ValueError, match="cannot be written into Fluent Bit's config"):
        rs.fluent_bit_pipeline(cluster, region, group)


# -- IAM and Pod Identity --------------------------------------------------------------------------


def test_fluent_bit_may_only_create_streams_and_put_events_in_the_alert_group(
    deployed: Deployment,
):
    policy = deployed.resource(ROLE_POLICY).policy()
    actions: set[str] = set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        assert set(statement) <= {"Sid", "Effect", "Action", "Resource"}  # no NotAction etc.
        statement_actions = statement["Action"]
        resources = statement["Resource"]
        assert all("*" not in action for action in statement_actions)
        assert resources
        assert set(resources) <= {LOG_GROUP_ARN, f"{LOG_GROUP_ARN}:log-stream:*"}
        actions |= set(statement_actions)
        if "logs:PutLogEvents" in statement_actions:
            assert resources == [f"{LOG_GROUP_ARN}:log-stream:*"]
    assert actions == {"logs:CreateLogStream", "logs:PutLogEvents"}


def test_the_fluent_bit_role_has_no_other_policy(deployed: Deployment):
    assert len(deployed.mocks.of_type(ROLE_POLICY)) == 1
    assert not deployed.mocks.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
    role = deployed.resource(ROLE).inputs
    assert not role.get("managedPolicyArns")
    assert not role.get("inlinePolicies")


def test_only_pod_identity_for_the_chart_service_account_can_assume_the_role(deployed: Deployment):
    service_account = deployed.fluent_bit.inputs["values"]["serviceAccount"]
    assert service_account == {"create": True, "name": "fluent-bit"}
    (statement,) = deployed.resource(ROLE).policy("assumeRolePolicy")["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert sorted(statement["Action"]) == ["sts:AssumeRole", "sts:TagSession"]
    assert statement["Condition"] == {
        "StringEquals": {
            "aws:RequestTag/eks-cluster-arn": CLUSTER_ARN,
            "aws:RequestTag/kubernetes-namespace": "falco",
            "aws:RequestTag/kubernetes-service-account": service_account["name"],
        }
    }


def test_pod_identity_association_binds_that_service_account_to_the_role(deployed: Deployment):
    association = deployed.resource(ASSOCIATION).inputs
    assert association["clusterName"] == CLUSTER
    assert association["namespace"] == deployed.falco.inputs["namespace"] == "falco"
    service_account = deployed.fluent_bit.inputs["values"]["serviceAccount"]["name"]
    assert association["serviceAccount"] == service_account
    assert association["roleArn"] == deployed.outputs["role_arn"]
    assert not association.get("disableSessionTags")  # the trust policy's conditions need them


# -- guard rails -----------------------------------------------------------------------------------
