"""Which account an instance's environment spends: a short, stable, non-secret key. Pure.

The credential is the one the pinned CLI uses (CLI-FACTS.md, next to this file):
``ANTHROPIC_API_KEY`` wins over ``CLAUDE_CODE_OAUTH_TOKEN``, then ``ANTHROPIC_AUTH_TOKEN``;
with none of them the login stored in the config dir (``CLAUDE_CONFIG_DIR``, else
``$HOME/.claude``) is the account, keyed by that directory's path (pass the user's
environment, not an isolated per-instance copy of the config dir: the copy holds the same
login). ``ANTHROPIC_BASE_URL``
is part of the key (the same token against another endpoint is another account). The key
is ``<kind>:<12 hex of sha256>``; the secret itself never leaves this function.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

# (environment variable, kind), in the order the CLI prefers them.
CREDENTIALS: tuple[tuple[str, str], ...] = (
    ("ANTHROPIC_API_KEY", "api_key"),
    ("CLAUDE_CODE_OAUTH_TOKEN", "oauth"),
    ("ANTHROPIC_AUTH_TOKEN", "auth_token"),
)
DEFAULT_BASE_URL = "https://api.anthropic.com"


def account_key(env: Mapping[str, str]) -> str:
    """``oauth:1a2b3c4d5e6f``: the same for two environments that spend the same account."""
    kind, value = "login", _config_dir(env)
    for name, credential_kind in CREDENTIALS:
        secret = env.get(name, "").strip()
        if secret:
            kind, value = credential_kind, secret
            break
    base_url = env.get("ANTHROPIC_BASE_URL", "").strip().rstrip("/") or DEFAULT_BASE_URL
    digest = hashlib.sha256(f"{kind}\0{value}\0{base_url}".encode()).hexdigest()
    return f"{kind}:{digest[:12]}"


def _config_dir(env: Mapping[str, str]) -> str:
    configured = env.get("CLAUDE_CONFIG_DIR", "").strip()
    if configured:
        return configured.rstrip("/") or "/"
    return env.get("HOME", "").rstrip("/") + "/.claude"
