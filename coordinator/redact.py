"""Keep secrets out of logs, dry-runs, results and the database.

Two tools: ``mask_config`` / ``mask_env`` hide values in structured data (every env value a
config sets counts as a secret, whatever its name), and ``Redactor`` cleans free text
(what claude or a tool printed) of the secret values it was built from and of well-known
key shapes. A ``Redactor`` is built once per instance from its environment; the engine runs
it only on text it keeps (tails, the last event, errors), never on every stream line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH)", re.IGNORECASE)
MASK = "***"
MIN_SECRET_LEN = 6  # a shorter value would match all over ordinary text
ALWAYS_SECRET = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN")

# Well-known credential shapes. Each pattern's group "keep" (if any) is kept, the rest masked.
_SHAPES = (
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)",
    r"\bsk-ant-[A-Za-z0-9_\-]{8,}",  # Anthropic
    r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}",  # OpenAI
    r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{20,}",  # GitHub tokens
    r"\bgithub_pat_[A-Za-z0-9_]{20,}",  # GitHub fine-grained tokens
    r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",  # AWS access key ids
    r"\bxox[abposr]-[A-Za-z0-9\-]{10,}",  # Slack
    r"\bAIza[0-9A-Za-z_\-]{35}",  # Google API keys
    r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",  # JWTs
    r"(?P<keep>\b[Bb]earer\s+)[A-Za-z0-9._~+/\-]{8,}=*",  # Authorization: Bearer <token>
    r"(?P<keep2>://[^\s:/@]+:)[^\s@/]+(?=@)",  # the password in scheme://user:pass@host
    # NAME=value where NAME says it is a secret (export API_TOKEN=..., PGPASSWORD=...)
    r"(?P<keep3>\b[A-Z][A-Z0-9_]*(?:KEY|TOKEN|SECRET|PASSWORD|PASSWD)[A-Z0-9_]*=)[^\s'\";&|]+",
)
_SHAPE_RE = re.compile("|".join(f"(?:{p})" for p in _SHAPES))
# A literal every shape above contains: text with none of them cannot hold a shape, and a
# few substring scans (C speed) cost far less than the alternation on every kept line.
_SHAPE_TRIGGERS = (
    "-----BEGIN", "sk-", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "AKIA",
    "ASIA", "xox", "AIza", "eyJ", "earer", "://", "KEY", "TOKEN", "SECRET", "PASSW",
)  # fmt: skip
# The longest stretch a shape needs to be recognised: how far past the kept part of a text
# the redactor reads, so that clipping never leaves the head of a secret visible.
_SHAPE_MARGIN = 96


def is_secret_name(name: str) -> bool:
    return bool(SECRET_NAME.search(name))


def mask_env(env: Mapping[str, str]) -> dict[str, str]:
    """Only the values whose names say they are secrets (for an environment of unknown
    origin); a config's env is ``mask_all``."""
    return {k: (MASK if is_secret_name(k) and v else v) for k, v in env.items()}


def mask_all(env: Mapping[str, str]) -> dict[str, str]:
    """Every value masked: what a config's ``env`` blocks look like wherever they are shown."""
    return {k: (MASK if v else v) for k, v in env.items()}


def mask_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A config's JSON form (``Config.model_dump(mode="json")``) with every env value masked:
    ``orchestration.env`` and each instance's ``env``. Anything else is kept as it is."""
    out = dict(config)
    orch = out.get("orchestration")
    if isinstance(orch, Mapping):
        out["orchestration"] = _mask_env_field(orch)
    instances = out.get("instances")
    if isinstance(instances, list):
        out["instances"] = [
            _mask_env_field(inst) if isinstance(inst, Mapping) else inst for inst in instances
        ]
    return out


def _mask_env_field(block: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(block)
    env = out.get("env")
    if isinstance(env, Mapping):
        out["env"] = {str(k): (MASK if v else v) for k, v in env.items()}
    return out


def secret_values(
    env: Mapping[str, str],
    config_env: Mapping[str, str] | None = None,
    min_len: int = MIN_SECRET_LEN,
) -> list[str]:
    """The values in ``env`` that are secrets: secret-named variables, the credentials the
    CLI uses, passwords inside URLs (a database URL), and every value of ``config_env``."""
    found: set[str] = set()
    for key, value in env.items():
        if is_secret_name(key) or key in ALWAYS_SECRET:
            found.add(value)
        if "://" in value and "@" in value:
            found.update(_url_password(value))
    if config_env:
        found.update(config_env.values())
        for value in config_env.values():
            if "://" in value and "@" in value:
                found.update(_url_password(value))
    return sorted((v for v in found if len(v) >= min_len), key=len, reverse=True)


def _url_password(value: str) -> list[str]:
    try:
        password = urlsplit(value.strip()).password
    except ValueError:
        return []
    return [password] if password else []


def mask_text(text: str, secrets: Iterable[str]) -> str:
    for value in secrets:
        if value in text:
            text = text.replace(value, MASK)
    return text


class Redactor:
    """Masks the given secret values, then well-known key shapes, in a text.

    Compiled once (one alternation of the literal values, longest first); calling it is one
    or two regex passes. ``keep(text, limit)`` is what the engine uses for text it stores:
    it reads only ``limit`` characters plus a margin, so a megabyte line costs no more than
    a short one, and clips after masking, so the head of a secret is never left visible.
    """

    __slots__ = ("_literal", "margin")

    def __init__(self, values: Iterable[str] = ()) -> None:
        literals = sorted({v for v in values if v}, key=len, reverse=True)
        self._literal = re.compile("|".join(map(re.escape, literals))) if literals else None
        self.margin = max([_SHAPE_MARGIN, *(len(v) for v in literals)])

    @classmethod
    def for_env(
        cls, env: Mapping[str, str], config_env: Mapping[str, str] | None = None
    ) -> Redactor:
        return cls(secret_values(env, config_env))

    def __call__(self, text: str) -> str:
        if self._literal is not None:
            text = self._literal.sub(MASK, text)
        if not any(trigger in text for trigger in _SHAPE_TRIGGERS):
            return text
        return _SHAPE_RE.sub(_shape_mask, text)

    def keep(self, text: str, limit: int) -> str:
        """``text`` redacted and clipped to ``limit`` characters (``…`` marks a cut)."""
        cut = len(text) > limit + self.margin
        clean = self(text[: limit + self.margin] if cut else text)
        if len(clean) <= limit and not cut:
            return clean
        return clean[: limit - 1] + "…"


def _shape_mask(match: re.Match[str]) -> str:
    kept = match.group("keep") or match.group("keep2") or match.group("keep3") or ""
    return kept + MASK
