from __future__ import annotations

import json
from pathlib import Path

import pytest

from coordinator.config import load_config, parse_config
from coordinator.errors import ConfigError

EXISTING_FORMAT = {
    "instances": [
        {
            "command": "/maketests backend",
            "name": "backend-tests",
            "description": "make tests",
            "allowed_tools": ["Read", "Write", "Bash"],
            "permission_mode": "acceptEdits",
            "output_format": "stream-json",
            "session_id": "backend-session",
            "clear_history": True,
            "compact_history": False,
            "pre_commands": ["/prime"],
            "max_tokens_per_command": 5000,
        }
    ]
}


def test_existing_format_is_accepted_unchanged() -> None:
    config = parse_config(EXISTING_FORMAT)
    inst = config.instances[0]
    assert inst.command == "/maketests backend"
    assert inst.slash_command == "/maketests"
    assert inst.turns == ["/prime", "/maketests backend"]
    assert inst.max_tokens_per_command == 5000
    assert config.orchestration.sync.milestones == [30, 50, 70, 90]


@pytest.mark.parametrize(
    ("data", "path", "fragment"),
    [
        (
            {"instances": [{"command": "x", "permission_mode": "yolo"}]},
            "instances[0].permission_mode",
            "'yolo'",
        ),
        (
            {"instances": [{"command": "x"}], "orchestration": {"sync": {"mode": "sometimes"}}},
            "orchestration.sync.mode",
            "'sometimes'",
        ),
        (
            {"instances": [{"command": "x"}], "orchestration": {"budget": {"overall_tokens": -1}}},
            "orchestration.budget.overall_tokens",
            "-1",
        ),
        (
            {"instances": [{"command": "x", "name": "a"}, {"command": "y", "name": "a"}]},
            "instances[1].name",
            "duplicate",
        ),
        (
            {"instances": [{"command": "x", "session_id": "not a uuid!"}]},
            "instances[0].session_id",
            "UUID",
        ),
        ({"instances": [{"name": "no-command"}]}, "instances[0].command", "missing"),
        (
            {"instances": [{"command": "x", "colour": "red"}]},
            "instances[0].colour",
            "unknown field",
        ),
        (
            {
                "instances": [{"command": "x"}],
                "orchestration": {"budget": {"command_budgets": {"maketests": 5}}},
            },
            "orchestration.budget.command_budgets",
            "/command",
        ),
        ({"instances": []}, "instances", "at least 1"),
        ({"instances": [{"command": "   "}]}, "instances[0].command", "blank"),
    ],
)
def test_invalid_config_gives_one_line_with_file_path_and_value(
    data: dict[str, object], path: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "cfg.json")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"cfg.json: {path}")
    assert fragment in message
    assert info.value.exit_code == 2


def test_bad_json_names_line_and_column(tmp_path: Path) -> None:
    f = tmp_path / "bad.json"
    f.write_text('{"instances": [\n  {"command": "x",}\n]}')
    with pytest.raises(ConfigError) as info:
        load_config(f)
    assert str(info.value).startswith(f"{f}: line 2 column")
    assert "invalid JSON" in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.json")


def test_derived_names_are_unique_and_stable() -> None:
    config = parse_config({"instances": [{"command": "/x a"}, {"command": "/x a"}]})
    assert config.instance_names() == ["x-a", "x-a-2"]


def test_every_shipped_config_is_valid() -> None:
    configs = sorted(Path(__file__).resolve().parents[2].joinpath("configs").glob("*.json"))
    assert configs, "configs/ must ship example configs"
    for path in configs:
        load_config(path)
        json.loads(path.read_text())
