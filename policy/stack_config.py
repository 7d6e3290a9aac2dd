"""The pack's policy config for one stack, from that stack's own settings.

The opt-in for a public Kubernetes API endpoint open to 0.0.0.0/0 is a stack setting
(`allowPublicEndpointFromAnywhere`, declared in Pulumi.yaml). A policy pack does not see stack
config, so CI (and anyone previewing locally) hands it over as policy config:

    python policy/stack_config.py us-east-1 > policy-config.json
    pulumi preview --stack us-east-1 --policy-pack policy --policy-pack-config policy-config.json

Without that file the policy takes its default, false: the strict reading.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

PROJECT_DIR = Path(__file__).resolve().parent.parent
POLICY = "eks-public-endpoint-restricted"
SETTING = "allowPublicEndpointFromAnywhere"


def pack_config(project: Mapping[str, Any], stack: Mapping[str, Any]) -> dict[str, Any]:
    """Policy config from Pulumi.yaml (project) and Pulumi.<stack>.yaml (stack), both parsed."""
    name = project["name"]
    declared = (project.get("config") or {}).get(SETTING) or {}
    value = (stack.get("config") or {}).get(f"{name}:{SETTING}", declared.get("default", False))
    if not isinstance(value, bool):
        raise ValueError(f"{name}:{SETTING} must be true or false, not {value!r}")
    return {POLICY: {SETTING: value}}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python policy/stack_config.py <stack>", file=sys.stderr)
        return 2
    stack_file = PROJECT_DIR / f"Pulumi.{argv[0]}.yaml"
    if not stack_file.is_file():
        print(f"no stack file {stack_file.name}", file=sys.stderr)
        return 2
    project = yaml.safe_load((PROJECT_DIR / "Pulumi.yaml").read_text(encoding="utf-8"))
    stack = yaml.safe_load(stack_file.read_text(encoding="utf-8")) or {}
    print(json.dumps(pack_config(project, stack), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
