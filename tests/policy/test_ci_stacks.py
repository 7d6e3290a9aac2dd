"""The CI matrix comes from the stack files: every stack, the home region's first."""

from __future__ import annotations

from pathlib import Path

import pytest

from policy.ci_stacks import rules_files, stacks

PROJECT = """
name: demo
config:
  homeRegion: {default: us-east-1}
  falcoCustomRulesFile: {default: ""}
"""


def project(tmp_path: Path, stack_files: dict[str, str]) -> Path:
    (tmp_path / "Pulumi.yaml").write_text(PROJECT)
    for stack, body in stack_files.items():
        (tmp_path / f"Pulumi.{stack}.yaml").write_text(body)
    return tmp_path


def test_a_new_stack_file_is_a_new_matrix_entry_after_the_home_region(tmp_path: Path) -> None:
    root = project(
        tmp_path,
        {
            "ap-southeast-2": "config:\n  aws:region: ap-southeast-2\n",
            "us-east-1": "config:\n  aws:region: us-east-1\n",
            "eu-west-1": "config:\n  aws:region: eu-west-1\n  demo:falcoCustomRulesFile: r.yaml\n",
        },
    )
    (root / "r.yaml").write_text("- list: x\n  items: []\n")
    found = stacks(root)
    assert [s["stack"] for s in found] == ["us-east-1", "ap-southeast-2", "eu-west-1"]
    assert rules_files(root) == ["r.yaml"]


def test_the_repositorys_own_stacks() -> None:
    found = stacks()
    names = {
        p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in Path().glob("Pulumi.*.yaml")
    }
    assert {s["stack"] for s in found} == names


@pytest.mark.parametrize("path", ["../outside.yaml", "/etc/passwd", "missing.yaml"])
def test_a_rules_file_outside_the_project_or_missing_is_refused(tmp_path: Path, path: str) -> None:
    (tmp_path / "p").mkdir()
    stack = f"config:\n  aws:region: us-east-1\n  demo:falcoCustomRulesFile: {path}\n"
    root = project(tmp_path / "p", {"us-east-1": stack})
    (tmp_path / "outside.yaml").write_text("[]")
    with pytest.raises(ValueError, match="falcoCustomRulesFile"):
        rules_files(root)


def test_exactly_one_stack_must_be_the_home_region(tmp_path: Path) -> None:
    root = project(tmp_path, {"eu-west-1": "config:\n  aws:region: eu-west-1\n"})
    with pytest.raises(ValueError, match="home region"):
        stacks(root)
