"""The default world: sixteen open-weight model families served by their makers and third parties.

Numbers are of the publicly listed kind (Q4 2025): prices in USD per million tokens, context
lengths, typical time to first token and decode speed. Demand across families is concentrated
(largest 0.32, top five 0.874, Gini about 0.69); within a family list prices vary less than
speeds do. Provider quirks: ``novita`` serves quantized weights (lower satisfaction),
``deepinfra`` has a flaky tool-call protocol (more bad requests, worse tool answers),
``cerebras`` caps answers at 2,048 tokens and miscounts long prompts, ``groq`` rate-limits hard,
``fireworks`` has an outage, ``deepseek`` (official) is cheap and slow and gets slower over the week.
"""

from __future__ import annotations

import datetime as dt

from ope.simulate.spec import (
    EndpointSpec,
    FailureTiming,
    Incident,
    ModelSpec,
    PriceChange,
    ProviderSpec,
    TaskSpec,
    TenantSpec,
    WorldSpec,
)

__all__ = ["START", "default_spec"]

#: the first instant of every simulated log
START = dt.datetime(2025, 10, 1, tzinfo=dt.UTC)

# name, share, input median, input sigma, output median, output sigma, p_tools, p_json, sat_logit
_TASKS = (
    ("chat", 0.34, 700, 1.1, 350, 0.8, 0.04, 0.02, 1.3),
    ("code", 0.20, 2500, 1.2, 550, 0.9, 0.10, 0.02, 0.9),
    ("rag", 0.15, 6000, 1.0, 280, 0.7, 0.02, 0.06, 1.0),
    ("summarize", 0.08, 9000, 1.1, 300, 0.6, 0.00, 0.05, 1.4),
    ("agent", 0.13, 12000, 1.0, 160, 1.0, 0.85, 0.15, 0.6),
    ("extract", 0.10, 3000, 1.1, 120, 0.6, 0.02, 0.75, 1.6),
)

_TENANTS = (
    TenantSpec(
        name="enterprise",
        share=0.2,
        sample_rate=1.0,
        task_tilt=(("agent", 1.8), ("rag", 1.5), ("extract", 1.5), ("chat", 0.6)),
    ),
    TenantSpec(name="pro", share=0.3, sample_rate=0.5, task_tilt=(("code", 1.5),)),
    TenantSpec(
        name="free",
        share=0.5,
        sample_rate=0.2,
        task_tilt=(("chat", 1.6), ("agent", 0.4), ("extract", 0.5)),
    ),
)

# name, maker, share, quality (satisfaction logit shift)
_MODELS = (
    ("qwen3-32b", "alibaba", 0.32, 0.0),
    ("deepseek-v3.2", "deepseek", 0.25, 0.5),
    ("llama-3.3-70b", "meta", 0.17, -0.2),
    ("qwen3-235b-a22b", "alibaba", 0.085, 0.3),
    ("kimi-k2", "moonshot", 0.049, 0.4),
    ("glm-4.6", "zai", 0.03, 0.35),
    ("gpt-oss-120b", "openai", 0.024, 0.1),
    ("mistral-small-3.2", "mistral", 0.019, -0.3),
    ("minimax-m2", "minimax", 0.015, 0.3),
    ("gemma-3-27b", "google", 0.011, -0.4),
    ("qwen3-coder-480b", "alibaba", 0.009, 0.45),
    ("llama-4-maverick", "meta", 0.007, 0.0),
    ("deepseek-r1", "deepseek", 0.005, 0.45),
    ("mistral-large", "mistral", 0.003, 0.2),
    ("hermes-4-70b", "nousresearch", 0.002, -0.1),
    ("phi-4", "microsoft", 0.001, -0.5),
)

# name, sigma_ttft, sigma_tps, prefill_tps, ttft_load, tps_load,
# rate_limited, server_error, timeout, bad_request, error_load
_PROVIDERS = (
    ("alibaba", 0.40, 0.25, 6000, 0.35, 0.15, 0.003, 0.003, 0.0008, 0.0015, 1.5),
    ("deepseek", 0.55, 0.35, 2500, 0.60, 0.30, 0.008, 0.004, 0.0030, 0.0015, 2.0),
    ("meta", 0.40, 0.25, 5000, 0.35, 0.15, 0.004, 0.003, 0.0008, 0.0015, 1.5),
    ("moonshot", 0.45, 0.30, 3000, 0.40, 0.20, 0.007, 0.004, 0.0020, 0.0020, 1.8),
    ("zai", 0.45, 0.30, 3000, 0.40, 0.20, 0.006, 0.004, 0.0015, 0.0020, 1.8),
    ("openai", 0.35, 0.20, 8000, 0.30, 0.10, 0.002, 0.002, 0.0008, 0.0010, 1.0),
    ("mistral", 0.35, 0.22, 7000, 0.30, 0.12, 0.003, 0.002, 0.0008, 0.0015, 1.2),
    ("minimax", 0.45, 0.30, 3000, 0.40, 0.20, 0.006, 0.004, 0.0015, 0.0020, 1.8),
    ("google", 0.35, 0.20, 8000, 0.30, 0.12, 0.004, 0.002, 0.0008, 0.0015, 1.2),
    ("nousresearch", 0.50, 0.30, 2500, 0.45, 0.25, 0.008, 0.007, 0.0020, 0.0030, 2.0),
    ("microsoft", 0.35, 0.20, 6000, 0.30, 0.10, 0.002, 0.003, 0.0008, 0.0015, 1.0),
    ("together", 0.35, 0.25, 9000, 0.35, 0.15, 0.004, 0.004, 0.0008, 0.0015, 1.5),
    ("fireworks", 0.30, 0.20, 12000, 0.30, 0.12, 0.003, 0.003, 0.0008, 0.0010, 1.2),
    ("deepinfra", 0.40, 0.30, 5000, 0.40, 0.20, 0.006, 0.004, 0.0015, 0.0015, 2.0),
    ("groq", 0.30, 0.20, 30000, 0.25, 0.10, 0.018, 0.003, 0.0004, 0.0015, 2.5),
    ("novita", 0.50, 0.35, 4000, 0.45, 0.25, 0.006, 0.008, 0.0020, 0.0020, 2.0),
    ("baseten", 0.30, 0.20, 10000, 0.30, 0.12, 0.003, 0.003, 0.0008, 0.0015, 1.2),
    ("cerebras", 0.30, 0.15, 50000, 0.20, 0.08, 0.015, 0.004, 0.0004, 0.0015, 2.5),
)

#: provider quirks on top of the common profile
_QUIRKS: dict[str, dict[str, float | int]] = {
    "deepseek": {"ttft_drift_per_day": 0.04, "tps_drift_per_day": -0.03},
    "together": {"tps_drift_per_day": -0.02, "bad_request_tools": 0.004},
    "deepinfra": {"bad_request_tools": 0.03, "sat_tools_delta": -0.8},
    "novita": {"sat_delta": -0.7, "bad_request_json": 0.02, "ttft_drift_per_day": 0.02},
    "cerebras": {"output_cap": 2048, "overflow_rate": 0.35, "overflow_fraction": 0.9},
    "groq": {"tps_drift_per_day": 0.02},
}

# model, provider, price in, price out, context, tools, json, ttft_ms, tps
_ENDPOINTS = (
    ("qwen3-32b", "alibaba", 0.20, 0.80, 131_072, True, True, 1500, 55),
    ("qwen3-32b", "deepinfra", 0.05, 0.10, 40_960, True, True, 800, 35),
    ("qwen3-32b", "novita", 0.10, 0.45, 40_960, True, False, 2500, 28),
    ("qwen3-32b", "groq", 0.29, 0.59, 131_072, True, True, 180, 550),
    ("qwen3-32b", "cerebras", 0.40, 0.80, 32_768, True, False, 120, 2000),
    ("qwen3-32b", "together", 0.90, 0.90, 131_072, True, True, 400, 90),
    ("deepseek-v3.2", "deepseek", 0.28, 0.42, 131_072, True, True, 2200, 8),
    ("deepseek-v3.2", "fireworks", 0.56, 1.68, 163_840, True, True, 450, 120),
    ("deepseek-v3.2", "together", 1.25, 1.25, 163_840, True, True, 600, 80),
    ("deepseek-v3.2", "novita", 0.27, 0.41, 163_840, True, False, 1400, 60),
    ("deepseek-v3.2", "deepinfra", 0.30, 0.45, 163_840, True, True, 900, 65),
    ("deepseek-v3.2", "baseten", 0.60, 1.20, 131_072, True, True, 300, 230),
    ("llama-3.3-70b", "meta", 0.60, 0.60, 131_072, True, True, 700, 60),
    ("llama-3.3-70b", "groq", 0.59, 0.79, 131_072, True, True, 200, 280),
    ("llama-3.3-70b", "together", 0.88, 0.88, 131_072, True, True, 450, 110),
    ("llama-3.3-70b", "cerebras", 0.85, 1.20, 65_536, True, False, 150, 1800),
    ("llama-3.3-70b", "deepinfra", 0.23, 0.40, 131_072, True, True, 900, 30),
    ("qwen3-235b-a22b", "alibaba", 0.70, 2.80, 131_072, True, True, 2000, 40),
    ("qwen3-235b-a22b", "fireworks", 0.22, 0.88, 131_072, True, True, 500, 90),
    ("qwen3-235b-a22b", "together", 0.20, 0.60, 131_072, True, True, 700, 45),
    ("qwen3-235b-a22b", "cerebras", 0.60, 1.20, 65_536, True, False, 150, 1400),
    ("kimi-k2", "moonshot", 0.60, 2.50, 262_144, True, True, 1800, 25),
    ("kimi-k2", "groq", 1.00, 3.00, 131_072, True, True, 250, 350),
    ("kimi-k2", "together", 1.00, 3.00, 131_072, True, True, 600, 60),
    ("kimi-k2", "fireworks", 0.60, 2.50, 131_072, True, True, 450, 110),
    ("glm-4.6", "zai", 0.60, 2.20, 200_000, True, True, 1600, 40),
    ("glm-4.6", "novita", 0.55, 2.20, 204_800, True, False, 2400, 25),
    ("glm-4.6", "deepinfra", 0.45, 1.90, 202_752, True, True, 700, 70),
    ("gpt-oss-120b", "openai", 0.15, 0.60, 131_072, True, True, 500, 150),
    ("gpt-oss-120b", "groq", 0.15, 0.75, 131_072, True, True, 200, 500),
    ("gpt-oss-120b", "cerebras", 0.35, 0.75, 65_536, True, False, 120, 3000),
    ("mistral-small-3.2", "mistral", 0.10, 0.30, 131_072, True, True, 300, 120),
    ("mistral-small-3.2", "deepinfra", 0.075, 0.20, 128_000, True, True, 700, 60),
    ("mistral-small-3.2", "together", 0.08, 0.20, 32_768, False, True, 1500, 30),
    ("minimax-m2", "minimax", 0.30, 1.20, 204_800, True, True, 1500, 45),
    ("minimax-m2", "novita", 0.30, 1.20, 204_800, True, False, 2000, 35),
    ("minimax-m2", "fireworks", 0.30, 1.20, 196_608, True, True, 400, 130),
    ("gemma-3-27b", "google", 0.10, 0.30, 131_072, True, True, 400, 80),
    ("gemma-3-27b", "deepinfra", 0.09, 0.17, 131_072, False, True, 800, 30),
    ("gemma-3-27b", "novita", 0.12, 0.20, 98_304, False, False, 1600, 50),
    ("qwen3-coder-480b", "alibaba", 1.00, 5.00, 262_144, True, True, 1500, 50),
    ("qwen3-coder-480b", "together", 2.00, 2.00, 262_144, True, True, 500, 80),
    ("qwen3-coder-480b", "fireworks", 0.45, 1.80, 262_144, True, True, 400, 140),
    ("llama-4-maverick", "meta", 0.27, 0.85, 524_288, True, True, 600, 90),
    ("llama-4-maverick", "groq", 0.20, 0.60, 131_072, True, True, 200, 600),
    ("llama-4-maverick", "together", 0.27, 0.85, 1_048_576, True, True, 500, 100),
    ("deepseek-r1", "deepseek", 0.55, 2.19, 65_536, True, True, 3000, 12),
    ("deepseek-r1", "together", 3.00, 7.00, 163_840, True, True, 800, 80),
    ("deepseek-r1", "fireworks", 1.35, 5.40, 163_840, True, True, 600, 110),
    ("mistral-large", "mistral", 2.00, 6.00, 131_072, True, True, 500, 50),
    ("mistral-large", "deepinfra", 1.80, 5.40, 131_072, True, True, 1400, 25),
    ("mistral-large", "baseten", 2.00, 6.00, 131_072, True, True, 300, 110),
    ("hermes-4-70b", "nousresearch", 0.13, 0.40, 131_072, True, True, 1200, 35),
    ("hermes-4-70b", "deepinfra", 0.13, 0.40, 131_072, True, True, 700, 40),
    ("hermes-4-70b", "novita", 0.12, 0.35, 131_072, True, False, 1800, 22),
    ("phi-4", "microsoft", 0.10, 0.22, 16_384, True, True, 300, 90),
    ("phi-4", "deepinfra", 0.07, 0.14, 16_384, False, True, 700, 45),
    ("phi-4", "novita", 0.08, 0.16, 16_384, False, False, 1800, 30),
)

_PRICE_CHANGES = (
    PriceChange(arm="together/qwen3-32b", at_fraction=0.5, price_in_per_mtok=0.30, price_out_per_mtok=0.60),
    PriceChange(arm="deepinfra/llama-3.3-70b", at_fraction=0.4, price_in_per_mtok=0.35, price_out_per_mtok=0.50),
    PriceChange(arm="fireworks/deepseek-v3.2", at_fraction=0.7, price_in_per_mtok=0.45, price_out_per_mtok=1.35),
)

_INCIDENTS = (
    Incident(provider="fireworks", at_fraction=0.55, hours=4.0, server_error=0.35, ttft_factor=2.5),
    Incident(provider="groq", at_fraction=0.3, hours=3.0, server_error=0.2, ttft_factor=1.5),
)

_FAILURES = (
    FailureTiming(status="rate_limited", median_ms=150.0, sigma=0.5),
    FailureTiming(status="server_error", median_ms=2500.0, sigma=0.9),
    FailureTiming(status="timeout", median_ms=120_000.0, sigma=0.0),
    FailureTiming(status="bad_request", median_ms=400.0, sigma=0.4),
    FailureTiming(status="context_overflow", median_ms=300.0, sigma=0.3),
)


def _provider(row: tuple) -> ProviderSpec:
    """Build one provider's profile from its table row and its quirks."""
    name, s_ttft, s_tps, prefill, ttft_load, tps_load, rl, se, to, br, err_load = row
    return ProviderSpec(
        name=name,
        sigma_ttft=s_ttft,
        sigma_tps=s_tps,
        prefill_tps=prefill,
        ttft_load=ttft_load,
        tps_load=tps_load,
        rate_limited=rl,
        server_error=se,
        timeout=to,
        bad_request=br,
        error_load=err_load,
        **_QUIRKS.get(name, {}),  # type: ignore[arg-type]
    )


def default_spec() -> WorldSpec:
    """The default simulated world (see the module docstring)."""
    tasks = tuple(
        TaskSpec(
            name=n,
            share=s,
            input_median=im,
            input_sigma=isg,
            output_median=om,
            output_sigma=osg,
            p_tools=pt,
            p_json=pj,
            sat_logit=sat,
        )
        for n, s, im, isg, om, osg, pt, pj, sat in _TASKS
    )
    models = tuple(ModelSpec(name=n, maker=m, share=s, quality=q) for n, m, s, q in _MODELS)
    endpoints = tuple(
        EndpointSpec(
            model=m,
            provider=p,
            price_in_per_mtok=pin,
            price_out_per_mtok=pout,
            context_tokens=ctx,
            supports_tools=tools,
            supports_json=js,
            ttft_ms=ttft,
            tps=tps,
        )
        for m, p, pin, pout, ctx, tools, js, ttft, tps in _ENDPOINTS
    )
    return WorldSpec(
        start=START,
        tasks=tasks,
        tenants=_TENANTS,
        models=models,
        providers=tuple(_provider(row) for row in _PROVIDERS),
        endpoints=endpoints,
        price_changes=_PRICE_CHANGES,
        incidents=_INCIDENTS,
        failures=_FAILURES,
    )
