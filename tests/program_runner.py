"""Run the real program (__main__.py) for one stack, from its real stack file, under the mocks.

The Pulumi CLI hands a program its project defaults (Pulumi.yaml ``config:``) merged with the
stack file (``Pulumi.<stack>.yaml``); ``stack_config`` does the same merge, and ``run_program``
runs ``__main__.py`` inside ``@pulumi.runtime.test`` so every declaration and stack output has
resolved when it returns. Tests assert on the returned ``ProgramRun`` afterwards, never inside an
``apply``.
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

PROJECT_DIR = Path(__file__).resolve().parent.parent
PROJECT = "falco-securityhub"
STACKS = ("us-east-1", "eu-west-1")


def stack_config(stack_name: str) -> dict[str, Any]:
    """Full-key config as the CLI would pass it: Pulumi.yaml defaults, then the stack file."""
    project = yaml.safe_load((PROJECT_DIR / "Pulumi.yaml").read_text(encoding="utf-8"))
    config: dict[str, Any] = {
        f"{PROJECT}:{key}": declaration["default"]
        for key, declaration in (project.get("config") or {}).items()
        if isinstance(declaration, dict) and "default" in declaration
    }
    stack_file = PROJECT_DIR / f"Pulumi.{stack_name}.yaml"
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
    stack_name: str,
    config_overrides: dict[str, Any] | None = None,
    *,
    home_exports: dict[str, Any] | None = None,
    prepare: Callable[[RecordingMocks], None] | None = None,
    config: dict[str, Any] | None = None,
) -> ProgramRun:
    """Run the program for ``stack_name``. A linked stack's StackReference to the home stack
    answers ``home_exports`` (default: what a home stack with the same settings exports);
    ``prepare`` adds what exists before the run (an existing cluster, access entries);
    ``config`` replaces the stack's files (a stack that has no file here)."""
    config = {
        **(stack_config(stack_name) if config is None else config),
        **(config_overrides or {}),
    }
    mocks = configure_pulumi_mocks(stack=stack_name, region=config["aws:region"], config=config)
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
