"""The posture's checks (posture.py) as CrossGuard policies. Imported only by the pack's
__main__.py, in the pack's own environment (requirements.txt here), never by the tests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from posture import (
    RESOURCE_POLICIES,
    STACK_POLICIES,
    Enforcement,
    Resource,
    ResourcePolicy,
    StackPolicy,
)
from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

LEVELS = {
    Enforcement.MANDATORY: EnforcementLevel.MANDATORY,
    Enforcement.ADVISORY: EnforcementLevel.ADVISORY,
}


def plain(value: Any) -> Any:
    """pulumi_policy's unknown-checking proxies as plain dicts and lists; unknown values stay as
    the engine's sentinel strings, which the checks recognise (posture.is_unknown)."""
    if isinstance(value, Mapping):
        target = value.get("__target", value)
        return {key: plain(target[key]) for key in target}
    if isinstance(value, list | tuple) or type(value).__name__ == "_ListProxy":
        target = value["__target"] if type(value).__name__ == "_ListProxy" else value
        return [plain(item) for item in target]
    return value


def resource_policy(policy: ResourcePolicy) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        props = plain(args.props)
        for message in policy.check(args.resource_type, props, dict(args.get_config())):
            report_violation(message, None)

    schema = (
        PolicyConfigSchema(properties=dict(policy.config_schema)) if policy.config_schema else None
    )
    return ResourceValidationPolicy(
        name=policy.name,
        description=policy.description,
        enforcement_level=LEVELS[policy.enforcement],
        validate=validate,
        config_schema=schema,
    )


def stack_policy(policy: StackPolicy) -> StackValidationPolicy:
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        resources = [
            Resource(
                type=r.resource_type,
                name=r.name,
                props=plain(r.props),
                urn=r.urn,
                property_dependencies={
                    key: [dep.urn for dep in deps] for key, deps in r.property_dependencies.items()
                },
            )
            for r in args.resources
        ]
        for message, urn in policy.check(resources, dict(args.get_config())):
            report_violation(message, urn or None)

    return StackValidationPolicy(
        name=policy.name,
        description=policy.description,
        enforcement_level=LEVELS[policy.enforcement],
        validate=validate,
    )


def policies() -> list[Policy]:
    return [
        *(resource_policy(p) for p in RESOURCE_POLICIES),
        *(stack_policy(p) for p in STACK_POLICIES),
    ]
