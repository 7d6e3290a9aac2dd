"""What CI runs on: the stacks (one per Pulumi.<stack>.yaml, home region first) and the custom
Falco rules files they name. Used by .github/workflows/*.yml, so a new stack file is previewed
and deployed without editing a workflow.

    python policy/ci_stacks.py outputs      # all=/home=/linked= lines for $GITHUB_OUTPUT
    python policy/ci_stacks.py rules-files  # one custom rules file per line (may be none)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

PROJECT_DIR = Path(__file__).resolve().parent.parent


def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def stacks(project_dir: Path = PROJECT_DIR) -> list[dict[str, str]]:
    """[{stack, region, rulesFile}] for every stack file, the home region's stack first."""
    project = _load(project_dir / "Pulumi.yaml")
    name = project["name"]
    declared = project.get("config") or {}

    def setting(config: dict[str, Any], key: str) -> Any:
        return config.get(f"{name}:{key}", (declared.get(key) or {}).get("default"))

    found = []
    for path in sorted(project_dir.glob("Pulumi.*.yaml")):
        config = _load(path).get("config") or {}
        region = config.get("aws:region")
        if not isinstance(region, str) or not region:
            raise ValueError(f"{path.name}: aws:region is not set")
        found.append(
            {
                "stack": path.name.removeprefix("Pulumi.").removesuffix(".yaml"),
                "region": region,
                "home": setting(config, "homeRegion") == region,
                "rulesFile": setting(config, "falcoCustomRulesFile") or "",
            }
        )
    homes = [s for s in found if s["home"]]
    if len(homes) != 1:
        raise ValueError(f"expected one stack in the home region, found {len(homes)}")
    return [
        {k: v for k, v in s.items() if k != "home"}
        for s in homes + [s for s in found if not s["home"]]
    ]


def rules_files(project_dir: Path = PROJECT_DIR) -> list[str]:
    """The custom rules files the stacks name: relative paths inside the project, existing."""
    files = sorted({s["rulesFile"] for s in stacks(project_dir) if s["rulesFile"]})
    for file in files:
        resolved = (project_dir / file).resolve()
        if Path(file).is_absolute() or not resolved.is_relative_to(project_dir.resolve()):
            raise ValueError(f"falcoCustomRulesFile {file!r} is not inside the project")
        if not resolved.is_file():
            raise ValueError(f"falcoCustomRulesFile {file!r} does not exist")
    return files


def main(argv: list[str]) -> int:
    if argv == ["outputs"]:
        found = stacks()
        print(f"all={json.dumps(found)}")
        print(f"home={json.dumps(found[0])}")
        print(f"linked={json.dumps(found[1:])}")
        return 0
    if argv == ["rules-files"]:
        for file in rules_files():
            print(file)
        return 0
    print("usage: python policy/ci_stacks.py outputs|rules-files", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
