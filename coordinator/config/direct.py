"""Direct mode: one instance from a command given on the command line, no config file needed
(``coordinator run "/analyze src" --instance-name a``). Pure.

With ``--config`` too, as the Python orchestrator does, the command replaces the config's
instances; the config's other settings (orchestration, budget) still apply.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pydantic import ValidationError

from coordinator.config.models import Config, InstanceConfig
from coordinator.errors import UsageError

# the instance field each direct-mode flag sets, for naming the flag in an error
FLAGS = {
    "command": "the command",
    "name": "--instance-name",
    "description": "--instance-description",
    "session_id": "--session-id",
    "clear_history": "--clear-history",
    "compact_history": "--compact-history",
}


@dataclass(frozen=True, slots=True)
class DirectCommand:
    command: str
    name: str | None = None
    description: str | None = None
    session_id: str | None = None
    clear_history: bool = False
    compact_history: bool = False

    def as_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> DirectCommand:
        return cls(**{k: data[k] for k in FLAGS if k in data})


def direct_config(direct: DirectCommand, base: Config | None) -> Config:
    """The config to run: ``base`` (or defaults) with one instance, the command's."""
    fields = {k: v for k, v in direct.as_record().items() if v is not None and v is not False}
    try:
        instance = InstanceConfig.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = FLAGS.get(str(first["loc"][0]), "the command") if first["loc"] else "the command"
        problem = str(first["msg"]).removeprefix("Value error, ")
        raise UsageError(f"{where} {first.get('input')!r:.80}: {problem}") from None
    if base is None:
        return Config(instances=[instance])
    return base.model_copy(update={"instances": [instance]})
