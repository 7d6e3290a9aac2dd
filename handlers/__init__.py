"""Falco alerts (shipped by Fluent Bit to CloudWatch Logs) become AWS Security Hub findings.

The Lambda entry point is ``handlers.ingest.handler``; ``python -m handlers`` is the command line.
See docs/handler-contract.md for how the modules fit together.
"""
