"""RegionalHub: Security Hub CSPM enabled in this stack's region.

Every region stack has one: BatchImportFindings fails in a region where Security Hub is not
enabled, and a finding aggregator only links regions where it is. This is the CSPM (ASFF) service,
`aws.securityhub.Account`, not the OCSF-based `AccountV2`: custom findings still go through
BatchImportFindings, which only the CSPM service accepts.

Already enabled in the account (by another team, the console, or Organizations auto-enable)?
Enabling again fails with "already subscribed"; adopt the existing hub into the stack instead:

    pulumi import aws:securityhub/account:Account <name>-account <account-id>

(docs/security-hub.md, "Security Hub already enabled").
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

COMPONENT_TYPE = "falco-securityhub:index:RegionalHub"


@dataclass
class RegionalHubArgs:
    # The hub is enabled in the stack's region (its default provider's); nothing else to choose.
    # FSBP and CIS bill per check and are often managed organization-wide; the stack setting says.
    enable_default_standards: bool


class RegionalHub(pulumi.ComponentResource):
    """Security Hub CSPM, enabled in the stack's region."""

    account: aws.securityhub.Account
    hub_arn: pulumi.Output[str]

    def __init__(
        self, name: str, args: RegionalHubArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(COMPONENT_TYPE, name, None, opts)
        self.account = aws.securityhub.Account(
            f"{name}-account",
            enable_default_standards=args.enable_default_standards,
            # New controls of the enabled standards are turned on as AWS adds them.
            auto_enable_controls=True,
            # control_finding_generator is left to the account: AWS already defaults new accounts
            # to consolidated findings (SECURITY_CONTROL), and in an organization only the
            # administrator account may change it, so setting it here would fail in members.
            opts=pulumi.ResourceOptions(
                parent=self,
                # Disabling Security Hub deletes every finding in the region, including other
                # teams' and the standards' results. `pulumi destroy` therefore leaves it enabled;
                # disable it by hand if that is really meant (docs/security-hub.md).
                retain_on_delete=True,
            ),
        )
        self.hub_arn = self.account.arn
        self.register_outputs({"hub_arn": self.hub_arn})
