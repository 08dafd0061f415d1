"""Named simulated worlds: the default market and the two published single-model counterfactuals.

A Q4-2025 measurement study of hosted open-weight APIs reported that routing across providers
lowered Qwen3-32B cost by 37.8 % and raised DeepSeek-V3.2 average throughput by about 90 %
against direct official access (DESIGN §1). The two scenarios below are single-model markets of
that kind, built from the default world's tasks, tenants, failure timings and provider profiles:

- ``qwen3-32b``: the maker's endpoint (``alibaba``, $0.20/$0.80 per Mtok, 131K context, 55
  tokens/s) against the five third parties of the default world, from ``deepinfra`` at
  $0.05/$0.10 (40K context, slow, flaky tool calls) to ``together`` at $0.90/$0.90 (131K), with
  ``groq`` and ``cerebras`` an order of magnitude faster and ``novita`` quantized. A
  cost-minimising router that keeps satisfaction within about half a point of direct official
  access and lifts the 10 s SLA hit rate cuts cost by about 37 % in the exact truth.
- ``deepseek-v3.2``: the official endpoint (``deepseek``, $0.28/$0.42, 2.2 s TTFT, 8 tokens/s,
  slower over the week) against five third parties at 60–230 tokens/s and 1.3–4.5 times its
  blended price. A throughput-maximising router that may spend 1 % more than direct official
  access roughly doubles mean throughput (it upgrades the requests whose upgrade costs least).

``WorldSpec`` allows at most five third-party endpoints per model, so each market has five.
The logging policy balances load in proportion to 1 / blended price (``price_power = 1``) with
10 % uniform exploration, so direct official access keeps enough support to be evaluated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path

from ope.errors import ConfigError
from ope.simulate.defaults import default_spec
from ope.simulate.generate import simulate
from ope.simulate.spec import EndpointSpec, ModelSpec, WorldSpec

__all__ = ["SCENARIOS", "deepseek_v3_2_spec", "qwen3_32b_spec", "scenario_spec", "write_scenario"]

#: logging policy of the scenarios: weights ∝ blended price ** -1 (the default world uses -2)
_PRICE_POWER = 1.0

#: DeepSeek-V3.2 third parties: list prices (in, out per Mtok), "up to several times" the official one
_DEEPSEEK_PRICES: dict[str, tuple[float, float]] = {
    "novita": (0.40, 0.80),
    "deepinfra": (0.35, 0.70),
    "baseten": (0.90, 1.80),
}


def _market(
    model: str,
    *,
    prices: Mapping[str, tuple[float, float]] | None = None,
    provider_changes: Mapping[str, Mapping[str, float]] | None = None,
) -> WorldSpec:
    """The default world cut down to one model family and its endpoints, providers and events.

    ``prices`` replaces the list price of a provider's endpoint; ``provider_changes`` replaces
    fields of a provider's profile (as ``dataclasses.replace``).
    """
    base = default_spec()
    family = next(m for m in base.models if m.name == model)
    prices, provider_changes = prices or {}, provider_changes or {}

    def priced(e: EndpointSpec) -> EndpointSpec:
        if e.provider not in prices:
            return e
        p_in, p_out = prices[e.provider]
        return dataclasses.replace(e, price_in_per_mtok=p_in, price_out_per_mtok=p_out)

    endpoints = tuple(priced(e) for e in base.endpoints if e.model == model)
    served = {e.provider for e in endpoints}
    return dataclasses.replace(
        base,
        models=(ModelSpec(name=model, maker=family.maker, share=1.0, quality=family.quality),),
        providers=tuple(
            dataclasses.replace(p, **provider_changes.get(p.name, {})) for p in base.providers if p.name in served
        ),
        endpoints=endpoints,
        price_changes=tuple(c for c in base.price_changes if c.arm in {e.arm for e in endpoints}),
        incidents=tuple(i for i in base.incidents if i.provider in served),
        price_power=_PRICE_POWER,
    )


def qwen3_32b_spec() -> WorldSpec:
    """A Qwen3-32B market: ``alibaba`` (official) and five third parties (see the module docstring)."""
    return _market("qwen3-32b")


def deepseek_v3_2_spec() -> WorldSpec:
    """A DeepSeek-V3.2 market: a cheap, slow official endpoint and five faster, dearer third parties."""
    return _market("deepseek-v3.2", prices=_DEEPSEEK_PRICES)


#: scenario name → function building its world (``ope simulate --scenario NAME``)
SCENARIOS: dict[str, Callable[[], WorldSpec]] = {
    "default": default_spec,
    "qwen3-32b": qwen3_32b_spec,
    "deepseek-v3.2": deepseek_v3_2_spec,
}


def scenario_spec(name: str) -> WorldSpec:
    """The world of a named scenario; an unknown name raises ``ConfigError`` listing the known ones."""
    if name not in SCENARIOS:
        msg = f"Unknown simulator scenario {name!r}; known scenarios: {', '.join(SCENARIOS)}."
        raise ConfigError(msg)
    return SCENARIOS[name]()


def write_scenario(
    name: str, out_dir: str | Path, *, rows: int, days: float, seed: int, logs_name: str = "requests.parquet"
) -> tuple[Path, Path]:
    """Simulate scenario ``name`` and write its log and catalog exactly as ``write_simulation`` does.

    For ``"default"`` the files are byte-identical to ``write_simulation``'s. Returns the two paths.
    """
    sim = simulate(rows, days, seed, spec=scenario_spec(name))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    logs_path, catalog_path = out / logs_name, out / "catalog.csv"
    sim.logs.write_parquet(logs_path, compression="zstd", compression_level=19, statistics=True)
    sim.catalog.write_csv(catalog_path, datetime_format="%Y-%m-%dT%H:%M:%SZ")
    return logs_path, catalog_path
