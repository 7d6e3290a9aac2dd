"""The falco-securityhub policy pack: `pulumi preview --policy-pack policy` (policy/README.md).

Constructing PolicyPack starts the analyzer's gRPC server and blocks, so this file does nothing
else; the checks live in posture.py and are tested without it (tests/policy/).
"""

from pack import policies
from pulumi_policy import EnforcementLevel, PolicyPack

PolicyPack(
    name="falco-securityhub-posture",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=policies(),
)
