"""Network: the cluster's VPC, a public and a private subnet per AZ, NAT egress, flow logs.

Nodes live in the private subnets and reach the internet (image pulls, CloudWatch Logs, Security
Hub) through NAT; the public subnets hold only the NAT gateways and internet-facing load
balancers. Subnets carry the tags the AWS Load Balancer Controller and EKS use to find them.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from components.key_policy import (
    account_root_statement,
    cloudwatch_logs_statement,
    customer_managed_key,
)

# Zone IDs where EKS refuses control-plane subnets (UnsupportedAvailabilityZoneException), per
# the EKS user guide's subnet requirements.
EKS_UNSUPPORTED_ZONE_IDS = ("use1-az3", "usw1-az2", "cac1-az3")

NAT_PER_AZ = "perAz"
NAT_SINGLE = "single"


@dataclass
class NetworkArgs:
    cluster_name: str
    cidr_block: str
    availability_zone_count: int
    tags: dict[str, str]
    # Beyond the contract's four: the flow-log role's trust and the log group's key policy are
    # scoped to this account and region; NAT layout and flow logs are settings.
    account_id: str
    partition: str
    region: str
    nat_gateway_mode: str = NAT_PER_AZ
    flow_logs: bool = True
    flow_log_retention_days: int = 365


def subnet_cidrs(vpc_cidr: str, zone_count: int) -> tuple[list[str], list[str]]:
    """(private, public) CIDRs: the VPC in eight equal blocks, private first, public from the fifth.

    Equal, large private subnets leave room for pod IPs (the VPC CNI gives every pod a VPC
    address); a fixed layout keeps existing subnets in place when zones are added.
    """
    if not 1 <= zone_count <= 4:
        raise ValueError(f"zone_count must be 1..4, got {zone_count}")
    blocks = [str(b) for b in ipaddress.ip_network(vpc_cidr).subnets(prefixlen_diff=3)]
    return blocks[:zone_count], blocks[4 : 4 + zone_count]


def flow_log_trust_policy(account_id: str, partition: str, region: str) -> dict[str, Any]:
    """Only VPC Flow Logs, only for flow logs of this account and region (confused deputy)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "vpc-flow-logs.amazonaws.com"},
                "Action": "sts:AssumeRole",
                "Condition": {
                    "StringEquals": {"aws:SourceAccount": account_id},
                    "ArnLike": {
                        "aws:SourceArn": f"arn:{partition}:ec2:{region}:{account_id}:vpc-flow-log/*"
                    },
                },
            }
        ],
    }


def flow_log_delivery_policy(log_group_arn: str) -> dict[str, Any]:
    """Write to the one flow-log group; the group exists, so no logs:CreateLogGroup."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DeliverFlowLogs",
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                "Resource": [log_group_arn, f"{log_group_arn}:*"],
            }
        ],
    }


def log_group_key_policy(
    account_id: str, partition: str, region: str, log_group_name: str
) -> dict[str, Any]:
    """Account root administers the key (as in AWS's default key policy, so it never becomes
    unmanageable); CloudWatch Logs may use it only for the named log group."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            account_root_statement(partition, account_id, "AccountRootAdministersTheKey"),
            cloudwatch_logs_statement(
                partition, region, account_id, [log_group_name], "CloudWatchLogsEncryptsTheLogGroup"
            ),
        ],
    }


class Network(pulumi.ComponentResource):
    vpc_id: pulumi.Output[str]
    public_subnet_ids: pulumi.Output[list[str]]
    private_subnet_ids: pulumi.Output[list[str]]

    def __init__(
        self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("falco-securityhub:index:Network", name, None, opts)
        zones = self._first_zones(args.availability_zone_count)
        private_cidrs, public_cidrs = subnet_cidrs(args.cidr_block, len(zones))
        child = pulumi.ResourceOptions(parent=self)
        cluster_tag = {f"kubernetes.io/cluster/{args.cluster_name}": "shared"}

        def tags(role: str, extra: dict[str, str] | None = None) -> dict[str, str]:
            return {**args.tags, "Name": f"{args.cluster_name}-{role}", **(extra or {})}

        vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=args.cidr_block,
            # EKS private endpoint and node registration need DNS hostnames in the VPC.
            enable_dns_support=True,
            enable_dns_hostnames=True,
            tags=tags("vpc"),
            opts=child,
        )
        # The default security group is unused; stripping its rules keeps it from ever being a
        # silent allow-all for something launched without a group (Security Hub EC2.2).
        aws.ec2.DefaultSecurityGroup(
            f"{name}-default-sg",
            vpc_id=vpc.id,
            ingress=[],
            egress=[],
            tags=tags("default-unused"),
            opts=child,
        )
        internet_gateway = aws.ec2.InternetGateway(
            f"{name}-igw", vpc_id=vpc.id, tags=tags("igw"), opts=child
        )

        public_routes = aws.ec2.RouteTable(
            f"{name}-public-rt", vpc_id=vpc.id, tags=tags("public"), opts=child
        )
        aws.ec2.Route(
            f"{name}-public-default",
            route_table_id=public_routes.id,
            destination_cidr_block="0.0.0.0/0",
            gateway_id=internet_gateway.id,
            opts=child,
        )

        public_subnets: list[aws.ec2.Subnet] = []
        private_subnets: list[aws.ec2.Subnet] = []
        for index, (zone, private_cidr, public_cidr) in enumerate(
            zip(zones, private_cidrs, public_cidrs, strict=True)
        ):
            public = aws.ec2.Subnet(
                f"{name}-public-{index}",
                vpc_id=vpc.id,
                availability_zone=zone,
                cidr_block=public_cidr,
                # Nothing here should get a public address by accident: NAT gateways use Elastic
                # IPs and load balancers get their own.
                map_public_ip_on_launch=False,
                tags=tags(f"public-{zone}", {**cluster_tag, "kubernetes.io/role/elb": "1"}),
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-public-{index}",
                subnet_id=public.id,
                route_table_id=public_routes.id,
                opts=child,
            )
            private = aws.ec2.Subnet(
                f"{name}-private-{index}",
                vpc_id=vpc.id,
                availability_zone=zone,
                cidr_block=private_cidr,
                map_public_ip_on_launch=False,
                tags=tags(
                    f"private-{zone}", {**cluster_tag, "kubernetes.io/role/internal-elb": "1"}
                ),
                opts=child,
            )
            public_subnets.append(public)
            private_subnets.append(private)

        nat_count = len(zones) if args.nat_gateway_mode == NAT_PER_AZ else 1
        nat_gateways: list[aws.ec2.NatGateway] = []
        for index in range(nat_count):
            address = aws.ec2.Eip(
                f"{name}-nat-{index}", domain="vpc", tags=tags(f"nat-{index}"), opts=child
            )
            nat_gateways.append(
                aws.ec2.NatGateway(
                    f"{name}-nat-{index}",
                    allocation_id=address.id,
                    subnet_id=public_subnets[index].id,
                    tags=tags(f"nat-{zones[index]}"),
                    # A NAT gateway created before the VPC has an internet gateway has no egress.
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[internet_gateway]),
                )
            )

        # One private route table per AZ even with a single NAT gateway: switching natGateways
        # later then only changes routes, never subnet associations.
        for index, (zone, private) in enumerate(zip(zones, private_subnets, strict=True)):
            routes = aws.ec2.RouteTable(
                f"{name}-private-rt-{index}",
                vpc_id=vpc.id,
                tags=tags(f"private-{zone}"),
                opts=child,
            )
            aws.ec2.Route(
                f"{name}-private-default-{index}",
                route_table_id=routes.id,
                destination_cidr_block="0.0.0.0/0",
                nat_gateway_id=nat_gateways[index % nat_count].id,
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-private-{index}",
                subnet_id=private.id,
                route_table_id=routes.id,
                opts=child,
            )

        if args.flow_logs:
            self._flow_logs(name, args, vpc, tags("flow-logs"))

        self.vpc_id = vpc.id
        self.public_subnet_ids = pulumi.Output.all(*[s.id for s in public_subnets])
        self.private_subnet_ids = pulumi.Output.all(*[s.id for s in private_subnets])
        self.register_outputs(
            {
                "vpc_id": self.vpc_id,
                "public_subnet_ids": self.public_subnet_ids,
                "private_subnet_ids": self.private_subnet_ids,
            }
        )

    def _first_zones(self, count: int) -> list[str]:
        # Opt-in zones (Local Zones, Wavelength) lack the services EKS nodes need; skip them, and
        # the zones EKS refuses cluster subnets in. Those are zone IDs: which *name* (us-east-1a)
        # maps to them differs per account, so they are excluded by ID.
        available = aws.get_availability_zones(
            state="available",
            exclude_zone_ids=list(EKS_UNSUPPORTED_ZONE_IDS),
            filters=[
                aws.GetAvailabilityZonesFilterArgs(
                    name="opt-in-status", values=["opt-in-not-required"]
                )
            ],
            opts=pulumi.InvokeOptions(parent=self),
        )
        if len(available.names) < count:
            raise ValueError(
                f"availabilityZoneCount is {count} but the region has only "
                f"{len(available.names)} available zones EKS accepts: {', '.join(available.names)}"
            )
        return list(available.names[:count])

    def _flow_logs(
        self, name: str, args: NetworkArgs, vpc: aws.ec2.Vpc, tags: dict[str, str]
    ) -> None:
        child = pulumi.ResourceOptions(parent=self)
        group_name = f"/aws/vpc/{args.cluster_name}/flow-logs"
        key = customer_managed_key(
            f"{name}-flow-logs-key",
            description=f"VPC flow logs of {args.cluster_name}",
            policy=json.dumps(
                log_group_key_policy(args.account_id, args.partition, args.region, group_name)
            ),
            tags=tags,
            parent=self,
        )
        group = aws.cloudwatch.LogGroup(
            f"{name}-flow-logs",
            name=group_name,
            kms_key_id=key.arn,
            retention_in_days=args.flow_log_retention_days,
            tags=tags,
            opts=child,
        )
        role = aws.iam.Role(
            f"{name}-flow-logs",
            description=f"VPC Flow Logs delivery for {args.cluster_name}",
            assume_role_policy=json.dumps(
                flow_log_trust_policy(args.account_id, args.partition, args.region)
            ),
            tags=tags,
            opts=child,
        )
        delivery = aws.iam.RolePolicy(
            f"{name}-flow-logs",
            role=role.id,
            policy=group.arn.apply(lambda arn: json.dumps(flow_log_delivery_policy(arn))),
            opts=child,
        )
        aws.ec2.FlowLog(
            f"{name}-flow-logs",
            vpc_id=vpc.id,
            traffic_type="ALL",
            log_destination_type="cloud-watch-logs",
            log_destination=group.arn,
            iam_role_arn=role.arn,
            # One-minute aggregation: an incident responder reads connections near real time.
            max_aggregation_interval=60,
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[delivery]),
        )
