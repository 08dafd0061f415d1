"""Matching the provider and model names a gateway logs to the catalog's arms.

Gateways spell the same endpoint many ways: LiteLLM logs ``together_ai`` and
``together_ai/Qwen/Qwen3-32B``, OpenRouter ``Together`` and ``qwen/qwen3-32b``, an OpenTelemetry
span ``openai`` (the client SDK) with ``server.address = api.together.xyz``. A name matches a
catalog name when an explicit alias says so, or when both agree after normalisation: lower case,
letters and digits only, the vendor prefix of a model (``Qwen/``) and a variant suffix (``:free``)
dropped, a trailing ``_ai`` / ``-ai`` of a provider dropped. Anything else is *unknown* and the
record is malformed; nothing is guessed beyond these rules.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ope.data.catalog import Catalog

__all__ = ["NameMap", "host_provider", "model_key", "provider_key"]

_NON_ALNUM = re.compile(r"[^a-z0-9]")
_AI_SUFFIX = re.compile(r"[-_ ]ai$", re.IGNORECASE)


def model_key(name: str) -> str:
    """``Qwen/Qwen3-32B:free`` → ``qwen332b``."""
    last = name.strip().split(":")[0].rstrip("/").split("/")[-1]
    return _NON_ALNUM.sub("", last.lower())


def provider_key(name: str) -> str:
    """``together_ai`` / ``Together AI`` / ``together`` → ``together``."""
    return _NON_ALNUM.sub("", _AI_SUFFIX.sub("", name.strip()).lower())


def host_provider(address: str | None) -> str | None:
    """The provider a server address names: ``api.together.xyz`` → ``together``."""
    if not address:
        return None
    host = address.split("://")[-1].split("/")[0].split(":")[0]
    parts = [p for p in host.split(".") if p]
    if len(parts) < 2 or parts[-1].isdecimal():
        return None
    return parts[-2]


class NameMap:
    """Raw model and provider names → catalog model and arm (or normalised names without a catalog)."""

    def __init__(self, catalog: Catalog | None, *, providers: Mapping[str, str], models: Mapping[str, str]) -> None:
        self.catalog = catalog
        self.provider_aliases = {k.strip().lower(): v for k, v in providers.items()}
        self.model_aliases = {k.strip().lower(): v for k, v in models.items()}
        self._arms: set[str] = set(catalog.arms) if catalog is not None else set()
        self._models: dict[str, str] = {}
        self._providers: dict[str, str] = {}
        if catalog is not None:
            frame = catalog.arms_frame
            for m in frame["model"].unique().to_list():
                self._models.setdefault(model_key(m), m)
            for p in frame["provider"].unique().to_list():
                self._providers.setdefault(provider_key(p), p)

    def model(self, raw: str | None) -> str | None:
        """The catalog model a requested model name means; None when the catalog has no such model."""
        if not raw:
            return None
        alias = self.model_aliases.get(raw.strip().lower())
        if alias is not None:
            return alias
        if self.catalog is None:
            return raw.strip().split(":")[0].split("/")[-1].lower()
        return self._models.get(model_key(raw))

    def provider(self, raw: str | None) -> str | None:
        """The catalog provider a provider name means; None when unknown."""
        if not raw:
            return None
        alias = self.provider_aliases.get(raw.strip().lower())
        if alias is not None:
            return alias
        if self.catalog is None:
            return provider_key(raw) or None
        return self._providers.get(provider_key(raw))

    def arm(self, provider: str | None, model: str | None) -> str | None:
        """``provider/model`` when the catalog has that arm (or always, without a catalog)."""
        if provider is None or model is None:
            return None
        arm = f"{provider}/{model}"
        return arm if self.catalog is None or arm in self._arms else None
