"""The simulated world's parameters, as frozen dataclasses (DESIGN §6).

Everything the simulator draws from is declared here, once; :mod:`ope.simulate.defaults` fills
these in with numbers of the published kind. A spec is checked when it is built, so the sampler
and the exact expectations can trust it.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass

from ope.data.schema import Status
from ope.errors import ConfigError

__all__ = [
    "FAILURE_STATUSES",
    "STATUSES",
    "EndpointSpec",
    "FailureTiming",
    "Incident",
    "ModelSpec",
    "PriceChange",
    "ProviderSpec",
    "TaskSpec",
    "TenantSpec",
    "WorldSpec",
]


#: the statuses the simulator produces, in the order of every status-probability array
STATUSES: tuple[Status, ...] = (
    Status.OK,
    Status.RATE_LIMITED,
    Status.SERVER_ERROR,
    Status.TIMEOUT,
    Status.BAD_REQUEST,
    Status.CONTEXT_OVERFLOW,
)
FAILURE_STATUSES: tuple[Status, ...] = STATUSES[1:]


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskSpec:
    """An application class: how long its prompts and answers are, what it needs.

    Prompt and latent answer lengths are lognormal (heavy right tail) with the given median and
    log-scale sigma. ``sat_logit`` is the task's baseline satisfaction on the logit scale.
    """

    name: str
    share: float
    input_median: float
    input_sigma: float
    output_median: float
    output_sigma: float
    p_tools: float
    p_json: float
    sat_logit: float


@dataclass(frozen=True, slots=True, kw_only=True)
class TenantSpec:
    """A customer tier: its share of full traffic and the rate at which its requests are logged.

    ``task_tilt`` multiplies the base task shares for this tenant (missing tasks keep 1.0), so
    tiers differ in what they ask and the sample weights matter for the truth.
    """

    name: str
    share: float
    sample_rate: float
    task_tilt: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSpec:
    """A model family: its demand share, its maker (the official provider) and its quality."""

    name: str
    maker: str
    share: float
    quality: float


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderSpec:
    """How a provider behaves, whatever model it serves.

    Probabilities are per request at zero load; ``error_load`` scales rate-limit, server-error and
    timeout probabilities by ``1 + error_load * load``. TTFT and tokens/s are lognormal with the
    given log-scale sigmas; at full load log-TTFT rises by ``ttft_load`` and log-tokens/s falls
    by ``tps_load``; both drift linearly per day. Prompts are processed at ``prefill_tps``.
    Quirks: ``output_cap`` truncates answers; prompts longer than ``overflow_fraction`` of the
    context overflow with probability ``overflow_rate`` (tokenizer mismatch); ``sat_delta`` and
    ``sat_tools_delta`` shift satisfaction on the logit scale (quantization, broken tool calls).
    """

    name: str
    sigma_ttft: float
    sigma_tps: float
    prefill_tps: float
    ttft_load: float
    tps_load: float
    ttft_drift_per_day: float = 0.0
    tps_drift_per_day: float = 0.0
    rate_limited: float
    server_error: float
    timeout: float
    bad_request: float
    bad_request_tools: float = 0.0
    bad_request_json: float = 0.0
    error_load: float
    overflow_rate: float = 0.0
    overflow_fraction: float = 1.0
    output_cap: int | None = None
    sat_delta: float = 0.0
    sat_tools_delta: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointSpec:
    """One arm, ``provider/model``: list price, limits, capabilities and base speed.

    ``ttft_ms`` is the median time to first token of a tiny prompt at zero load; prompt
    processing adds ``1000 * input_tokens / prefill_tps``. ``tps`` is the median decode speed.
    """

    model: str
    provider: str
    price_in_per_mtok: float
    price_out_per_mtok: float
    context_tokens: int
    supports_tools: bool
    supports_json: bool
    ttft_ms: float
    tps: float

    @property
    def arm(self) -> str:
        """The arm name, ``provider/model``."""
        return f"{self.provider}/{self.model}"


@dataclass(frozen=True, slots=True, kw_only=True)
class PriceChange:
    """A new list price for ``arm`` from ``at_fraction`` of the log window on (rounded to the hour)."""

    arm: str
    at_fraction: float
    price_in_per_mtok: float
    price_out_per_mtok: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Incident:
    """A provider outage: extra server-error probability and slower TTFT for ``hours`` hours."""

    provider: str
    at_fraction: float
    hours: float
    server_error: float
    ttft_factor: float


@dataclass(frozen=True, slots=True, kw_only=True)
class FailureTiming:
    """Time until a failure of kind ``status`` is reported: lognormal, sigma 0 means fixed."""

    status: str
    median_ms: float
    sigma: float


@dataclass(frozen=True, slots=True, kw_only=True)
class WorldSpec:
    """The whole simulated service layer and its logging policy.

    Load at time t is ``0.5 * (1 + cos(2 pi (hour(t) - peak_hour) / 24))`` in [0, 1]; arrivals
    have density proportional to ``arrival_floor + load``. The logging policy is
    ``(1 - epsilon) * price_weighted + epsilon * uniform`` over eligible arms, price-weighted
    proportional to ``blended ** -price_power`` with blended = (3 in + out) / 4 in force.
    """

    start: dt.datetime
    tasks: tuple[TaskSpec, ...]
    tenants: tuple[TenantSpec, ...]
    models: tuple[ModelSpec, ...]
    providers: tuple[ProviderSpec, ...]
    endpoints: tuple[EndpointSpec, ...]
    price_changes: tuple[PriceChange, ...]
    incidents: tuple[Incident, ...]
    failures: tuple[FailureTiming, ...]
    peak_hour: float = 15.0
    arrival_floor: float = 0.35
    cap_sat_penalty: float = -1.5
    epsilon: float = 0.1
    price_power: float = 2.0

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.start.utcoffset() != dt.timedelta(0):
            msg = f"The 'start' of a WorldSpec must be a UTC datetime. Got {self.start!r} instead."
            raise ConfigError(msg)
        for name, items in (("tasks", self.tasks), ("tenants", self.tenants), ("models", self.models)):
            total = sum(item.share for item in items)
            if abs(total - 1.0) > 1e-9 or min(item.share for item in items) <= 0:
                msg = f"The shares of WorldSpec.{name} must be positive and sum to 1. Got {total!r}."
                raise ConfigError(msg)
        if not 0.0 < self.epsilon <= 1.0:
            msg = f"The 'epsilon' of WorldSpec must be in (0, 1]. Got {self.epsilon!r} instead."
            raise ConfigError(msg)
        self._check_endpoints()
        timed = {f.status for f in self.failures}
        expected = [s.value for s in FAILURE_STATUSES]
        if timed != set(expected) or len(self.failures) != len(expected):
            msg = f"WorldSpec.failures must give a timing for exactly {expected}. Got {sorted(timed)} instead."
            raise ConfigError(msg)

    def _check_endpoints(self) -> None:
        """Every endpoint names a known model and provider; each model has 1 official + 2-5 others."""
        makers = {m.name: m.maker for m in self.models}
        providers = {p.name for p in self.providers}
        arms = Counter(e.arm for e in self.endpoints)
        duplicated = sorted(arm for arm, count in arms.items() if count > 1)
        if duplicated:
            msg = f"WorldSpec.endpoints lists these arms more than once: {duplicated}."
            raise ConfigError(msg)
        for e in self.endpoints:
            if e.model not in makers or e.provider not in providers:
                msg = f"Endpoint {e.arm!r} names an unknown model or provider."
                raise ConfigError(msg)
        for model, maker in makers.items():
            served = [e for e in self.endpoints if e.model == model]
            official = [e for e in served if e.provider == maker]
            if len(official) != 1 or not 2 <= len(served) - 1 <= 5:
                msg = (
                    f"Model {model!r} must have exactly one official endpoint and 2 to 5 third-party "
                    f"ones. Got {len(official)} official and {len(served) - len(official)} others."
                )
                raise ConfigError(msg)
            if not (official[0].supports_tools and official[0].supports_json):
                msg = f"The official endpoint of {model!r} must support tools and JSON mode."
                raise ConfigError(msg)
        references = (
            ("price_changes", {c.arm for c in self.price_changes}, set(arms)),
            ("incidents", {i.provider for i in self.incidents}, providers),
            (
                "tenants' task_tilt",
                {task for t in self.tenants for task, _ in t.task_tilt},
                {t.name for t in self.tasks},
            ),
        )
        for field, named, known in references:
            unknown = sorted(named - known)
            if unknown:
                msg = f"WorldSpec.{field} names unknown entries: {unknown}."
                raise ConfigError(msg)

    @property
    def arms(self) -> tuple[str, ...]:
        """Arm names sorted: the K axis of every array."""
        return tuple(sorted(e.arm for e in self.endpoints))
