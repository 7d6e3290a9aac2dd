"""Falco alerts (shipped by Fluent Bit to CloudWatch Logs) become AWS Security Hub findings.

The Lambda entry point is ``handlers.ingest.handler``; ``python -m handlers`` is the command line.
Pure modules have no AWS client and no I/O; the shells do the I/O. Each module's docstring and
types are its contract:

  names.py           facts the Pulumi program and the Lambda share (product name, ARN formats)
  alerts.py          pure: subscription payload -> log events -> Falco alerts (or skips), times
  coalescing.py      pure: which alerts of a batch are one finding
  classification.py  pure: Falco priority and tags -> ASFF Severity and Types
  asff.py            pure: the finding's shape (TypedDicts), ASFF limits, its JSON encoding
  caching.py         pure: memoization bounded by the size of its keys
  findings.py        pure: Falco alert -> ASFF finding; filtering; coalesced findings
  securityhub.py     BatchImportFindings: chunking (100 / 240 KB / 6 MB), retries of failures,
                     streamed import, the retry quota refill, the time budget's worst case
  occurrences.py     repeats across invocations: behaviour key, window, DynamoDB counter
  shadow.py          rules tagged `shadow`: counted per rule (EMF), never imported
  ingest.py          the Lambda handler: thin shell, Powertools Logger and Metrics, time budget
  replay.py, redrive.py, demo.py, __main__.py
                     `python -m handlers replay|redrive|demo` (not in the Lambda)

The Lambda package holds exactly the modules components/findings_pipeline.py lists
(HANDLER_MODULES; a test checks that handlers.ingest imports nothing else from ``handlers``).
"""
