"""The `ope` command: run, validate, simulate."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from ope.errors import OPEError

__all__ = ["main"]


def _run(args: argparse.Namespace) -> int:
    from ope.config import DEFAULT_CONFIG, PROJECT_ROOT, load_config
    from ope.report import write_outputs
    from ope.runner import primary_estimator, run_experiment
    from ope.summary_table import print_summary
    from ope.tracking import TrackingError, track_run, ui_command

    start = time.perf_counter()
    path = Path(args.config) if args.config else DEFAULT_CONFIG
    cfg = load_config(path, base=None if args.config else PROJECT_ROOT)
    data = dataclasses.replace(
        cfg.data,
        **{k: Path(v) for k, v in (("logs", args.logs), ("catalog", args.catalog), ("quarantine", args.quarantine)) if v},
    )
    tracking = dataclasses.replace(cfg.tracking, **({"uri": args.tracking_uri} if args.tracking_uri else {}),
                                   **({"enabled": False} if args.no_tracking else {}))
    output = dataclasses.replace(cfg.output, **({"dir": Path(args.out)} if args.out else {}))
    cfg = dataclasses.replace(cfg, data=data, tracking=tracking, output=output)
    run_name = args.run_name or cfg.output.run_name or f"{path.stem}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    if not run_name or Path(run_name).name != run_name or run_name in (".", ".."):
        raise OPEError(f"A run name must be a plain folder name (no '/' or '..'). Got {run_name!r}.")
    if (cfg.output.dir / run_name).exists() and not args.overwrite:
        raise OPEError(f"The run folder {cfg.output.dir / run_name} already exists; choose another --run-name or pass --overwrite.")
    result = run_experiment(cfg, show_progress=not args.quiet)
    paths = write_outputs(result, cfg.output.dir, run_name, overwrite=args.overwrite)
    info = json.loads(paths["summary"].read_text())
    print_summary(result, primary_estimator(cfg.evaluation.estimators))
    print(f"\nreport:    {paths['report']}")
    if cfg.tracking.enabled:
        try:
            run_id, uri = track_run(result, paths, info, run_name=run_name)
            print(f"mlflow:    run {run_id} in {uri}\n           open it with: {ui_command(cfg.tracking.uri)}")
        except TrackingError as exc:
            print(f"warning: {exc} The local report above is complete.", file=sys.stderr)
    print(f"wall time: {time.perf_counter() - start:.1f} s")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from ope.catalog import load_catalog
    from ope.validate import load_logs

    catalog = load_catalog(args.catalog)
    result = load_logs(args.logs, catalog, quarantine=args.quarantine)
    for problem in result.problems:
        print(f"set aside: {problem}", file=sys.stderr)
    if result.n_quarantined:
        print(f"{result.n_quarantined} of {result.n_input} rows written to {args.quarantine}", file=sys.stderr)
    print(json.dumps(result.summary(), indent=2))
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from ope.simulate import write_simulation

    logs, catalog = write_simulation(Path(args.out), rows=args.rows, days=args.days, seed=args.seed, logs_name=args.name)
    print(f"wrote {logs} and {catalog}")
    return 0


def parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    p = argparse.ArgumentParser(prog="ope", description="Offline counterfactual evaluation of LLM routing policies.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="evaluate the policies of a config on request logs and write a report")
    run.add_argument("config", nargs="?", help="TOML config (default: configs/quickstart.toml on the bundled sample)")
    run.add_argument("--logs", help="override [data] logs")
    run.add_argument("--catalog", help="override [data] catalog")
    run.add_argument("--quarantine", help="set invalid rows aside in this file instead of stopping")
    run.add_argument("--out", help="override [output] dir (default: reports)")
    run.add_argument("--run-name", help="name of the run and of its report folder")
    run.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLflow's local sqlite:///mlflow.db)")
    run.add_argument("--no-tracking", action="store_true", help="do not record the run in MLflow")
    run.add_argument("--overwrite", action="store_true", help="replace an existing run folder of the same name")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.set_defaults(func=_run)
    val = sub.add_parser("validate", help="check a log against the schema and catalog, print a summary")
    val.add_argument("logs", help="request log: parquet, csv or ndjson")
    val.add_argument("--catalog", required=True, help="endpoint catalog: csv or parquet")
    val.add_argument("--quarantine", help="write bad rows here and continue with the rest")
    val.set_defaults(func=_validate)
    sim = sub.add_parser("simulate", help="write a synthetic log and catalog with known ground truth")
    sim.add_argument("--rows", type=int, default=60_000)
    sim.add_argument("--days", type=int, default=7)
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--out", required=True)
    sim.add_argument("--name", default="requests.parquet", help="file name of the log")
    sim.set_defaults(func=_simulate)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; user errors print one clear message and exit 2."""
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (OPEError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
