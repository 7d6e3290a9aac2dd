"""The home stack, as a linked region's stack sees it: one source of truth for aggregation.

Every region is its own stack, named after its region (`Pulumi.<region>.yaml`); the home region's
stack deploys the finding aggregator and exports `homeRegion` and `linkedRegions` (empty: the
aggregator links every region). A linked stack reads those exports through a StackReference to
`<organization>/<project>/<homeRegion>` (`pulumi.get_organization()`, which is `organization` on
a self-managed backend, and `pulumi.get_project()`) and refuses to run when

- the home stack names another home region (two stacks would each think they aggregate), or
- the home stack restricts aggregation to a list that does not hold this stack's region (its
  findings would never reach the home region, silently).

The error says what to change where. The check is an Output the program exports (`homeStack`),
so it runs during `pulumi preview`, where stack references already resolve.
"""

from __future__ import annotations

from collections.abc import Sequence

import pulumi

# The home stack's exports this module reads; __main__.py writes them under these names.
HOME_REGION_OUTPUT = "homeRegion"
LINKED_REGIONS_OUTPUT = "linkedRegions"


class HomeStackMismatch(pulumi.RunError):
    """This stack and the home stack disagree; RunError prints without a stack trace."""


def home_stack_name(organization: str, project: str, home_region: str) -> str:
    """The fully qualified name of the home region's stack (stacks are named after regions)."""
    return f"{organization}/{project}/{home_region}"


def home_stack_problem(
    stack_name: str,
    region: str,
    home_region: str,
    home_stack: str,
    exported_home_region: object,
    exported_linked_regions: object,
) -> str | None:
    """What is wrong between this linked stack and the home stack's exports, or None."""
    if exported_home_region is None:
        return (
            f"stack {stack_name} ({region}) aggregates into homeRegion {home_region}, but the "
            f"home stack {home_stack} exports no {HOME_REGION_OUTPUT}: deploy the home stack "
            f"first (`pulumi up --stack {home_region}`), or fix homeRegion (Pulumi.yaml, or "
            f"Pulumi.{stack_name}.yaml if it overrides it)."
        )
    if exported_home_region != home_region:
        return (
            f"stack {stack_name} says homeRegion is {home_region}, but the stack {home_stack} "
            f"says {exported_home_region}: every stack must name the same home region. Set "
            f"homeRegion once in Pulumi.yaml and remove it from the stack files that override it."
        )
    linked = list(exported_linked_regions or [])
    if linked and region not in linked:
        return (
            f"the home stack {home_stack} aggregates only {', '.join(linked)} (its "
            f"linkedRegions), so findings from {region} (stack {stack_name}) would never reach "
            f"{home_region}. Add {region} to linkedRegions where the home stack reads it "
            f"(Pulumi.yaml, or Pulumi.{home_region}.yaml if it overrides it) and run "
            f"`pulumi up --stack {home_region}` first; or set linkedRegions to [] to link "
            f"every region."
        )
    return None


def check_against_home_stack(stack_name: str, region: str, home_region: str) -> pulumi.Output[str]:
    """Read the home stack's exports; the Output fails with HomeStackMismatch when they disagree.

    Resolves to the home stack's name. Export it (or depend on it) so the check is awaited.
    """
    name = home_stack_name(pulumi.get_organization(), pulumi.get_project(), home_region)
    reference = pulumi.StackReference(name)

    def check(exports: Sequence[object]) -> str:
        problem = home_stack_problem(stack_name, region, home_region, name, *exports)
        if problem:
            raise HomeStackMismatch(problem)
        return name

    return pulumi.Output.all(
        reference.get_output(HOME_REGION_OUTPUT), reference.get_output(LINKED_REGIONS_OUTPUT)
    ).apply(check)
