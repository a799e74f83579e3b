"""``--offline``: run the scripted model server beside the coordinator and point every
instance at it (no API key, no network)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from coordinator.offline.scenarios import script_for_plan
from coordinator.offline.script import load_script
from coordinator.offline.server import ModelServer
from coordinator.plan import RunPlan

OFFLINE_KEY = "offline-no-key"  # not a secret: the server is local and accepts anything


@contextlib.asynccontextmanager
async def start_offline_server(
    plan: RunPlan, script_path: Path | None
) -> AsyncIterator[dict[str, str]]:
    script = (
        load_script(script_path) if script_path is not None else load_script(script_for_plan(plan))
    )
    async with ModelServer(script) as server:
        yield {
            "ANTHROPIC_BASE_URL": server.url,
            "ANTHROPIC_API_KEY": OFFLINE_KEY,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
        }
