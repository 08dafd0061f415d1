"""``ope import FORMAT INPUT --out LOGS``: the command-line face of the importers.

Wire it in ``ope/cli.py`` with ``add_parser(sub)`` next to the other sub-commands.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["add_parser"]


def _import(args: argparse.Namespace) -> int:
    from ope.data.catalog import load_catalog
    from ope.errors import OPEError
    from ope.importers import import_logs, write_import

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise OPEError(f"{out} already exists; pass --overwrite to replace it (nothing is overwritten silently).")
    if out.resolve() == Path(args.input).resolve():
        raise OPEError(f"--out {out} is the input file itself; choose another path.")
    catalog = load_catalog(args.catalog) if args.catalog else None
    result = import_logs(args.format, args.input, catalog=catalog, router_config=args.router_config,
                         strict=args.strict, error_logs=args.error_logs)
    report_path = write_import(result, out, errors=args.errors)
    report = result.report
    for reason, count in sorted(report.malformed.items(), key=lambda kv: -kv[1]):
        print(f"set aside: {reason} — {count} record(s) (first: {', '.join(report.examples[reason])})", file=sys.stderr)
    for reason, count in report.skipped.items():
        print(f"skipped: {reason} — {count} record(s)", file=sys.stderr)
    if report.overlap is not None and report.overlap["deterministic"]:
        print(f"warning: {report.overlap['message']}", file=sys.stderr)
    print(json.dumps(report.to_dict(), indent=2))
    written = f"wrote {report.rows_written} of {report.rows_read} records to {out} (report: {report_path}"
    print(written + (f", set-aside records: {args.errors})" if args.errors else ")"), file=sys.stderr)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``ope import`` on the ``ope`` command's sub-parsers."""
    from ope.importers import FORMATS

    imp = subparsers.add_parser("import", help="convert a gateway log (LiteLLM, OpenRouter, OTel, BurstGPT) to the log schema")
    imp.add_argument("format", choices=sorted(FORMATS), help="format of INPUT")
    imp.add_argument("input", help="the export to read (CSV, JSON, NDJSON or OTLP JSON, by format)")
    imp.add_argument("--out", required=True, help="request log to write: .parquet, .csv or .ndjson (required)")
    imp.add_argument("--catalog", help="endpoint catalog: maps providers to arms, prices OTel/BurstGPT, eligibility "
                     "(default: none; arms stay provider/model as logged; otel and burstgpt need it)")
    imp.add_argument("--router-config", help="TOML/JSON: aliases and the logging router, for propensity reconstruction "
                     "(default: none; propensities stay null)")
    imp.add_argument("--errors", help="write malformed records here (where, reason, record); .ndjson, .csv or .parquet "
                     "(default: none; only counted)")
    imp.add_argument("--error-logs", help="litellm only: a LiteLLM_ErrorLogs export; its rows become failed requests "
                     "(default: none)")
    imp.add_argument("--strict", action="store_true", help="any malformed record is fatal (default: set aside and count)")
    imp.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    imp.set_defaults(func=_import)
