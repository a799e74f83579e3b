"""The redactor and the config masking: pure, no processes."""

from __future__ import annotations

from typing import Any

import pytest

from coordinator.redact import MASK, Redactor, mask_all, mask_config, secret_values

SHAPES = {
    "anthropic": "sk-ant-api03-Zx9_Yy8-Ww7Vv6Uu5Tt4",
    "openai": "sk-proj-abcdefghijklmnopqrstuvwxyz012345",
    "openai legacy": "sk-ABCDEFGHIJKLMNOPQRSTuvwx",
    "github classic": "ghp_1234567890abcdefghijABCDEFGHIJ",
    "github oauth": "gho_1234567890abcdefghijABCDEFGHIJ",
    "github fine-grained": "github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
    "aws": "AKIAIOSFODNN7EXAMPLE",
    "slack": "xoxb-123456789012-abcdefABCDEF",
    "google": "AIzaSyA1234567890abcdefghijklmnopqrstuv",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlF",
}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_well_known_shapes_are_masked(name: str) -> None:
    secret = SHAPES[name]
    out = Redactor()(f"before {secret} after")
    assert secret not in out
    assert out.startswith("before ") and out.endswith(" after")
    assert MASK in out


def test_bearer_url_password_and_assignments_keep_their_label() -> None:
    red = Redactor()
    assert red("Authorization: Bearer abcDEF123456.xyz") == f"Authorization: Bearer {MASK}"
    assert red("postgresql://app:hunter2pass@db:5432/x") == f"postgresql://app:{MASK}@db:5432/x"
    assert red("export MY_API_TOKEN=s3cr3tvalue; ls") == f"export MY_API_TOKEN={MASK}; ls"


def test_private_key_block_is_masked_whole_and_even_when_cut() -> None:
    block = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nIBAAKC\n-----END RSA PRIVATE KEY-----"
    assert Redactor()(f"key: {block} done") == f"key: {MASK} done"
    assert Redactor()("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXkt") == MASK


def test_ordinary_text_is_untouched() -> None:
    text = "Wrote tests/test_sk.py (42 lines); task-runner ok; sha 3f2a9c0; Bearer of news"
    assert Redactor(["somesecret"])(text) == text


def test_literal_values_longest_first() -> None:
    red = Redactor(["abcdef", "abcdefghij"])
    assert red("x abcdefghij y abcdef z") == f"x {MASK} y {MASK} z"


def test_secret_values_from_env_and_config() -> None:
    env = {
        "ANTHROPIC_API_KEY": "key-value-1",
        "CLAUDE_CODE_OAUTH_TOKEN": "oauth-value-2",
        "DATABASE_URL": "postgresql://u:dbpass99@h/db",
        "PATH": "/usr/bin:/bin",
        "SHORT_TOKEN": "abc",  # too short to search for in text
    }
    values = secret_values(env, {"PLAIN_NAME": "config-value-3", "FLAG": "1"})
    assert set(values) == {"key-value-1", "oauth-value-2", "dbpass99", "config-value-3"}
    red = Redactor(values)
    assert red("config-value-3 and dbpass99 and /usr/bin") == f"{MASK} and {MASK} and /usr/bin"


def test_keep_masks_before_clipping_and_bounds_the_work() -> None:
    secret = "not-a-shape-but-secret-value"
    red = Redactor([secret])
    # The secret straddles the clip point: no head of it may survive.
    text = "x" * 15 + secret + "y" * 50
    kept = red.keep(text, 20)
    assert len(kept) == 20 and kept.endswith("…")
    assert "not-a" not in kept
    assert red.keep("short", 20) == "short"
    # A huge line is read only up to the limit plus the margin.
    huge = secret + "z" * 10_000_000
    kept = red.keep(huge, 30)
    assert kept.startswith(MASK) and len(kept) == 30
    # A shape cut by the window is still recognised.
    assert "sk-ant-api03-abcd" not in red.keep("a" * 25 + "sk-ant-api03-" + "q" * 500, 30)


def test_mask_config_masks_every_env_value_and_nothing_else() -> None:
    config: dict[str, Any] = {
        "orchestration": {"id": "o", "env": {"PLAIN": "value-a", "EMPTY": ""}},
        "instances": [
            {"name": "a", "command": "/x", "env": {"HOST": "value-b"}},
            {"name": "b", "command": "/y"},
        ],
    }
    masked = mask_config(config)
    assert masked["orchestration"] == {"id": "o", "env": {"PLAIN": MASK, "EMPTY": ""}}
    assert masked["instances"][0] == {"name": "a", "command": "/x", "env": {"HOST": MASK}}
    assert masked["instances"][1] == {"name": "b", "command": "/y"}
    assert config["orchestration"]["env"]["PLAIN"] == "value-a"  # the input is not changed
    assert mask_all({"A": "x", "B": ""}) == {"A": MASK, "B": ""}
