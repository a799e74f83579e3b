"""Account usage limits: which account an instance spends, when a limit closes it, until when."""

from coordinator.limits.account import account_key
from coordinator.limits.gate import DEFAULT_FALLBACK_S, DEFAULT_JITTER_S, LimitGate, resume_at
from coordinator.limits.rules import (
    RateLimited,
    limit_of,
    limit_text,
    parse_reset_text,
    usage_text,
    warning_text,
)

__all__ = [
    "DEFAULT_FALLBACK_S",
    "DEFAULT_JITTER_S",
    "LimitGate",
    "RateLimited",
    "account_key",
    "limit_of",
    "limit_text",
    "parse_reset_text",
    "resume_at",
    "usage_text",
    "warning_text",
]
