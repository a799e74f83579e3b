"""Live cost estimate per model until the CLI reports ``total_cost_usd``. Pure.

USD per million tokens: input, output, cache write (5-minute TTL), cache read. The CLI's
own figure always replaces this estimate at each ``result``; the closer the table, the
less the live cost jumps there.
"""

from __future__ import annotations

from runner.events import Usage


def _standard(price_in: float, price_out: float) -> tuple[float, float, float, float]:
    """Cache writes at 1.25x input, cache reads at 0.1x input."""
    return (price_in, price_out, price_in * 1.25, price_in * 0.1)


# (substring of the model id, prices); first match wins.
PRICES: tuple[tuple[str, tuple[float, float, float, float]], ...] = (
    # The pinned CLI's default model, as CLI 2.1.329 prices it (measured: one million
    # tokens of each kind through the offline server, ``modelUsage.costUSD``).
    ("opus-5-5", (4.0, 20.0, 5.0, 0.2)),
    ("opus-4-5", _standard(5.0, 25.0)),
    ("opus-4-6", _standard(5.0, 25.0)),
    ("opus", _standard(15.0, 75.0)),
    ("sonnet", _standard(3.0, 15.0)),
    ("haiku-4", _standard(1.0, 5.0)),
    ("haiku", _standard(0.8, 4.0)),
)
DEFAULT = _standard(3.0, 15.0)


def prices_for(model: str | None) -> tuple[float, float, float, float]:
    name = (model or "").lower()
    for key, prices in PRICES:
        if key in name:
            return prices
    return DEFAULT


def estimate_cost(model: str | None, usage: Usage) -> float:
    price_in, price_out, price_write, price_read = prices_for(model)
    return (
        usage.input_tokens * price_in
        + usage.output_tokens * price_out
        + usage.cache_creation_tokens * price_write
        + usage.cache_read_tokens * price_read
    ) / 1_000_000
