"""The `ope` command: run, tune, validate, import, simulate."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ope.errors import OPEError

if TYPE_CHECKING:
    from ope.config import ExperimentConfig

__all__ = ["main"]


def _resolve(args: argparse.Namespace, default: Path) -> tuple[ExperimentConfig, str]:
    """The config with command-line overrides applied, and a fresh run name (refusing to clobber a run folder)."""
    from ope.config import PROJECT_ROOT, load_config

    path = Path(args.config) if args.config else default
    cfg = load_config(path, base=None if args.config else PROJECT_ROOT)
    data = dataclasses.replace(
        cfg.data,
        **{k: Path(v) for k, v in (("logs", args.logs), ("catalog", args.catalog), ("quarantine", args.quarantine)) if v},
        **({"streaming": True} if args.streaming else {}),
        **({"engine": args.engine} if getattr(args, "engine", None) else {}),
        **({"ray_address": args.ray_address} if getattr(args, "ray_address", None) else {}),
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
    return cfg, run_name


def _server_problem(cfg: ExperimentConfig) -> str | None:
    """Why the configured tracking server cannot be reached, checked before the run (a few seconds at most)."""
    from ope.report.tracking import check_server

    problem = check_server(cfg.tracking.uri) if cfg.tracking.enabled else None
    if problem is not None:
        print(f"warning: {problem}; the run goes on and its report is written locally", file=sys.stderr)
    return problem


def _track(cfg: ExperimentConfig, report: Path, problem: str | None, track: Callable[[], tuple[str, str]]) -> None:
    """Record in MLflow if enabled; a failure (or a server found unreachable before the run) keeps the local outputs."""
    from ope.report.tracking import TrackingError, ui_command

    if not cfg.tracking.enabled:
        return
    try:
        if problem is not None:
            raise TrackingError(problem)
        run_id, uri = track()
        print(f"mlflow:    run {run_id} in {uri}\n           open it with: {ui_command(cfg.tracking.uri)}")
    except TrackingError as exc:
        print(f"tracking failed: {exc}, report written to {report}", file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    from ope.config import DEFAULT_CONFIG
    from ope.evaluation.plan import primary_estimator
    from ope.evaluation.run import run_experiment
    from ope.report.console import print_summary
    from ope.report.outputs import write_outputs
    from ope.report.tracking import track_run

    start, started = time.perf_counter(), time.time()
    cfg, run_name = _resolve(args, DEFAULT_CONFIG)
    problem = _server_problem(cfg)
    result = run_experiment(cfg, show_progress=not args.quiet)
    paths = write_outputs(result, cfg.output.dir, run_name, overwrite=args.overwrite)
    info = json.loads(paths["summary"].read_text())
    print_summary(result, primary_estimator(result.config.evaluation.estimators))
    print(f"\nreport:    {paths['report']}")
    _track(cfg, paths["report"], problem, lambda: track_run(result, paths, info, run_name=run_name, started=started))
    print(f"wall time: {time.perf_counter() - start:.1f} s")
    return 0


def _tune(args: argparse.Namespace) -> int:
    from ope.config import DEFAULT_TUNE_CONFIG
    from ope.evaluation.tune import run_tune
    from ope.report.console import print_tune_table
    from ope.report.tracking import track_tune
    from ope.report.tune_html import write_tune_outputs

    start, started = time.perf_counter(), time.time()
    if args.streaming or args.engine == "ray":
        raise OPEError("ope tune runs in memory: --streaming is for ope run, and so is --engine ray (tune on a sample of a large log "
                       "instead).")
    cfg, run_name = _resolve(args, DEFAULT_TUNE_CONFIG)
    problem = _server_problem(cfg)
    result = run_tune(cfg, show_progress=not args.quiet)
    paths = write_tune_outputs(result, cfg.output.dir, run_name, overwrite=args.overwrite)
    summary = json.loads(paths["summary"].read_text())
    print_tune_table(result)
    print(f"\n{result.verdict}\n\nreport:    {paths['report']}")
    _track(cfg, paths["report"], problem, lambda: track_tune(result, paths, summary, run_name=run_name, started=started))
    print(f"wall time: {time.perf_counter() - start:.1f} s")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from ope.data.catalog import load_catalog
    from ope.data.validate import load_logs

    catalog = load_catalog(args.catalog)
    result = load_logs(args.logs, catalog, quarantine=args.quarantine)
    for problem in result.problems:
        print(f"set aside: {problem}", file=sys.stderr)
    if result.n_quarantined:
        print(f"{result.n_quarantined} of {result.n_input} rows written to {args.quarantine}", file=sys.stderr)
    print(json.dumps(result.summary(), indent=2))
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from ope.simulate.partitioned import write_partitioned
    from ope.simulate.scenarios import write_scenario

    if args.partitioned:
        logs, catalog = write_partitioned(Path(args.out), rows=args.rows, days=args.days, seed=args.seed, scenario=args.scenario,
                                          partition_rows=args.partition_rows, logs_name=Path(args.name).stem)
        print(f"wrote {logs} and {catalog}")
        return 0
    logs, catalog = write_scenario(args.scenario, Path(args.out), rows=args.rows, days=args.days, seed=args.seed,
                                   logs_name=args.name)
    print(f"wrote {logs} and {catalog}")
    return 0


def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--logs", help="override [data] logs")
    p.add_argument("--catalog", help="override [data] catalog")
    p.add_argument("--quarantine", help="set invalid rows aside in this file instead of stopping")
    p.add_argument("--out", help="override [output] dir (default: reports)")
    p.add_argument("--run-name", help="name of the run and of its report folder")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLflow's local sqlite:///mlflow.db)")
    p.add_argument("--no-tracking", action="store_true", help="do not record the run in MLflow")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder of the same name")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--streaming", action="store_true", help="read the log in batches, in bounded memory (docs/large_logs.md)")
    p.add_argument("--engine", choices=("memory", "local", "ray"), help="where batches run: memory (the whole log at once), local (streamed batches), ray (pip install 'llm-ope[ray]'); default: memory unless the log is too big")
    p.add_argument("--ray-address", help="Ray cluster to join with --engine ray (e.g. ray://head:10001; default: RAY_ADDRESS or a local one)")


def parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    from ope import __version__

    p = argparse.ArgumentParser(prog="ope", description="Offline counterfactual evaluation of LLM routing policies.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="evaluate the policies of a config on request logs and write a report")
    run.add_argument("config", nargs="?", help="TOML config (default: configs/quickstart.toml on the bundled sample)")
    _run_options(run)
    run.set_defaults(func=_run)
    tune = sub.add_parser("tune", help="sweep a constrained router's budget and SLA settings and recommend a safe one")
    tune.add_argument("config", nargs="?", help="TOML config with a [tune] section (default: configs/tune.toml on the bundled sample)")
    _run_options(tune)
    tune.set_defaults(func=_tune)
    val = sub.add_parser("validate", help="check a log against the schema and catalog, print a summary")
    val.add_argument("logs", help="request log: parquet, csv or ndjson")
    val.add_argument("--catalog", required=True, help="endpoint catalog: csv or parquet")
    val.add_argument("--quarantine", help="write bad rows here and continue with the rest")
    val.set_defaults(func=_validate)
    from ope.importers.cli import add_parser as add_import_parser

    add_import_parser(sub)
    sim = sub.add_parser("simulate", help="write a synthetic log and catalog with known ground truth")
    sim.add_argument("--rows", type=int, default=60_000)
    sim.add_argument("--days", type=int, default=7)
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--out", required=True)
    sim.add_argument("--name", default="requests.parquet", help="file name of the log (with --partitioned: its folder)")
    sim.add_argument("--partitioned", action="store_true", help="write a folder of time-ordered parquet partitions, one at a time")
    sim.add_argument("--partition-rows", type=int, default=250_000, help="rows per partition (with --partitioned)")
    sim.add_argument("--scenario", choices=("default", "qwen3-32b", "deepseek-v3.2"), default="default",
                     help="simulated market: the default multi-model world, or a published single-model counterfactual")
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
