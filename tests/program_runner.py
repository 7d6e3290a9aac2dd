"""Run the real program (__main__.py) for one stack file under the mocks.

The Pulumi CLI hands a program its project defaults (Pulumi.yaml ``config:``) merged with the
stack file (``Pulumi.<stack>.yaml``), every value as text; ``stack_config`` does the same merge
and ``run_program`` runs ``__main__.py`` inside ``@pulumi.runtime.test``, so every declaration and
stack output has resolved when it returns. Tests assert on the returned ``ProgramRun`` afterwards,
never inside an ``apply``.

Behaviour is tested on the fixture stacks in tests/program/stacks/; the shipped stack files
(``REAL_STACK_FILES``, whatever a user has added or changed) are only run, with what a user must
fill in supplied by the test.
"""

from __future__ import annotations

import asyncio
import runpy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from conftest import ORGANIZATION, RecordingMocks, configure_pulumi_mocks
from pulumi.runtime import settings as pulumi_settings

from handlers.names import PROJECT

PROJECT_DIR = Path(__file__).resolve().parent.parent
FIXTURE_STACKS = Path(__file__).resolve().parent / "program" / "stacks"
HOME_STACK = FIXTURE_STACKS / "Pulumi.us-east-1.yaml"
LINKED_STACK = FIXTURE_STACKS / "Pulumi.eu-west-1.yaml"
REAL_STACK_FILES = sorted(PROJECT_DIR.glob("Pulumi.*.yaml"))
# A public range that is not a documentation range: what a user puts in publicAccessCidrs.
EGRESS_CIDR = "100.24.0.0/24"


def stack_name(stack_file: Path) -> str:
    return stack_file.name.removeprefix("Pulumi.").removesuffix(".yaml")


def stack_config(stack_file: Path) -> dict[str, Any]:
    """Full-key config as the CLI would pass it: Pulumi.yaml defaults, then the stack file."""
    project = yaml.safe_load((PROJECT_DIR / "Pulumi.yaml").read_text(encoding="utf-8"))
    config: dict[str, Any] = {
        f"{PROJECT}:{key}": declaration["default"]
        for key, declaration in (project.get("config") or {}).items()
        if isinstance(declaration, dict) and "default" in declaration
    }
    stack = yaml.safe_load(stack_file.read_text(encoding="utf-8"))
    for key, value in (stack.get("config") or {}).items():
        config[key if ":" in key else f"{PROJECT}:{key}"] = value
    return config


def record_dependencies() -> dict[str, set[str]]:
    """Resource -> names of the resources it waits for, as the engine would see them.

    ``depends_on`` never reaches the mocks' ``new_resource``; every RegisterResource request
    carries it (explicit ``depends_on`` plus the implicit ones from inputs), so wrap the mock
    monitor's RegisterResource for the current test. Keys: the logical name (resources of
    different types sharing a name are merged there) and ``"<type>::<name>"`` (exact).
    """
    dependencies: dict[str, set[str]] = {}
    monitor = pulumi_settings.get_monitor()
    register = monitor.RegisterResource

    def recording_register(request: Any) -> Any:
        waits_for = {urn.split("::")[-1] for urn in request.dependencies}
        dependencies[f"{request.type}::{request.name}"] = waits_for
        dependencies.setdefault(request.name, set()).update(waits_for)
        return register(request)

    monitor.RegisterResource = recording_register
    return dependencies


@dataclass
class ProgramRun:
    """What one run of the program declared and exported."""

    mocks: RecordingMocks
    config: dict[str, Any]
    outputs: dict[str, Any] = field(default_factory=dict)
    secret_outputs: set[str] = field(default_factory=set)
    dependencies: dict[str, set[str]] = field(default_factory=dict)


def home_stack_exports(config: dict[str, Any]) -> dict[str, Any]:
    """What the home region's stack exports for linked stacks, given the same settings."""
    return {
        "homeRegion": config.get(f"{PROJECT}:homeRegion", "us-east-1"),
        "linkedRegions": list(config.get(f"{PROJECT}:linkedRegions", [])),
    }


def run_program(
    stack: Path | str,
    config_overrides: dict[str, Any] | None = None,
    *,
    home_exports: dict[str, Any] | None = None,
    prepare: Callable[[RecordingMocks], None] | None = None,
    config: dict[str, Any] | None = None,
) -> ProgramRun:
    """Run the program for a stack file, a shipped stack by name, or a stack name whose whole
    ``config`` is given (a stack that has no file here). A linked stack's StackReference to the
    home stack answers ``home_exports`` (default: what a home stack with the same settings
    exports); ``prepare`` adds what exists before the run (an existing cluster, access entries).
    """
    name = stack_name(stack) if isinstance(stack, Path) else stack
    if config is None:
        # A stack name without a config: the project's own (shipped) stack file of that name.
        config = stack_config(
            stack if isinstance(stack, Path) else PROJECT_DIR / f"Pulumi.{stack}.yaml"
        )
    config = {**config, **(config_overrides or {})}
    mocks = configure_pulumi_mocks(stack=name, region=config["aws:region"], config=config)
    home = config.get(f"{PROJECT}:homeRegion", "us-east-1")
    mocks.stack_outputs[f"{ORGANIZATION}/{PROJECT}/{home}"] = (
        home_stack_exports(config) if home_exports is None else home_exports
    )
    if prepare:
        prepare(mocks)
    run = ProgramRun(mocks=mocks, config=config, dependencies=record_dependencies())

    async def collect_outputs() -> None:
        stack = pulumi.runtime.get_root_resource()
        assert stack is not None, "the program ran without a root stack"
        for name, value in dict(stack.outputs).items():  # type: ignore[attr-defined]
            output = pulumi.Output.from_input(value)
            run.outputs[name] = await output.future()
            if await output.is_secret():
                run.secret_outputs.add(name)

    @pulumi.runtime.test
    def program() -> Any:
        runpy.run_path(str(PROJECT_DIR / "__main__.py"), run_name="__main__")
        return asyncio.ensure_future(collect_outputs())

    try:
        program()
    finally:
        pulumi.runtime.set_all_config({})
    return run
