"""A synthetic LLM service layer with exactly known expected outcomes (DESIGN §6).

>>> from ope.simulate import simulate
>>> sim = simulate(rows=1_000, days=1, seed=0)
>>> sorted(sim.world.true_value(sim.world.logging_probabilities, 10_000))[:2]
['cost_usd', 'latency_ms']
"""

from __future__ import annotations

from ope.simulate.defaults import default_spec
from ope.simulate.generate import SimulatedLog, simulate, write_simulation
from ope.simulate.partitioned import PartitionedSimulation, write_partitioned
from ope.simulate.scenarios import SCENARIOS, scenario_spec, write_scenario
from ope.simulate.spec import WorldSpec
from ope.simulate.world import World

__all__ = [
    "SCENARIOS",
    "PartitionedSimulation",
    "SimulatedLog",
    "World",
    "WorldSpec",
    "default_spec",
    "scenario_spec",
    "simulate",
    "write_partitioned",
    "write_scenario",
    "write_simulation",
]
