"""The customer-managed KMS keys of this program: how each is declared, and the key-policy
statements they share.

Each component owns its key and its key policy; what they have in common is written once so it
cannot drift apart between keys: every key rotates and waits 30 days before deletion, the account
root keeps it manageable, CloudWatch Logs may use it only for named log groups, and DynamoDB only
as its tables' key. In a key policy, ``"Resource": "*"`` means "this key".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pulumi
import pulumi_aws as aws

from handlers.names import log_group_arn

# The longest AWS allows: time to notice and cancel a deletion that would make data unreadable.
DELETION_WINDOW_DAYS = 30


def customer_managed_key(
    name: str,
    *,
    description: str,
    policy: pulumi.Input[str],
    tags: dict[str, str],
    parent: pulumi.Resource,
    alias: str | None = None,
) -> aws.kms.Key:
    """A rotating key named ``name`` (and ``<name>-alias`` -> ``alias/<alias>``, when given)."""
    key = aws.kms.Key(
        name,
        description=description,
        enable_key_rotation=True,
        deletion_window_in_days=DELETION_WINDOW_DAYS,
        policy=policy,
        tags=tags,
        opts=pulumi.ResourceOptions(parent=parent),
    )
    if alias is not None:
        aws.kms.Alias(
            f"{name}-alias",
            name=f"alias/{alias}",
            target_key_id=key.key_id,
            opts=pulumi.ResourceOptions(parent=parent),
        )
    return key


# What CloudWatch Logs needs on a customer-managed key to encrypt a log group with it.
CLOUDWATCH_LOGS_KEY_ACTIONS = (
    "kms:Encrypt*",
    "kms:Decrypt*",
    "kms:ReEncrypt*",
    "kms:GenerateDataKey*",
    "kms:Describe*",
)


def account_root_statement(partition: str, account_id: str, sid: str) -> dict[str, Any]:
    """The account root administers the key, as in AWS's default key policy: the key can never
    become unmanageable, and IAM policies in this account decide who else may use it."""
    return {
        "Sid": sid,
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:{partition}:iam::{account_id}:root"},
        "Action": "kms:*",
        "Resource": "*",
    }


def cloudwatch_logs_statement(
    partition: str, region: str, account_id: str, log_group_names: Sequence[str], sid: str
) -> dict[str, Any]:
    """CloudWatch Logs in this region may use the key only for the named log groups.

    The encryption-context condition names each group's exact ARN, so no other log group, in this
    or any other account, can use the key.
    """
    arns = [log_group_arn(partition, region, account_id, name) for name in log_group_names]
    return {
        "Sid": sid,
        "Effect": "Allow",
        "Principal": {"Service": f"logs.{region}.amazonaws.com"},
        "Action": list(CLOUDWATCH_LOGS_KEY_ACTIONS),
        "Resource": "*",
        "Condition": {
            "ArnEquals": {"kms:EncryptionContext:aws:logs:arn": arns[0] if len(arns) == 1 else arns}
        },
    }


def dynamodb_describes_key_statement() -> dict[str, Any]:
    """DynamoDB may describe the key, as AWS documents for tables with a customer managed key."""
    return {
        "Sid": "DynamoDBDescribesTheKey",
        "Effect": "Allow",
        "Principal": {"Service": "dynamodb.amazonaws.com"},
        "Action": ["kms:Describe*", "kms:Get*", "kms:List*"],
        "Resource": "*",
    }


def table_key_use_statement(sid: str, region: str, key_arn: str) -> dict[str, Any]:
    """For a role's policy: use the table's key, and only through DynamoDB in this region."""
    return {
        "Sid": sid,
        "Effect": "Allow",
        "Action": ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey*", "kms:DescribeKey"],
        "Resource": key_arn,
        "Condition": {"StringEquals": {"kms:ViaService": f"dynamodb.{region}.amazonaws.com"}},
    }
