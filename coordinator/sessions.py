"""Session IDs: a UUID is used as is; any other name maps to a stable UUID."""

from __future__ import annotations

import uuid
from pathlib import Path

# A fixed namespace so the mapping is stable across hosts and versions.
NAMESPACE = uuid.UUID("6f1c0b39-2a7e-5e7a-9c55-3b0d2f6f4e11")


def session_uuid(
    orchestration_id: str, instance_name: str, session_id: str | None, workspace: Path
) -> str:
    """The UUID an instance runs under.

    ``session_id`` given as a UUID is used as is (normalised). Given as a name, it maps to
    uuid5(workspace + name): the same conversation in every run of the config, so a later
    run with ``resume: true`` continues it (claude keeps a session's transcript per working
    directory, so the workspace is part of the key). Absent, the instance gets a session of
    this orchestration's own: uuid5(orchestration id + instance name).
    """
    if session_id is not None:
        try:
            return str(uuid.UUID(session_id))
        except ValueError:
            return str(uuid.uuid5(NAMESPACE, f"session:{workspace}:{session_id}"))
    return str(uuid.uuid5(NAMESPACE, f"{orchestration_id}/{instance_name}"))
