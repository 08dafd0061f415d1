"""The console view of `ope monitor`: where the canary's confidence sequences stand, and the verdict."""

from __future__ import annotations

from ope.evaluation.monitor import MonitorResult

__all__ = ["print_monitor"]

_LABEL = {"value": "policy", "baseline": "baseline", "difference": "policy − baseline"}


def print_monitor(result: MonitorResult, state_path: str) -> None:
    """Print the rows seen, each metric's anytime-valid bounds and the verdict."""
    s = result.settings
    print(f"canary of '{s.policy}' against '{s.baseline}' at share {s.share:g}: {result.rows:,} requests "
          f"(+{result.new_rows:,} read now, {result.skipped_rows:,} already seen), up to {result.last_ts}")
    print(f"confidence sequences at {1 - s.alpha / 2:.1%} per metric (valid at every peek), verdict level {1 - s.alpha:.0%}:")
    for metric, kinds in result.bounds.items():
        for kind, (low, high) in kinds.items():
            print(f"  {metric:<9} {_LABEL[kind]:<18} [{low:.6g}, {high:.6g}]")
    where = "" if result.decided_at is None else f" (decided at request {result.decided_at['row']:,}, {result.decided_at['ts']})"
    print(f"verdict:   {result.verdict}{where}")
    print(f"state:     {state_path}")
