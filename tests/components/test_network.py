"""Network: AZ spread, subnet tags for EKS load balancers, NAT egress for private subnets."""

from __future__ import annotations

import ipaddress
from typing import Any

import pulumi
import pytest
from conftest import ACCOUNT_ID, RecordedResource, RecordingMocks, configure_pulumi_mocks

from components.network import (
    Network,
    NetworkArgs,
    flow_log_delivery_policy,
    flow_log_trust_policy,
    subnet_cidrs,
)

CLUSTER = "falco-us-east-1"
SUBNET = "aws:ec2/subnet:Subnet"
ROUTE = "aws:ec2/route:Route"
ASSOCIATION = "aws:ec2/routeTableAssociation:RouteTableAssociation"
NAT = "aws:ec2/natGateway:NatGateway"


def args(**overrides: Any) -> NetworkArgs:
    values: dict[str, Any] = {
        "cluster_name": CLUSTER,
        "cidr_block": "10.0.0.0/16",
        "availability_zone_count": 2,
        "tags": {"Project": "falco-securityhub"},
        "account_id": ACCOUNT_ID,
        "partition": "aws",
        "region": "us-east-1",
    }
    values.update(overrides)
    return NetworkArgs(**values)


def declare(**overrides: Any) -> dict[str, Any]:
    resolved: dict[str, Any] = {}

    @pulumi.runtime.test
    def run() -> pulumi.Output[Any]:
        network = Network("net", args(**overrides))
        return pulumi.Output.all(
            network.vpc_id, network.public_subnet_ids, network.private_subnet_ids
        ).apply(
            lambda values: resolved.update(zip(("vpc", "public", "private"), values, strict=True))
        )

    run()
    return resolved


def subnets(mocks: RecordingMocks, role: str) -> list[RecordedResource]:
    return [s for s in mocks.of_type(SUBNET) if s.name.startswith(f"net-{role}-")]


def default_route_of(mocks: RecordingMocks, subnet: RecordedResource) -> RecordedResource:
    """The 0.0.0.0/0 route of the route table associated with ``subnet``."""
    (association,) = [
        a for a in mocks.of_type(ASSOCIATION) if a.inputs["subnetId"] == f"{subnet.name}-id"
    ]
    (route,) = [
        r
        for r in mocks.of_type(ROUTE)
        if r.inputs["routeTableId"] == association.inputs["routeTableId"]
        and r.inputs["destinationCidrBlock"] == "0.0.0.0/0"
    ]
    return route


@pytest.mark.parametrize("zone_count", [2, 3])
def test_one_public_and_one_private_subnet_per_availability_zone(
    pulumi_mocks: RecordingMocks, zone_count: int
) -> None:
    resolved = declare(availability_zone_count=zone_count)
    zones = [f"us-east-1{suffix}" for suffix in "abc"[:zone_count]]
    for role in ("public", "private"):
        found = subnets(pulumi_mocks, role)
        assert sorted(s.inputs["availabilityZone"] for s in found) == zones
    assert len(resolved["public"]) == len(resolved["private"]) == zone_count
    assert resolved["vpc"] == "net-vpc-id"
    assert resolved["private"] == [f"net-private-{i}-id" for i in range(zone_count)]


def test_subnets_do_not_overlap_and_stay_inside_the_vpc(pulumi_mocks: RecordingMocks) -> None:
    declare(availability_zone_count=3)
    vpc = ipaddress.ip_network(pulumi_mocks.one("aws:ec2/vpc:Vpc").inputs["cidrBlock"])
    networks = [ipaddress.ip_network(s.inputs["cidrBlock"]) for s in pulumi_mocks.of_type(SUBNET)]
    assert all(n.subnet_of(vpc) for n in networks)  # type: ignore[arg-type]
    assert not any(a.overlaps(b) for i, a in enumerate(networks) for b in networks[i + 1 :])


def test_more_zones_than_the_region_has_is_a_clear_error(pulumi_mocks: RecordingMocks) -> None:
    with pytest.raises(ValueError, match="availabilityZoneCount is 4 but the region has only 3"):
        declare(availability_zone_count=4)


def test_subnets_carry_the_tags_eks_load_balancers_need(pulumi_mocks: RecordingMocks) -> None:
    declare()
    for subnet in subnets(pulumi_mocks, "public"):
        assert subnet.inputs["tags"]["kubernetes.io/role/elb"] == "1"
        assert "kubernetes.io/role/internal-elb" not in subnet.inputs["tags"]
        assert subnet.inputs["tags"][f"kubernetes.io/cluster/{CLUSTER}"] == "shared"
    for subnet in subnets(pulumi_mocks, "private"):
        assert subnet.inputs["tags"]["kubernetes.io/role/internal-elb"] == "1"
        assert "kubernetes.io/role/elb" not in subnet.inputs["tags"]
        assert subnet.inputs["tags"][f"kubernetes.io/cluster/{CLUSTER}"] == "shared"


def test_no_subnet_hands_out_public_ips(pulumi_mocks: RecordingMocks) -> None:
    declare()
    for subnet in pulumi_mocks.of_type(SUBNET):
        assert subnet.inputs["mapPublicIpOnLaunch"] is False, subnet.name


def test_private_subnets_leave_through_their_own_zones_nat_gateway(
    pulumi_mocks: RecordingMocks,
) -> None:
    declare(availability_zone_count=3)
    nats = pulumi_mocks.of_type(NAT)
    assert len(nats) == 3
    used = set()
    for subnet in subnets(pulumi_mocks, "private"):
        route = default_route_of(pulumi_mocks, subnet)
        assert "gatewayId" not in route.inputs, "private subnet routed to the internet gateway"
        used.add(route.inputs["natGatewayId"])
        (nat,) = [n for n in nats if f"{n.name}-id" == route.inputs["natGatewayId"]]
        (nat_subnet,) = [
            s for s in subnets(pulumi_mocks, "public") if f"{s.name}-id" == nat.inputs["subnetId"]
        ]
        assert nat_subnet.inputs["availabilityZone"] == subnet.inputs["availabilityZone"]
    assert len(used) == 3


def test_single_nat_gateway_mode_shares_one(pulumi_mocks: RecordingMocks) -> None:
    declare(availability_zone_count=3, nat_gateway_mode="single")
    (nat,) = pulumi_mocks.of_type(NAT)
    for subnet in subnets(pulumi_mocks, "private"):
        assert default_route_of(pulumi_mocks, subnet).inputs["natGatewayId"] == f"{nat.name}-id"


def test_public_subnets_route_to_the_internet_gateway(pulumi_mocks: RecordingMocks) -> None:
    declare()
    gateway = pulumi_mocks.one("aws:ec2/internetGateway:InternetGateway")
    for subnet in subnets(pulumi_mocks, "public"):
        assert default_route_of(pulumi_mocks, subnet).inputs["gatewayId"] == f"{gateway.name}-id"


def test_default_security_group_is_stripped(pulumi_mocks: RecordingMocks) -> None:
    declare()
    group = pulumi_mocks.one("aws:ec2/defaultSecurityGroup:DefaultSecurityGroup")
    assert group.inputs.get("ingress", []) == []
    assert group.inputs.get("egress", []) == []


def test_flow_logs_go_to_an_encrypted_log_group(pulumi_mocks: RecordingMocks) -> None:
    declare()
    flow_log = pulumi_mocks.one("aws:ec2/flowLog:FlowLog")
    group = pulumi_mocks.one("aws:cloudwatch/logGroup:LogGroup")
    key = pulumi_mocks.one("aws:kms/key:Key")
    assert flow_log.inputs["trafficType"] == "ALL"
    assert flow_log.inputs["logDestination"] == group.outputs["arn"]
    assert group.inputs["kmsKeyId"] == key.outputs["arn"]
    assert group.inputs["retentionInDays"] == 365
    assert key.inputs["enableKeyRotation"] is True
    statements = key.policy()["Statement"]
    logs = next(
        s for s in statements if s["Principal"] == {"Service": "logs.us-east-1.amazonaws.com"}
    )
    assert logs["Condition"]["ArnEquals"]["kms:EncryptionContext:aws:logs:arn"].endswith(
        f":log-group:/aws/vpc/{CLUSTER}/flow-logs"
    )


def test_flow_logs_can_be_turned_off(pulumi_mocks: RecordingMocks) -> None:
    declare(flow_logs=False)
    assert not pulumi_mocks.of_type("aws:ec2/flowLog:FlowLog")
    assert not pulumi_mocks.of_type("aws:cloudwatch/logGroup:LogGroup")


def test_flow_log_role_is_scoped_to_its_service_account_and_group() -> None:
    trust = flow_log_trust_policy(ACCOUNT_ID, "aws", "eu-west-1")["Statement"][0]
    assert trust["Principal"] == {"Service": "vpc-flow-logs.amazonaws.com"}
    assert trust["Condition"]["StringEquals"]["aws:SourceAccount"] == ACCOUNT_ID
    arn = "arn:aws:logs:eu-west-1:123456789012:log-group:/aws/vpc/x/flow-logs"
    (delivery,) = flow_log_delivery_policy(arn)["Statement"]
    assert delivery["Resource"] == [arn, f"{arn}:*"]
    assert all(":" in action and "*" not in action for action in delivery["Action"])


def test_subnet_layout_is_stable_when_zones_are_added() -> None:
    private_2, public_2 = subnet_cidrs("10.1.0.0/16", 2)
    private_3, public_3 = subnet_cidrs("10.1.0.0/16", 3)
    assert private_3[:2] == private_2
    assert public_3[:2] == public_2
    assert private_2 == ["10.1.0.0/19", "10.1.32.0/19"]
    assert public_2 == ["10.1.128.0/19", "10.1.160.0/19"]


def test_eu_west_1_zones_come_from_the_stack_region() -> None:
    mocks = configure_pulumi_mocks(stack="eu-west-1", region="eu-west-1")
    try:
        declare(region="eu-west-1")
    finally:
        pulumi.runtime.set_all_config({})
    assert sorted(s.inputs["availabilityZone"] for s in subnets(mocks, "private")) == [
        "eu-west-1a",
        "eu-west-1b",
    ]
