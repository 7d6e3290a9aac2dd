"""``python -m handlers``: the command line (``replay``, ``redrive``, ``demo``). Not shipped in the
Lambda."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m handlers",
        description="Falco alerts -> AWS Security Hub findings, outside the Lambda.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    replay = commands.add_parser(
        "replay",
        help="import Falco alerts from a JSON-lines file (or print them with --dry-run)",
        description=(
            "Read Falco alerts, one JSON document per line (raw Falco JSON or any Fluent Bit "
            "record shape), and import them as Security Hub findings exactly as the Lambda "
            "would. Use --dry-run to test custom Falco rules before deploying; without it, to "
            "backfill. Exit status: 0 all imported, 1 some finding failed (or, with --strict, "
            "some line was not a Falco alert), 2 usage error."
        ),
    )
    replay.add_argument("source", metavar="FILE", help="JSON-lines file, or - for stdin")
    replay.add_argument(
        "--dry-run",
        action="store_true",
        help="print the findings as JSON lines on stdout; no AWS calls, no credentials",
    )
    replay.add_argument("--region", help="Security Hub Region (default: AWS_REGION / profile)")
    replay.add_argument("--endpoint-url", help="AWS endpoint override (e.g. a local emulator)")
    replay.add_argument("--profile", help="AWS named profile for credentials")
    replay.add_argument(
        "--cluster-name", help="cluster for alerts whose record does not name one (CLUSTER_NAME)"
    )
    replay.add_argument(
        "--min-priority",
        default="Debug",
        help="skip alerts below this Falco priority, as MIN_PRIORITY does (default: Debug)",
    )
    replay.add_argument(
        "--account-id", help="account in the printed findings (--dry-run only; default zeros)"
    )
    replay.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: only when stderr is a terminal)",
    )
    replay.add_argument(
        "--strict", action="store_true", help="exit 1 when a line is not a Falco alert"
    )
    replay.add_argument(
        "--from-line",
        type=int,
        default=1,
        metavar="N",
        help="start at line N (resume an interrupted replay; it prints the N to use)",
    )

    redrive = commands.add_parser(
        "redrive",
        help="re-import the events in the Lambda's on-failure queue, deleting those that land",
        description=(
            "Read the Lambda's on-failure records from an SQS queue, run each original event "
            "(requestPayload) through the handler again, and delete a message only once all "
            "its findings are in Security Hub. Harmless to run twice. Exit status: 0 all "
            "redriven, 1 some message still failing (left in the queue), 2 usage error."
        ),
    )
    redrive.add_argument("--queue-url", required=True, help="the on-failure queue's URL")
    redrive.add_argument("--region", help="Region of the queue and of Security Hub")
    redrive.add_argument(
        "--dry-run", action="store_true", help="read and check the records; import nothing"
    )
    redrive.add_argument("--profile", help="AWS named profile for credentials")
    redrive.add_argument("--cluster-name", help="the function's CLUSTER_NAME (default: env)")
    redrive.add_argument("--min-priority", help="the function's MIN_PRIORITY (default: env)")
    redrive.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: only when stderr is a terminal)",
    )
    redrive.add_argument(
        "--verbose", action="store_true", help="the handler's JSON logs and metrics on stderr"
    )

    demo = commands.add_parser(
        "demo",
        help="replay the bundled alerts through the real handler into emulated Security Hub",
    )
    demo.add_argument(
        "--verbose", action="store_true", help="also show the handler's JSON logs and metrics"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except BrokenPipeError:
        # The reader went away (`... | head`): not an error worth a traceback. Point stdout at
        # devnull so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _run(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from handlers import demo

        return demo.main(verbose=args.verbose)

    if args.command == "redrive":
        return _redrive(args)

    from handlers import replay

    if args.account_id and not args.dry_run:
        print("replay: --account-id applies to --dry-run only", file=sys.stderr)
        return 2
    options = replay.ReplayOptions(
        source=args.source,
        dry_run=args.dry_run,
        region=args.region,
        endpoint_url=args.endpoint_url,
        profile=args.profile,
        cluster_name=args.cluster_name,
        min_priority=args.min_priority,
        account_id=args.account_id,
        progress=args.progress,
        strict=args.strict,
        from_line=max(1, args.from_line),
    )
    try:
        return replay.run(options, stdout=sys.stdout, stderr=sys.stderr)
    except replay.UsageError as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 2


def _redrive(args: argparse.Namespace) -> int:
    from handlers import redrive

    options = redrive.RedriveOptions(
        queue_url=args.queue_url,
        region=args.region,
        dry_run=args.dry_run,
        profile=args.profile,
        cluster_name=args.cluster_name,
        min_priority=args.min_priority,
        progress=args.progress,
        verbose=args.verbose,
    )
    try:
        return redrive.run(options, stdout=sys.stdout, stderr=sys.stderr)
    except redrive.UsageError as exc:
        print(f"redrive: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    # stdout may be a pipe the reader closes early (`demo --verbose | head`): the handler's log
    # lines then fail to write, which the logging module would report with a traceback each.
    logging.raiseExceptions = False
    sys.exit(main())
