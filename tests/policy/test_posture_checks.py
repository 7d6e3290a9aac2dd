"""Every policy of the pack on hand-built resources: one passing and one failing case at least.

Properties are written as `pulumi preview` sends them (camelCase engine names); UNKNOWN is what a
value computed from a resource not yet created looks like during a preview.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from policy import posture
from policy.posture import (
    RESOURCE_POLICIES,
    STACK_POLICIES,
    Enforcement,
    Resource,
)

UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
ROOT = "arn:aws:iam::123456789012:root"
KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/1234"
ALL_LOGS = ["api", "audit", "authenticator", "controllerManager", "scheduler"]


def check(name: str, resource_type: str, props: dict[str, Any], **config: Any) -> list[str]:
    (policy,) = [p for p in RESOURCE_POLICIES if p.name == name]
    return policy.check(resource_type, props, config)


def doc(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(action: Any, resource: Any = "arn:aws:sqs:us-east-1:123456789012:q", **extra: Any):
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


# Each row: policy, resource type, passing props, failing props, config.
CASES: list[tuple[str, str, dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    ("kms-key-rotation", "aws:kms/key:Key", {"enableKeyRotation": True}, {}, {}),
    ("encrypted-with-kms", "aws:cloudwatch/logGroup:LogGroup", {"kmsKeyId": KEY_ARN}, {}, {}),
    (
        "encrypted-with-kms",
        "aws:sqs/queue:Queue",
        {"kmsMasterKeyId": UNKNOWN},
        {"sqsManagedSseEnabled": True},
        {},
    ),
    (
        "encrypted-with-kms",
        "aws:sns/topic:Topic",
        {"kmsMasterKeyId": KEY_ARN},
        {"kmsMasterKeyId": ""},
        {},
    ),
    (
        "customer-managed-kms-keys",
        "aws:sns/topic:Topic",
        {"kmsMasterKeyId": KEY_ARN},
        {"kmsMasterKeyId": "alias/aws/sns"},
        {},
    ),
    (
        "log-group-retention",
        "aws:cloudwatch/logGroup:LogGroup",
        {"retentionInDays": 365.0},
        {"retentionInDays": 0},
        {},
    ),
    ("eks-secrets-encryption", "eks:index:Cluster", {"encryptionConfigKeyArn": UNKNOWN}, {}, {}),
    (
        "eks-secrets-encryption",
        "aws:eks/cluster:Cluster",
        {"encryptionConfig": {"provider": {"keyArn": KEY_ARN}, "resources": ["secrets"]}},
        {"encryptionConfig": {"provider": {"keyArn": KEY_ARN}, "resources": []}},
        {},
    ),
    (
        "eks-control-plane-logs",
        "eks:index:Cluster",
        {"enabledClusterLogTypes": ALL_LOGS},
        {"enabledClusterLogTypes": ["api", "audit"]},
        {},
    ),
    (
        "eks-control-plane-logs",
        "aws:eks/cluster:Cluster",
        {"enabledClusterLogTypes": ALL_LOGS},
        {},
        {},
    ),
    (
        "eks-public-endpoint-restricted",
        "eks:index:Cluster",
        {"endpointPublicAccess": True, "publicAccessCidrs": ["198.51.100.0/24"]},
        {"endpointPublicAccess": True, "publicAccessCidrs": ["198.51.100.0/24", "0.0.0.0/0"]},
        {},
    ),
    # EKS's defaults are a public endpoint open to everyone.
    (
        "eks-public-endpoint-restricted",
        "aws:eks/cluster:Cluster",
        {"vpcConfig": {"endpointPublicAccess": False}},
        {"vpcConfig": {"subnetIds": ["s"]}},
        {},
    ),
    (
        "iam-no-wildcard-actions",
        "aws:iam/rolePolicy:RolePolicy",
        {"policy": doc(allow(["sqs:SendMessage", "kms:Describe*"]))},
        {"policy": doc(allow("sqs:*"))},
        {},
    ),
    (
        "iam-no-wildcard-actions",
        "aws:iam/role:Role",
        {"assumeRolePolicy": doc({"Effect": "Allow", "Action": "sts:AssumeRole"})},
        {"inlinePolicies": [{"name": "p", "policy": doc(allow("*"))}]},
        {},
    ),
    # The account root's kms:* is AWS's default key policy; anyone else's is not.
    (
        "iam-no-wildcard-actions",
        "aws:kms/key:Key",
        {"policy": doc(allow("kms:*", "*", Principal={"AWS": ROOT}))},
        {"policy": doc(allow("kms:*", "*", Principal={"Service": "logs.amazonaws.com"}))},
        {},
    ),
    (
        "iam-no-wildcard-actions",
        "aws:iam/policy:Policy",
        {"policy": {"Statement": [{"Effect": "Deny", "NotAction": "s3:*", "Resource": "*"}]}},
        {"policy": {"Statement": [{"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}]}},
        {},
    ),
    (
        "iam-no-wildcard-resources",
        "aws:iam/rolePolicy:RolePolicy",
        {"policy": doc(allow(["ec2:DescribeInstances", "ecr:GetAuthorizationToken"], "*"))},
        {"policy": doc(allow(["ec2:DescribeInstances", "logs:PutLogEvents"], "*"))},
        {},
    ),
    (
        "iam-no-wildcard-resources",
        "aws:sqs/queuePolicy:QueuePolicy",
        {"policy": doc(allow("sqs:SendMessage"))},
        {"policy": doc(allow("sqs:SendMessage", ["*"]))},
        {},
    ),
    (
        "lambda-not-public",
        "aws:lambda/permission:Permission",
        {"principal": "logs.us-east-1.amazonaws.com", "sourceArn": "arn:aws:logs:x:*"},
        {"principal": "logs.us-east-1.amazonaws.com"},
        {},
    ),
    (
        "lambda-not-public",
        "aws:lambda/permission:Permission",
        {"principal": "123456789012"},
        {"principal": "*"},
        {},
    ),
    (
        "lambda-not-public",
        "aws:lambda/functionUrl:FunctionUrl",
        {"authorizationType": "AWS_IAM"},
        {"authorizationType": "NONE"},
        {},
    ),
    (
        "helm-exact-chart-versions",
        "kubernetes:helm.sh/v3:Release",
        {"chart": "falco", "version": "9.1.0"},
        {"chart": "falco", "version": "9.1.*"},
        {},
    ),
    (
        "helm-exact-chart-versions",
        "kubernetes:helm.sh/v4:Chart",
        {"chart": "oci://registry/app", "version": "1.2.3-rc.1"},
        {"chart": "fluent-bit"},
        {},
    ),
]

PINNED_FALCO = {
    "falcoctl": {
        "artifact": {"follow": {"enabled": False}},
        "config": {"artifact": {"install": {"refs": ["falco-rules:5.1.0"]}}},
    }
}


@pytest.mark.parametrize(("name", "resource_type", "passing", "failing", "config"), CASES)
def test_a_policy_passes_the_good_resource_and_names_the_bad_one(
    name: str, resource_type: str, passing: dict, failing: dict, config: dict
) -> None:
    assert check(name, resource_type, passing, **config) == []
    violations = check(name, resource_type, failing, **config)
    assert violations
    assert all(isinstance(v, str) and v for v in violations)


def test_every_policy_has_a_failing_case_here() -> None:
    tested = {case[0] for case in CASES} | {"falco-rules-pinned"}
    assert tested == {p.name for p in RESOURCE_POLICIES}


def test_every_policy_states_its_enforcement_and_reason() -> None:
    for policy in [*RESOURCE_POLICIES, *STACK_POLICIES]:
        assert isinstance(policy.enforcement, Enforcement)
        assert len(policy.description) > 40, policy.name
    names = [p.name for p in [*RESOURCE_POLICIES, *STACK_POLICIES]]
    assert len(names) == len(set(names))


def test_policies_ignore_resource_types_they_do_not_govern() -> None:
    for policy in RESOURCE_POLICIES:
        assert policy.check("aws:ec2/vpc:Vpc", {"cidrBlock": "10.0.0.0/16"}, {}) == []


def test_in_a_key_policy_resource_star_means_this_key() -> None:
    policy = {"policy": doc(allow(["kms:Decrypt"], "*", Principal={"AWS": ROOT}))}
    assert check("iam-no-wildcard-resources", "aws:kms/key:Key", policy) == []
    assert check("iam-no-wildcard-resources", "aws:iam/rolePolicy:RolePolicy", policy)


# -- EKS public endpoint: the opt-in -----------------------------------------------------------
def test_the_opt_in_allows_an_endpoint_open_to_anywhere() -> None:
    props = {"endpointPublicAccess": True, "publicAccessCidrs": ["0.0.0.0/0"]}
    assert check("eks-public-endpoint-restricted", "eks:index:Cluster", props)
    assert not check(
        "eks-public-endpoint-restricted",
        "eks:index:Cluster",
        props,
        allowPublicEndpointFromAnywhere=True,
    )


def test_ipv6_anywhere_is_anywhere_too() -> None:
    props = {"vpcConfig": {"endpointPublicAccess": True, "publicAccessCidrs": ["::/0"]}}
    assert check("eks-public-endpoint-restricted", "aws:eks/cluster:Cluster", props)


# -- unknown values during a preview -------------------------------------------------------------
def test_unknown_values_count_as_present_but_are_not_judged() -> None:
    assert not check("kms-key-rotation", "aws:kms/key:Key", {"enableKeyRotation": UNKNOWN})
    assert not check(
        "iam-no-wildcard-actions", "aws:iam/rolePolicy:RolePolicy", {"policy": UNKNOWN}
    )
    assert not check(
        "helm-exact-chart-versions",
        "kubernetes:helm.sh/v3:Release",
        {"chart": "falco", "version": UNKNOWN},
    )


def test_asymmetric_keys_are_not_asked_to_rotate() -> None:
    props = {"customerMasterKeySpec": "RSA_2048", "keyUsage": "SIGN_VERIFY"}
    assert not check("kms-key-rotation", "aws:kms/key:Key", props)


# -- Falco's rules artifact ------------------------------------------------------------------------
def falco(values: Any, chart: str = "falco") -> list[str]:
    props = {"chart": chart, "version": "9.1.0", "values": values}
    return check("falco-rules-pinned", "kubernetes:helm.sh/v3:Release", props)


def test_pinned_falco_rules_pass() -> None:
    assert falco(PINNED_FALCO) == []
    oci = json.loads(json.dumps(PINNED_FALCO))
    oci["falcoctl"]["config"]["artifact"]["install"]["refs"] = [
        "ghcr.io/falcosecurity/rules/falco-rules:5.1.0",
        "ghcr.io/falcosecurity/plugins/plugin/container@sha256:" + "a" * 64,
    ]
    assert falco(oci) == []


def test_the_charts_defaults_are_not_pinned() -> None:
    violations = falco({})
    assert any("follow.enabled" in v for v in violations)
    assert any("install.refs is not set" in v for v in violations)


@pytest.mark.parametrize(
    "ref", ["falco-rules:5", "falco-rules:5.1", "falco-rules", "falco-rules:latest"]
)
def test_floating_rule_references_fail(ref: str) -> None:
    values = json.loads(json.dumps(PINNED_FALCO))
    values["falcoctl"]["config"]["artifact"]["install"]["refs"] = [ref]
    assert any(ref in v for v in falco(values))


def test_a_floating_follow_reference_fails_even_while_follow_is_off() -> None:
    values = json.loads(json.dumps(PINNED_FALCO))
    values["falcoctl"]["config"]["artifact"]["follow"] = {"refs": ["falco-rules:5"]}
    assert falco(values)


def test_a_floating_plugin_reference_fails() -> None:
    values = json.loads(json.dumps(PINNED_FALCO))
    values["collectors"] = {
        "containerEngine": {"pluginRef": "ghcr.io/falcosecurity/plugins/plugin/container:0.7.1"}
    }
    assert falco(values) == []
    values["collectors"]["kubernetes"] = {
        "pluginRef": "ghcr.io/falcosecurity/plugins/plugin/k8smeta:0"
    }
    assert any("collectors.kubernetes.pluginRef" in v for v in falco(values))


def test_other_charts_are_not_falco() -> None:
    assert falco({}, chart="fluent-bit") == []
    assert falco({}, chart="falcosecurity/falco")


# -- stack policy: Lambda on-failure destination -------------------------------------------------
FUNCTION = Resource(
    "aws:lambda/function:Function",
    "findings",
    {"name": "findings-fn", "arn": "arn:aws:lambda:us-east-1:123456789012:function:findings-fn"},
    urn="urn:fn",
)


def invoke_config(function_name: Any, destination: Any, deps: tuple[str, ...] = ()) -> Resource:
    props = {"functionName": function_name}
    if destination is not None:
        props["destinationConfig"] = {"onFailure": {"destination": destination}}
    return Resource(
        posture.INVOKE_CONFIG,
        "cfg",
        props,
        urn="urn:cfg",
        property_dependencies={"functionName": list(deps)},
    )


def destinations(*resources: Resource) -> list[tuple[str, str]]:
    (policy,) = STACK_POLICIES
    return policy.check(list(resources), {})


def test_a_function_with_an_on_failure_destination_passes() -> None:
    assert destinations(FUNCTION, invoke_config("findings-fn", "arn:aws:sqs:x:1:q")) == []
    # During a preview the name and queue ARN are unknown: the dependency says which function.
    assert destinations(FUNCTION, invoke_config(UNKNOWN, UNKNOWN, deps=("urn:fn",))) == []
    with_dlq = Resource(FUNCTION.type, "f", {"deadLetterConfig": {"targetArn": "arn:q"}}, urn="u")
    assert destinations(with_dlq) == []


def test_a_function_without_one_is_named() -> None:
    assert [urn for _, urn in destinations(FUNCTION)] == ["urn:fn"]
    assert destinations(FUNCTION, invoke_config("findings-fn", None))
    assert destinations(FUNCTION, invoke_config("another-function", "arn:aws:sqs:x:1:q"))
