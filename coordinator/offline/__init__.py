"""An offline, scripted Anthropic Messages API server for driving the real claude CLI."""

from coordinator.offline.script import (
    ApiError,
    Conversation,
    RateLimit,
    Response,
    Script,
    ToolUse,
    Usage,
    load_script,
)
from coordinator.offline.server import (
    ModelServer,
    ModelServerThread,
    RequestRecord,
    ServedResponse,
    TokenUsage,
    serve_in_thread,
)

__all__ = [
    "ApiError",
    "Conversation",
    "ModelServer",
    "ModelServerThread",
    "RateLimit",
    "RequestRecord",
    "Response",
    "Script",
    "ServedResponse",
    "TokenUsage",
    "ToolUse",
    "Usage",
    "load_script",
    "serve_in_thread",
]
