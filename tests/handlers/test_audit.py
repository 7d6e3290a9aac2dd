"""Kubernetes audit alerts -> the object, the actor and the source IP of their findings.

The fixtures (tests/fixtures/k8saudit_eks_records.jsonl) are records as this deployment ships them:
Fluent Bit's CRI record with the audit Falco's JSON alert as a string in `log`, `cluster_name` and
`kubernetes.host` beside it; the alerts are k8saudit rules' output (source k8s_audit) with the
fields the audit Falco appends (components/audit_detection.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from asff_limits import (
    CONTROL_CHARACTERS,
    MAX_DETAILS_OTHER,
    MAX_DETAILS_OTHER_VALUE,
    MAX_ID,
    assert_within_asff_limits,
    utf16_length,
)

from handlers import alerts, findings
from handlers.audit import AuditPieces, audit_pieces

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "k8saudit_eks_records.jsonl"
CLUSTER = "falco-us-east-1"


def shipped_records() -> dict[str, alerts.AlertRecord]:
    """Each fixture line through the handler's own parser, by rule name."""
    records: dict[str, alerts.AlertRecord] = {}
    for number, line in enumerate(FIXTURES.read_text(encoding="utf-8").splitlines(), start=1):
        parsed = alerts.parse_log_event(alerts.LogEvent(f"event-{number}", 1773457540000, line))
        assert isinstance(parsed, alerts.AlertRecord), f"{FIXTURES.name}:{number}: {parsed}"
        records[parsed.alert["rule"]] = parsed
    return records


RECORDS = shipped_records()


def pieces_of(rule: str) -> AuditPieces:
    record = RECORDS[rule]
    assert record.alert["source"] == "k8s_audit"
    return audit_pieces(record.alert["output_fields"], record.cluster_name)


def assert_within_limits(pieces: AuditPieces) -> None:
    resource = pieces["resource"]
    assert resource is not None
    assert utf16_length(resource["Id"]) <= MAX_ID
    other = resource["Details"]["Other"]
    assert len(other) <= MAX_DETAILS_OTHER
    for key, value in other.items():
        assert value.strip(), key
        assert utf16_length(value) <= MAX_DETAILS_OTHER_VALUE, key
        assert not CONTROL_CHARACTERS.search(value), key


def test_every_shipped_record_is_an_audit_alert_from_the_cluster() -> None:
    assert set(RECORDS) == {
        "Attach/Exec Pod",
        "Create Privileged Pod",
        "K8s Secret Get Successfully",
        "Attach to cluster-admin Role",
    }
    for record in RECORDS.values():
        assert record.cluster_name == CLUSTER
        assert_within_limits(audit_pieces(record.alert["output_fields"], record.cluster_name))


def test_exec_into_a_pod_names_the_pod_the_iam_role_and_the_client_ip() -> None:
    pieces = pieces_of("Attach/Exec Pod")

    resource = pieces["resource"]
    assert resource is not None
    assert resource["Type"] == "Other"
    assert resource["Id"] == "k8s/falco-us-east-1/shop/pods/checkout-7d9f8b6c5d-x2k4q"
    other = resource["Details"]["Other"]
    assert other["Cluster"] == CLUSTER
    assert other["Namespace"] == "shop"
    assert other["Resource"] == "pods"
    assert other["Name"] == "checkout-7d9f8b6c5d-x2k4q"
    assert other["Subresource"] == "exec"
    assert other["Verb"] == "create"
    assert other["User"] == "arn:aws:sts::123456789012:assumed-role/eks-oncall/jdoe"
    assert other["IamPrincipalArn"] == "arn:aws:iam::123456789012:role/eks-oncall"

    assert pieces["actor"] == {
        "user": "arn:aws:sts::123456789012:assumed-role/eks-oncall/jdoe",
        "groups": ["system:authenticated"],
        "impersonated_user": None,
        "iam_arn": "arn:aws:iam::123456789012:role/eks-oncall",
    }
    assert pieces["actor_resource"] == {
        "Type": "AwsIamRole",
        "Id": "arn:aws:iam::123456789012:role/eks-oncall",
    }
    assert pieces["network"] == {"Direction": "IN", "SourceIpV4": "203.0.113.7"}


def test_a_created_pod_is_named_from_the_response_and_an_ipv6_client_is_kept() -> None:
    pieces = pieces_of("Create Privileged Pod")

    resource = pieces["resource"]
    assert resource is not None
    # ka.target.name is null on create: the name only exists in the response.
    assert resource["Id"] == "k8s/falco-us-east-1/default/pods/miner-5f7d"
    assert "Subresource" not in resource["Details"]["Other"]
    assert pieces["actor"]["groups"] == ["ci-deployers", "system:authenticated"]
    assert pieces["actor_resource"] == {
        "Type": "AwsIamUser",
        "Id": "arn:aws:iam::123456789012:user/ci-deployer",
    }
    assert pieces["network"] == {"Direction": "IN", "SourceIpV6": "2001:db8::7"}


def test_a_service_account_has_no_iam_principal() -> None:
    pieces = pieces_of("K8s Secret Get Successfully")

    assert pieces["actor"]["user"] == "system:serviceaccount:ci:pipeline"
    assert pieces["actor"]["iam_arn"] is None
    assert pieces["actor_resource"] is None
    resource = pieces["resource"]
    assert resource is not None
    assert resource["Id"] == "k8s/falco-us-east-1/kube-system/secrets/aws-creds"
    assert resource["Details"]["Other"]["AuthorizationDecision"] == "allow"
    assert "IamPrincipalArn" not in resource["Details"]["Other"]
    assert pieces["network"] == {"Direction": "IN", "SourceIpV4": "10.20.3.4"}


def test_a_cluster_scoped_binding_has_no_namespace_and_hostile_text_is_escaped() -> None:
    pieces = pieces_of("Attach to cluster-admin Role")

    resource = pieces["resource"]
    assert resource is not None
    assert resource["Id"] == "k8s/falco-us-east-1/-/clusterrolebindings/pwn"
    other = resource["Details"]["Other"]
    assert "Namespace" not in other
    # The first address is the client; the rest are proxies in front of the API server.
    assert pieces["network"] == {"Direction": "IN", "SourceIpV4": "198.51.100.23"}
    assert other["SourceIps"] == "198.51.100.23, 10.0.0.5"
    assert other["UserAgent"] == ("evil\\n2026-03-14 INFO forged line \\x1b[31mred\\x1b[0m")
    assert_within_limits(pieces)


def test_a_request_without_an_object_has_no_kubernetes_resource() -> None:
    pieces = audit_pieces(
        {"ka.user.name": "system:anonymous", "ka.uri": "/healthz", "ka.target.resource": None},
        CLUSTER,
    )

    assert pieces["resource"] is None
    assert pieces["actor"]["user"] == "system:anonymous"


@pytest.mark.parametrize(
    ("source_ips", "network", "listed"),
    [
        ("<NA>", None, []),
        (None, None, []),
        ("(not-an-address)", None, ["not-an-address"]),
        ("192.0.2.1", {"Direction": "IN", "SourceIpV4": "192.0.2.1"}, ["192.0.2.1"]),
        (["2001:db8::1"], {"Direction": "IN", "SourceIpV6": "2001:db8::1"}, ["2001:db8::1"]),
    ],
)
def test_only_an_ip_address_becomes_the_network_source(
    source_ips: Any, network: dict[str, str] | None, listed: list[str]
) -> None:
    pieces = audit_pieces(
        {"ka.target.resource": "pods", "ka.target.name": "p", "ka.sourceips": source_ips},
        CLUSTER,
    )

    assert pieces["network"] == network
    assert pieces["source_ips"] == listed


def test_an_unknown_cluster_and_missing_parts_become_dashes() -> None:
    pieces = audit_pieces({"ka.target.resource": "nodes", "ka.target.name": "<NA>"}, None)

    resource = pieces["resource"]
    assert resource is not None
    assert resource["Id"] == "k8s/-/-/nodes/-"
    assert "Cluster" not in resource["Details"]["Other"]


def test_long_names_are_cut_within_asff_limits_and_stay_distinct() -> None:
    def long_object(suffix: str) -> AuditPieces:
        return audit_pieces(
            {
                "ka.target.resource": "configmaps",
                "ka.target.namespace": "n" * 600,
                "ka.target.name": "x" * 600 + suffix,
                "ka.uri": "/api/v1/" + "é" * 2000,
                "ka.useragent": "🙂" * 1000,
            },
            CLUSTER,
        )

    first, second = long_object("a"), long_object("b")
    assert_within_limits(first)
    assert_within_limits(second)
    assert first["resource"] is not None
    assert second["resource"] is not None
    assert first["resource"]["Id"] != second["resource"]["Id"]


def test_an_sts_session_arn_names_no_iam_resource() -> None:
    pieces = audit_pieces(
        {"eks.user.arn": "arn:aws:sts::123456789012:assumed-role/Admin/me", "ka.user.name": "me"},
        CLUSTER,
    )

    assert pieces["actor"]["iam_arn"] == "arn:aws:sts::123456789012:assumed-role/Admin/me"
    assert pieces["actor_resource"] is None


def test_the_pieces_serialize_as_json() -> None:
    for rule in RECORDS:
        json.dumps(pieces_of(rule), allow_nan=False)


def test_a_shipped_audit_alert_becomes_a_finding_naming_object_actor_and_source() -> None:
    """The whole mapping: the audit alert as this deployment ships it -> one ASFF finding."""
    ctx = findings.FindingContext(account_id="123456789012", region="us-east-1")
    for rule, record in RECORDS.items():
        produced = findings.to_finding(record, ctx)
        assert_within_asff_limits(dict(produced))
        pieces = pieces_of(rule)
        resources = produced["Resources"]
        if pieces["resource"] is not None:
            assert resources[0]["Id"] == pieces["resource"]["Id"], rule
            assert resources[0]["Details"] == pieces["resource"]["Details"], rule
        if pieces["actor_resource"] is not None:
            assert pieces["actor_resource"]["Id"] in [r["Id"] for r in resources], rule
        assert produced.get("Network") == pieces["network"], rule
        assert resources[-1]["Type"] == "AwsEksCluster", rule
        # Audit events happen in the API, not on Falco's node: no node resource.
        assert not [r for r in resources if r["Type"] == "AwsEc2Instance"], rule


def test_the_exec_finding_carries_the_iam_role_and_the_client_address() -> None:
    ctx = findings.FindingContext(account_id="123456789012", region="us-east-1")
    produced = findings.to_finding(RECORDS["Attach/Exec Pod"], ctx)
    types = [r["Type"] for r in produced["Resources"]]
    assert types[0] == "Other"
    assert "AwsIamRole" in types
    assert produced["Network"]["Direction"] == "IN"
    assert produced["Network"].get("SourceIpV4") or produced["Network"].get("SourceIpV6")
