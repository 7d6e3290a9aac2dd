"""KMS key-policy statements that every key of this program shares.

Each component owns its key policy; these are the two statements they have in common, written once
so that the scoping rules (the account root keeps the key manageable; CloudWatch Logs may use a key
only for named log groups) cannot drift apart between keys. In a key policy, ``"Resource": "*"``
means "this key".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from handlers.names import log_group_arn

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
