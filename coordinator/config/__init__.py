"""Instance config: pydantic models and the loader that turns any mistake into one line."""

from coordinator.config.loader import load_config, parse_config
from coordinator.config.models import (
    BudgetConfig,
    Config,
    InstanceConfig,
    OrchestrationConfig,
    PermissionMode,
    ScenarioConfig,
    SyncConfig,
    SyncMode,
)

__all__ = [
    "BudgetConfig",
    "Config",
    "InstanceConfig",
    "OrchestrationConfig",
    "PermissionMode",
    "ScenarioConfig",
    "SyncConfig",
    "SyncMode",
    "load_config",
    "parse_config",
]
