"""Settings for existing clusters and Identity Center triage (issue 8): parsed and checked."""

from __future__ import annotations

import json
from typing import Any

import pytest

from components.settings import Settings, SettingsError, load_settings

NS = "falco-securityhub"


def load(region: str = "eu-west-1", **overrides: Any) -> Settings:
    config = {"aws:region": region}
    config.update(
        {
            f"{NS}:{key}": value if isinstance(value, str) else json.dumps(value)
            for key, value in overrides.items()
        }
    )
    return load_settings(config, region)


def problems(**overrides: Any) -> list[str]:
    with pytest.raises(SettingsError) as raised:
        load(**overrides)
    return raised.value.problems


def test_existing_cluster_names_the_cluster_and_needs_no_endpoint_settings() -> None:
    settings = load(existingClusterName="payments-prod")
    assert settings.existing_cluster_name == "payments-prod"
    assert settings.cluster_name == "payments-prod"
    # The cluster keeps its own endpoint: no publicAccessCidrs to supply or check.
    assert settings.public_access_cidrs == ()
    assert not settings.install_pod_identity_agent


def test_without_existing_cluster_the_stack_creates_one() -> None:
    settings = load(publicAccessCidrs=["198.18.0.0/24"])
    assert settings.existing_cluster_name is None
    assert settings.cluster_name == "falco-eu-west-1"


def test_existing_cluster_with_a_cluster_name_too_is_refused() -> None:
    (problem,) = problems(existingClusterName="payments-prod", clusterName="falco-x")
    assert problem.startswith(f"{NS}:clusterName (Pulumi.eu-west-1.yaml)")


def test_pod_identity_agent_install_only_for_existing_clusters() -> None:
    assert load(existingClusterName="c1", installPodIdentityAgent="true").install_pod_identity_agent
    (problem,) = problems(installPodIdentityAgent="true", publicAccessCidrs=["198.18.0.0/24"])
    assert f"{NS}:installPodIdentityAgent" in problem


def test_malformed_existing_cluster_name_is_refused() -> None:
    (problem,) = problems(existingClusterName="bad name")
    assert f"{NS}:existingClusterName" in problem


def test_triage_permission_sets_parse_and_bad_names_are_refused() -> None:
    settings = load(existingClusterName="c1", triagePermissionSets=["SecurityAnalyst"])
    assert settings.triage_permission_sets == ("SecurityAnalyst",)
    found = problems(existingClusterName="c1", triagePermissionSets=["Sec Analyst", "A", "A"])
    (problem,) = found
    assert problem.startswith(f"{NS}:triagePermissionSets")
    assert "Sec Analyst: not a permission set name" in problem
    assert "duplicates: A" in problem


def test_empty_linked_regions_means_every_region() -> None:
    settings = load(existingClusterName="c1", linkedRegions=[])
    assert settings.linked_regions == ()
