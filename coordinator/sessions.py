"""Session IDs: a UUID is used as is; any other name maps to a stable UUID."""

from __future__ import annotations

import uuid

# A fixed namespace so the mapping is stable across hosts and versions.
NAMESPACE = uuid.UUID("6f1c0b39-2a7e-5e7a-9c55-3b0d2f6f4e11")


def session_uuid(orchestration_id: str, instance_name: str, session_id: str | None) -> str:
    """The UUID an instance runs under.

    ``session_id`` given as a UUID is used as is (normalised); given as a name it maps to
    uuid5(orchestration id + name); absent, to uuid5(orchestration id + instance name).
    """
    if session_id is not None:
        try:
            return str(uuid.UUID(session_id))
        except ValueError:
            key = session_id
    else:
        key = instance_name
    return str(uuid.uuid5(NAMESPACE, f"{orchestration_id}/{key}"))
