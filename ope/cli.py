"""The `ope` command: run, tune, validate, import, export, simulate, monitor."""

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
    from ope.config import BUNDLED, load_config

    path = Path(args.config) if args.config else default
    cfg = load_config(path, base=None if args.config else BUNDLED)
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


def _track(cfg: ExperimentConfig, report: Path, problem: str | None, track: Callable[[], tuple[str, str, str]]) -> bool:
    """Record in MLflow if enabled; a failure (or a server found unreachable before the run) keeps the local outputs.
    Returns whether the run was recorded."""
    from ope.report.tracking import TrackingError, how_to_open

    if not cfg.tracking.enabled:
        return False
    try:
        if problem is not None:
            raise TrackingError(problem)
        run_id, uri, page = track()
        print(f"mlflow:    run {run_id} in {uri}\n           open it with: {how_to_open(uri, page)}")
        return True
    except TrackingError as exc:
        print(f"tracking failed: {exc}, report written to {report}", file=sys.stderr)
        return False


def _register_target(args: argparse.Namespace, cfg: ExperimentConfig) -> tuple[str, str] | None:
    """(registered model name, policy) of ``--register``, checked before the run; None without it."""
    if not args.register:
        return None
    from ope.report.tracking import check_registry

    if not cfg.tracking.enabled:
        raise OPEError("--register records the router in MLflow's model registry: it needs tracking (drop --no-tracking, "
                       "or set [tracking] enabled = true).")
    check_registry(cfg.tracking.uri)
    kinds = {p.name: p.kind for p in cfg.policies}
    routers = [n for n, k in kinds.items() if k == "constrained"] or [n for n in kinds if n != cfg.evaluation.baseline]
    policy = args.register_policy or (routers[0] if len(routers) == 1 else None)
    if policy is None or policy not in kinds:
        raise OPEError(f"--register: say which policy to register with --register-policy (one of {', '.join(kinds)}).")
    if kinds[policy] in ("mess_plus", "stage_route"):
        raise OPEError(f"--register: policy '{policy}' ({kinds[policy]}) learns online as it routes; a frozen copy is not "
                       "what it would deploy.")
    return args.register, policy


def _bars(args: argparse.Namespace) -> bool:
    """Progress bars (on stderr) only for a person at a terminal: not with --quiet, not when output is piped."""
    return not args.quiet and sys.stdout.isatty() and sys.stderr.isatty()


def _run(args: argparse.Namespace) -> int:
    from ope.config import DEFAULT_CONFIG
    from ope.evaluation.run import run_experiment
    from ope.progress import progress
    from ope.report.console import print_headlines, print_summary
    from ope.report.outputs import write_outputs
    from ope.report.tracking import track_run

    start, started = time.perf_counter(), time.time()
    cfg, run_name = _resolve(args, DEFAULT_CONFIG)
    register = _register_target(args, cfg)
    problem = _server_problem(cfg)
    result = run_experiment(cfg, show_progress=_bars(args))
    with progress("writing the report", total=1, enabled=_bars(args)) as bar:
        paths = write_outputs(result, cfg.output.dir, run_name, overwrite=args.overwrite)
        bar.update(1)
    info = json.loads(paths["summary"].read_text())
    print_summary(result, info["headline_estimators"])
    print_headlines(info)
    print(f"\nreport:    {paths['report']}")
    messages: list[str] = []
    tracked = _track(cfg, paths["report"], problem, lambda: track_run(result, paths, info, run_name=run_name, started=started,
                                                                      register=register, messages=messages))
    for line in messages:
        print(line)
    print(f"wall time: {time.perf_counter() - start:.1f} s")
    return 1 if register is not None and not tracked else 0


def _tune(args: argparse.Namespace) -> int:
    from ope.config import DEFAULT_TUNE_CONFIG
    from ope.evaluation.tune import run_tune
    from ope.progress import progress
    from ope.report.console import print_tune_table
    from ope.report.tracking import track_tune
    from ope.report.tune_html import write_tune_outputs

    start, started = time.perf_counter(), time.time()
    if args.streaming or args.engine == "ray":
        raise OPEError("ope tune runs in memory: --streaming is for ope run, and so is --engine ray (tune on a sample of a large log "
                       "instead).")
    cfg, run_name = _resolve(args, DEFAULT_TUNE_CONFIG)
    problem = _server_problem(cfg)
    result = run_tune(cfg, show_progress=_bars(args))
    with progress("writing the report", total=1, enabled=_bars(args)) as bar:
        paths = write_tune_outputs(result, cfg.output.dir, run_name, overwrite=args.overwrite)
        bar.update(1)
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
    if args.json:
        print(json.dumps(result.summary(), indent=2))
    else:
        from ope.report.console import format_validation

        print(format_validation(args.logs, result.summary()))
    return 0


def _export(args: argparse.Namespace) -> int:
    from ope.evaluation.export import export_policy
    from ope.report.export import print_export, write_export

    start = time.perf_counter()
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise OPEError(f"{out} already exists; pass --overwrite to replace it.")
    edges = tuple(int(e) for e in args.length_edges.split(",") if e.strip()) if args.length_edges else None
    if edges is not None and args.format != "json":
        raise OPEError(f"--length-edges is for --format json: {args.format} cannot route on input length.")
    export = export_policy(args.run_dir, args.policy, args.format, show_progress=_bars(args),
                           **({"length_edges": edges} if edges is not None else {}))
    paths = write_export(export, Path(args.run_dir), out, overwrite=args.overwrite)
    print_export(export, paths)
    if not args.no_tracking:
        _track_export(Path(args.run_dir), paths)
    print(f"wall time: {time.perf_counter() - start:.1f} s")
    return 0


def _track_export(run_dir: Path, paths: dict[str, Path]) -> None:
    """Log the export into the run's MLflow run when the run was tracked; a failure keeps the written files."""
    from ope.report.tracking import RECORD, TrackingError, how_to_open, track_export

    name = paths["report"].parent.name
    try:
        record = track_export(run_dir, paths, name)
    except TrackingError as exc:
        print(f"tracking failed: {exc}; the export is written locally", file=sys.stderr)
        return
    if record is None:
        print(f"mlflow:    the export is not logged: {run_dir} has no {RECORD} (the run was not tracked, or by a version "
              "of ope that did not write it)")
    else:
        print(f"mlflow:    logged to run {record['run_id']} under exports/{name}/\n"
              f"           open it with: {how_to_open(record['tracking_uri'], record['page'])}")


def _export_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    exp = sub.add_parser("export", help="write a run's policy as a gateway config and evaluate it as deployable")
    exp.add_argument("run_dir", help="a run folder of `ope run` (reports/<run-name>)")
    exp.add_argument("--policy", required=True, help="the policy to export: one of the run's, with an action file (required)")
    exp.add_argument("--format", required=True, choices=("litellm", "openrouter", "json"),
                     help="litellm: router config (YAML; .json for JSON); openrouter: provider preferences per (model, task); "
                          "json: weights per (model, task, input-length bucket) (required)")
    exp.add_argument("--out", required=True, help="the gateway file to write (required)")
    exp.add_argument("--length-edges", help="input-token bucket edges for --format json, e.g. 1024,4096,16384 "
                                            "(default: 1024,4096,16384)")
    exp.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    exp.add_argument("--no-tracking", action="store_true",
                     help="do not log the export into the run's MLflow run (logged there when the run was tracked)")
    exp.add_argument("--quiet", action="store_true", help="no progress bars")
    exp.set_defaults(func=_export)


def _simulate(args: argparse.Namespace) -> int:
    from ope.simulate.partitioned import write_partitioned
    from ope.simulate.scenarios import write_scenario

    if args.canary:
        from ope.simulate.canary import write_canary

        logs, catalog = write_canary(args.canary, Path(args.out), policy=args.canary_policy, share=args.canary_share,
                                     rows=args.rows, days=args.days, seed=args.seed, scenario=args.scenario,
                                     logs_name="canary.parquet" if args.name == "requests.parquet" else args.name)
        print(f"wrote {logs} and {catalog}")
        return 0
    if args.partitioned:
        logs, catalog = write_partitioned(Path(args.out), rows=args.rows, days=args.days, seed=args.seed, scenario=args.scenario,
                                          partition_rows=args.partition_rows, logs_name=Path(args.name).stem)
        print(f"wrote {logs} and {catalog}")
        return 0
    logs, catalog = write_scenario(args.scenario, Path(args.out), rows=args.rows, days=args.days, seed=args.seed,
                                   logs_name=args.name)
    print(f"wrote {logs} and {catalog}")
    return 0


def _monitor(args: argparse.Namespace) -> int:
    from ope.config import load_config
    from ope.evaluation.monitor import MonitorSettings, fitted_pair, monitor
    from ope.report.canary import print_monitor

    cfg = load_config(args.config)
    name, candidate, baseline = fitted_pair(cfg, args.policy)
    settings = MonitorSettings(policy=name, baseline=cfg.evaluation.baseline, share=args.share, alpha=cfg.evaluation.alpha,
                               max_cost_usd=args.max_cost_usd, sla_margin=args.sla_margin,
                               sla_latency_ms=cfg.evaluation.sla_latency_ms, terms=args.terms)
    state = Path(args.state) if args.state else cfg.output.dir / "monitor" / f"{Path(args.config).stem}-{name}.json"
    since = datetime.fromisoformat(args.since.replace("Z", "+00:00")) if args.since else None
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    result = monitor(cfg, Path(args.logs), state, settings, candidate=candidate, baseline=baseline, since=since)
    print_monitor(result, str(state))
    return 0


class _Help(argparse.RawDescriptionHelpFormatter):
    """Help that shows each option's default where it has one (a flag's default is off; a None defers to the config)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" in text or "(default" in text or any(action.default is v for v in (None, False, argparse.SUPPRESS)):
            return text
        return f"{text} (default: %(default)s)"


def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--logs", help="request log, a folder or a glob of parquet files (default: [data] logs of the config)")
    p.add_argument("--catalog", help="endpoint catalog, csv or parquet (default: [data] catalog of the config)")
    p.add_argument("--quarantine", help="set invalid rows aside in this file instead of stopping (default: [data] quarantine; "
                                        "none: stop on the first invalid row)")
    p.add_argument("--out", help="folder of the run folders (default: [output] dir of the config, reports)")
    p.add_argument("--run-name", help="name of the run and of its report folder (default: [output] run_name, or "
                                      "<config name>-<UTC time>)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: [tracking] uri, else MLflow's local sqlite:///mlflow.db)")
    p.add_argument("--no-tracking", action="store_true", help="do not record the run in MLflow")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder of the same name")
    p.add_argument("--quiet", action="store_true", help="no progress bars (they show only when stdout is a terminal)")
    p.add_argument("--streaming", action="store_true", help="read the log in batches, in bounded memory (docs/large_logs.md)")
    p.add_argument("--engine", choices=("memory", "local", "ray"), help="where batches run: memory (the whole log at once), local "
                   "(streamed batches), ray (pip install 'llm-ope[ray]') (default: [data] engine; memory unless the log is too big)")
    p.add_argument("--ray-address", help="Ray cluster to join with --engine ray, e.g. ray://head:10001 (default: RAY_ADDRESS, "
                                         "else a local one)")


def _register_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--register", metavar="NAME", help="register the router as MLflow model NAME (a pyfunc: request columns in, "
                                                      "a probability per arm and the chosen arm out); needs a sqlite or server store "
                                                      "(default: none: routers are logged with the run, not registered)")
    p.add_argument("--register-policy", metavar="POLICY", help="the policy --register registers (default: the config's only "
                                                               "constrained policy, else its only non-baseline policy)")


def _simulate_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sim = sub.add_parser("simulate", help="write a synthetic log and catalog with known ground truth")
    sim.add_argument("--rows", type=int, default=60_000, help="requests to simulate")
    sim.add_argument("--days", type=int, default=7, help="days the log spans")
    sim.add_argument("--seed", type=int, default=0, help="random seed: the same seed writes the same bytes")
    sim.add_argument("--out", required=True, help="folder to write the log and catalog.csv into (required)")
    sim.add_argument("--name", default="requests.parquet", help="file name of the log (with --partitioned: its folder)")
    sim.add_argument("--partitioned", action="store_true", help="write a folder of time-ordered parquet partitions, one at a time")
    sim.add_argument("--partition-rows", type=int, default=250_000, help="rows per partition (with --partitioned)")
    sim.add_argument("--scenario", choices=("default", "qwen3-32b", "deepseek-v3.2"), default="default",
                     help="simulated market: the default multi-model world, or a published single-model counterfactual")
    sim.add_argument("--canary", metavar="CONFIG", help="write a canary log instead: a policy of CONFIG at --canary-share, the rest its baseline (default: a plain log)")
    sim.add_argument("--canary-policy", help="the canary's policy (default: the config's only non-baseline policy)")
    sim.add_argument("--canary-share", type=float, default=0.05, help="share of requests the canary routes")
    sim.set_defaults(func=_simulate)


def _monitor_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    mon = sub.add_parser("monitor", help="watch a randomised canary with anytime-valid confidence sequences; stop on a verdict")
    mon.add_argument("config", help="the run config: its baseline, policies and [data] history log")
    mon.add_argument("--logs", required=True, help="the canary log (propensities recorded), in arrival order")
    mon.add_argument("--since", help="first timestamp to read (ISO 8601; default: where the state stopped)")
    mon.add_argument("--state", help="state file (default: <out>/monitor/<config>-<policy>.json)")
    mon.add_argument("--policy", help="the canary's policy (default: the config's only non-baseline policy)")
    mon.add_argument("--share", type=float, default=0.05, help="share of requests the canary routes (bounds the weights)")
    mon.add_argument("--max-cost-usd", type=float, default=0.1, help="known upper bound of one request's cost")
    mon.add_argument("--sla-margin", type=float, default=0.01, help="SLA hit rate loss still counted as 'not worse'")
    mon.add_argument("--terms", choices=("dr", "ips"), default="dr", help="doubly robust terms, q̂ from outcome models fitted "
                     "on the history log (kept in <out>/monitor/), or plain importance-weighted ones")
    mon.set_defaults(func=_monitor)


def parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    from ope import __version__
    from ope.importers.cli import add_parser as add_import_parser

    p = argparse.ArgumentParser(prog="ope", description="Offline counterfactual evaluation of LLM routing policies.",
                                formatter_class=_Help)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="evaluate the policies of a config on request logs and write a report")
    run.add_argument("config", nargs="?", help="TOML config (default: configs/quickstart.toml on the bundled sample)")
    _run_options(run)
    _register_options(run)
    run.set_defaults(func=_run)
    tune = sub.add_parser("tune", help="sweep a constrained router's budget and SLA settings and recommend a safe one")
    tune.add_argument("config", nargs="?", help="TOML config with a [tune] section (default: configs/tune.toml on the bundled sample)")
    _run_options(tune)
    tune.set_defaults(func=_tune)
    val = sub.add_parser("validate", help="check a log against the schema and catalog, print a summary")
    val.add_argument("logs", help="request log: parquet, csv or ndjson, or a folder or glob of parquet files")
    val.add_argument("--catalog", required=True, help="endpoint catalog: csv or parquet (required)")
    val.add_argument("--quarantine", help="write bad rows here and continue with the rest (default: none, stop and list them)")
    val.add_argument("--json", action="store_true", help="print the summary as JSON, for machines")
    val.set_defaults(func=_validate)
    add_import_parser(sub)
    _export_parser(sub)
    _simulate_parser(sub)
    _monitor_parser(sub)
    for command in sub.choices.values():
        command.formatter_class = _Help
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
