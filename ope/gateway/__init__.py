"""From a chosen policy to a gateway: what LiteLLM, OpenRouter or any gateway can be told, and what that implies.

`ope.gateway.groups` averages a policy's action probabilities into fixed weights per request group;
`ope.gateway.litellm` writes (and reads back) a LiteLLM router config, `ope.gateway.openrouter`
OpenRouter provider preferences, `ope.gateway.groups.weights_document` plain weights for any gateway.
Each also gives the exported policy (`policies.exported`): the probabilities the written config
implies, which ``ope export`` evaluates next to the policy as computed.
"""

from __future__ import annotations

__all__ = ["CANNOT_EXPRESS", "DEFAULT_LENGTH_EDGES", "FORMATS", "LABELS"]

#: export formats and how reports name the gateway
LABELS = {"litellm": "LiteLLM", "openrouter": "OpenRouter", "json": "JSON weights"}
FORMATS = tuple(LABELS)
#: input-token bucket edges of the json format: [0, 1024), [1024, 4096), [4096, 16384), [16384, ∞)
DEFAULT_LENGTH_EDGES = (1024, 4096, 16384)
#: what each format cannot say about a request, so the exported policy cannot depend on it (README: From decision to the gateway)
CANNOT_EXPRESS = {
    "litellm": "input length, time of day, request features other than the model group and the task tag, and anything the "
               "router read off the outcome models per request: weights are fixed per (model, task); capability needs "
               "(tools, JSON) are not filtered by LiteLLM (only the context window is, with pre-call checks)",
    "openrouter": "weights: only an order (the first available provider serves) or price-weighted balancing over a kept set "
                  "(1/price^2); nor input length, time or per-request predictions; retries on another provider after a "
                  "failure are not part of the evaluation",
    "json": "time of day and request features other than model, task and input-length bucket, and per-request predictions",
}
