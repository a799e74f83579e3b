"""Live cost estimate per model until the CLI reports ``total_cost_usd``. Pure.

USD per million tokens. Cache writes are billed at 1.25x input (5-minute TTL), cache
reads at 0.1x input. The CLI's own figure always replaces this estimate at each ``result``.
"""

from __future__ import annotations

from runner.events import Usage

# (substring of the model id, input $/MTok, output $/MTok); first match wins.
PRICES: tuple[tuple[str, float, float], ...] = (
    ("opus-4-5", 5.0, 25.0),
    ("opus-4-6", 5.0, 25.0),
    ("opus", 15.0, 75.0),
    ("sonnet", 3.0, 15.0),
    ("haiku-4", 1.0, 5.0),
    ("haiku", 0.8, 4.0),
)
DEFAULT = (3.0, 15.0)


def estimate_cost(model: str | None, usage: Usage) -> float:
    price_in, price_out = DEFAULT
    name = (model or "").lower()
    for key, p_in, p_out in PRICES:
        if key in name:
            price_in, price_out = p_in, p_out
            break
    return (
        usage.input_tokens * price_in
        + usage.output_tokens * price_out
        + usage.cache_creation_tokens * price_in * 1.25
        + usage.cache_read_tokens * price_in * 0.1
    ) / 1_000_000
