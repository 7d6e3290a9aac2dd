"""StormState: the DynamoDB table that counts repeats of one behaviour across invocations
(handlers/occurrences.py, docs/storms.md).

On-demand billing, TTL on ``expires_at`` (15 days past each window, longer than the on-failure
queue keeps events, so a redrive still finds what was counted), encrypted with this component's
own KMS key, which only DynamoDB, on behalf of the ingest role, may use. The ingest role gets
exactly what handlers/occurrences.py does: PutItem (delivery items) and UpdateItem (counters) on
this table, touching only the store's attributes. No point-in-time recovery: the table holds at
most a few windows of counters; losing it restarts counts, it loses no alert.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from components.key_policy import (
    account_root_statement,
    customer_managed_key,
    dynamodb_describes_key_statement,
    table_key_use_statement,
)
from handlers import occurrences
from handlers.names import dynamodb_table_arn, occurrences_table_name

COMPONENT_TYPE = "falco-securityhub:index:StormState"


@dataclass
class StormStateArgs:
    cluster_name: str
    region: str
    account_id: str
    partition: str
    ingest_role_name: pulumi.Input[str]
    tags: dict[str, str] = field(default_factory=dict)


def table_arn(partition: str, region: str, account_id: str, cluster_name: str) -> str:
    return dynamodb_table_arn(partition, region, account_id, occurrences_table_name(cluster_name))


def key_policy(partition: str, account_id: str) -> dict[str, Any]:
    """The account root (IAM policies grant use: the ingest role, through DynamoDB only), and
    DynamoDB describing the key, as AWS documents for tables with a customer managed key."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            account_root_statement(partition, account_id, "AccountRootManagesKeyAndDelegatesToIam"),
            dynamodb_describes_key_statement(),
        ],
    }


def ingest_policy(
    partition: str, region: str, account_id: str, cluster_name: str, key_arn: str
) -> dict[str, Any]:
    """What the ingest Lambda needs for storm counting (TransactWriteItems is authorised as its
    Put and Update items), and nothing else: no reads, deletes or scans."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "CountBehaviourOccurrences",
                "Effect": "Allow",
                "Action": ["dynamodb:PutItem", "dynamodb:UpdateItem"],
                "Resource": table_arn(partition, region, account_id, cluster_name),
                "Condition": {
                    "ForAllValues:StringEquals": {
                        "dynamodb:Attributes": list(occurrences.ATTRIBUTES)
                    }
                },
            },
            table_key_use_statement("UseTheTableKeyThroughDynamoDB", region, key_arn),
        ],
    }


class StormState(pulumi.ComponentResource):
    """The occurrence table, its key, and the ingest role's access to both."""

    table_name: pulumi.Output[str]
    table_arn: pulumi.Output[str]
    kms_key_arn: pulumi.Output[str]

    def __init__(
        self, name: str, args: StormStateArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(COMPONENT_TYPE, name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        table_name = occurrences_table_name(args.cluster_name)
        self._key = customer_managed_key(
            f"{name}-key",
            description=f"Falco alert-storm counters of {args.cluster_name}",
            policy=json.dumps(key_policy(args.partition, args.account_id), sort_keys=True),
            tags=args.tags,
            parent=self,
            alias=table_name,
        )
        self._table = aws.dynamodb.Table(
            f"{name}-table",
            name=table_name,
            billing_mode="PAY_PER_REQUEST",
            hash_key=occurrences.ID,
            attributes=[aws.dynamodb.TableAttributeArgs(name=occurrences.ID, type="S")],
            ttl=aws.dynamodb.TableTtlArgs(attribute_name=occurrences.EXPIRES_AT, enabled=True),
            server_side_encryption=aws.dynamodb.TableServerSideEncryptionArgs(
                enabled=True, kms_key_arn=self._key.arn
            ),
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self._key]),
        )
        self._policy = aws.iam.RolePolicy(
            f"{name}-ingest",
            role=args.ingest_role_name,
            policy=self._key.arn.apply(
                lambda key_arn: json.dumps(
                    ingest_policy(
                        args.partition, args.region, args.account_id, args.cluster_name, key_arn
                    ),
                    sort_keys=True,
                )
            ),
            opts=child,
        )
        self.table_name = self._table.name
        self.table_arn = self._table.arn
        self.kms_key_arn = self._key.arn
        self.register_outputs(
            {
                "table_name": self.table_name,
                "table_arn": self.table_arn,
                "kms_key_arn": self.kms_key_arn,
            }
        )
