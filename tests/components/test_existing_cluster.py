"""ExistingCluster: a cluster found by name, a kubeconfig without credentials, nothing declared."""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pytest
from conftest import ACCOUNT_ID, RecordingMocks

from components.existing_cluster import (
    ExistingCluster,
    ExistingClusterArgs,
    ExistingClusterError,
    exec_kubeconfig,
)

NAME = "platform-shared"


def declare(mocks: RecordingMocks, **overrides: Any) -> dict[str, Any]:
    resolved: dict[str, Any] = {}

    @pulumi.runtime.test
    def run() -> pulumi.Output[Any]:
        values: dict[str, Any] = {
            "cluster_name": NAME,
            "region": mocks.region,
            "account_id": ACCOUNT_ID,
            "partition": "aws",
            "deployer_arn": f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/platform-deployer/ci-run-7",
        }
        values.update(overrides)
        cluster = ExistingCluster("existing", ExistingClusterArgs(**values))
        resolved["dependencies"] = cluster.runtime_dependencies
        return pulumi.Output.all(cluster.cluster_arn, cluster.kubeconfig_json).apply(
            lambda v: resolved.update(arn=v[0], kubeconfig=json.loads(v[1]))
        )

    run()
    return resolved


def test_kubeconfig_user_is_aws_eks_get_token_with_the_providers_profile() -> None:
    config = exec_kubeconfig(NAME, "arn:c", "eu-west-1", "https://e", "Q0E=", aws_profile="sec")
    [user] = config["users"]
    assert user["user"]["exec"]["env"] == [{"name": "AWS_PROFILE", "value": "sec"}]
    assert "token" not in json.dumps(config["users"]).replace("get-token", "")
    assert config["current-context"] == "arn:c"


def test_existing_cluster_declares_nothing_but_reads_arn_and_endpoint(
    pulumi_mocks: RecordingMocks,
) -> None:
    pulumi_mocks.add_eks_cluster(NAME)
    resolved = declare(pulumi_mocks)
    custom = [r for r in pulumi_mocks.resources if r.custom]
    assert custom == []
    assert resolved["arn"] == f"arn:aws:eks:us-east-1:{ACCOUNT_ID}:cluster/{NAME}"
    assert resolved["kubeconfig"]["clusters"][0]["cluster"]["server"].startswith("https://")
    assert resolved["dependencies"] == []


def test_access_entry_is_looked_up_for_the_role_behind_the_session(
    pulumi_mocks: RecordingMocks,
) -> None:
    pulumi_mocks.add_eks_cluster(NAME, authentication_mode="API")
    role = f"arn:aws:iam::{ACCOUNT_ID}:role/platform-deployer"
    pulumi_mocks.access_entries.add((NAME, role))
    declare(pulumi_mocks)
    lookups = [a for token, a in pulumi_mocks.calls if token.endswith("getAccessEntry")]
    assert [a["principalArn"] for a in lookups] == [role]


def test_config_map_clusters_are_not_checked_for_access_entries(
    pulumi_mocks: RecordingMocks,
) -> None:
    # aws-auth may grant access there, which the EKS API cannot show.
    pulumi_mocks.add_eks_cluster(NAME, authentication_mode="CONFIG_MAP")
    declare(pulumi_mocks)
    assert not [t for t, _ in pulumi_mocks.calls if t.endswith("getAccessEntry")]


def test_private_only_endpoint_still_attaches(pulumi_mocks: RecordingMocks) -> None:
    pulumi_mocks.add_eks_cluster(NAME, public_endpoint=False)
    assert declare(pulumi_mocks)["arn"].endswith(NAME)


def test_unknown_cluster_fails_naming_cluster_and_region(pulumi_mocks: RecordingMocks) -> None:
    pulumi_mocks.add_eks_cluster("elsewhere")
    with pytest.raises(ExistingClusterError, match=f"'{NAME}' in us-east-1"):
        declare(pulumi_mocks)
