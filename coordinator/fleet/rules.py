"""The fleet's decisions, pure: queue names for labels, job payloads, what a claim means
(first launch, take-over that continues the session, take-over that starts again, nothing
to do), when a runner must fence itself, and the not-before time of each instance."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import orjson

from coordinator.errors import UsageError

ENTRYPOINT = "coordinator"  # the pgqueuer entrypoint of an instance without labels
MAX_RUNNER_LABELS = 8  # a runner listens on every subset of its labels: 2**8 queues at most
LABEL = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# Statuses an instance row keeps only while some process runs (or will run) it.
UNFINISHED = frozenset(
    {"pending", "starting", "running", "waiting", "paused", "retrying", "rate_limited"}
)
# A runner whose own heartbeat has not been renewed for this part of the lease stops its
# copies: after the full lease another runner may take them over, and two must never run.
SELF_FENCE_FRACTION = 0.6
# ... and whatever of them is still alive at this part of the lease is SIGKILLed (the stop's
# grace is cut to fit): the rest of the lease is the margin for the kill to land.
KILL_BY_FRACTION = 0.85


def entrypoint_for(labels: Iterable[str]) -> str:
    """The queue (pgqueuer entrypoint) of an instance that asks for ``labels``."""
    wanted = sorted(set(labels))
    return ENTRYPOINT if not wanted else f"{ENTRYPOINT}:{','.join(wanted)}"


def entrypoints_for_runner(labels: Sequence[str]) -> list[str]:
    """Every queue a runner with ``labels`` serves: one per subset of its labels (an
    instance asking for a subset of what the runner has may run there)."""
    have = sorted(set(labels))
    if len(have) > MAX_RUNNER_LABELS:
        raise UsageError(f"--labels: at most {MAX_RUNNER_LABELS} labels per runner")
    return [
        entrypoint_for(subset)
        for size in range(len(have) + 1)
        for subset in itertools.combinations(have, size)
    ]


def parse_labels(text: str | None) -> tuple[str, ...]:
    """``--labels a,b``: names of letters, digits, ``_ . -``; empty parts are ignored."""
    if not text:
        return ()
    labels = [part.strip() for part in text.split(",") if part.strip()]
    for label in labels:
        if not LABEL.match(label):
            raise UsageError(
                f"--labels: {label!r} is not a label (letters, digits, '_', '.', '-'; "
                "at most 64 characters)"
            )
    return tuple(sorted(set(labels)))


@dataclass(frozen=True, slots=True)
class JobPayload:
    orchestration_id: str
    instance: str

    def encode(self) -> bytes:
        return orjson.dumps({"o": self.orchestration_id, "i": self.instance})

    @classmethod
    def decode(cls, raw: bytes | None) -> JobPayload | None:
        """None for a payload that is not ours (another user of the same pgqueuer)."""
        try:
            data = orjson.loads(raw or b"")
        except orjson.JSONDecodeError:
            return None
        if not isinstance(data, dict):
            return None
        orch, inst = data.get("o"), data.get("i")
        if not isinstance(orch, str) or not isinstance(inst, str):
            return None
        return cls(orch, inst)


class ClaimAction(StrEnum):
    FIRST = "first"  # never launched: the plan's own first launch
    CONTINUE = "continue"  # taken over: continue its claude session (transcript visible)
    RESTART = "restart"  # taken over, transcript not visible here: a new attempt from the start
    ENDED = "ended"  # the row already ended (its runner died before it acked): nothing to run


def decide_claim(
    status: str, attempts: int, session_exists: bool, transcript_visible: bool
) -> ClaimAction:
    """What a runner does with an instance it just claimed, from the row it found."""
    if status not in UNFINISHED:
        return ClaimAction.ENDED
    if attempts == 0 and not session_exists:
        return ClaimAction.FIRST
    if session_exists and transcript_visible:
        return ClaimAction.CONTINUE
    return ClaimAction.RESTART


def must_self_fence(since_renewed_s: float, lease_s: float) -> bool:
    """The runner could not renew its lease for long enough that its claims may be taken
    soon: it stops its copies now rather than risk two runs of one instance."""
    return since_renewed_s >= lease_s * SELF_FENCE_FRACTION


def kill_within(since_renewed_s: float, lease_s: float) -> float:
    """How long a self-fenced copy may take to stop before it is SIGKILLed: until
    KILL_BY_FRACTION of the lease since the last renewal (0: at once)."""
    return max(0.0, lease_s * KILL_BY_FRACTION - since_renewed_s)


def fenced_out(held_epoch: int, row_epoch: int | None) -> bool:
    """The instance was claimed again by someone else (or its row is gone)."""
    return row_epoch is None or row_epoch != held_epoch


def not_before_s(offset_s: float, start_in_s: float) -> float:
    """Seconds from now until an instance may be claimed: ``--start-at`` plus its stagger."""
    return max(0.0, start_in_s) + max(0.0, offset_s)


# ------------------------------------------------------------------ control of fleet runs
HOSTED_SEPARATOR = "@"  # a `run --fleet` run's queues: "<label queue>@<orchestration id>"


def hosted_entrypoint(labels: Iterable[str], orchestration_id: str) -> str:
    """The queue of an instance of a hosted run (``run --fleet``): its own, so that the
    run's own process claims only its instances, and runners join it on purpose."""
    return f"{entrypoint_for(labels)}{HOSTED_SEPARATOR}{orchestration_id}"


def serves(runner_labels: Sequence[str], entrypoint: str) -> bool:
    """Whether a runner with ``runner_labels`` may claim from ``entrypoint`` (the labels
    the queue asks for are a subset of the runner's)."""
    base = entrypoint.split(HOSTED_SEPARATOR, 1)[0]
    if base == ENTRYPOINT:
        return True
    prefix = f"{ENTRYPOINT}:"
    if not base.startswith(prefix):
        return False
    return set(base[len(prefix) :].split(",")) <= set(runner_labels)


class Route(StrEnum):
    ENDED = "ended"  # already finished: nothing to do
    UNCLAIMED = "unclaimed"  # no runner claimed it yet: applied to its row by the taker
    HELD = "held"  # a runner claimed it: that runner applies it and answers


def route(status: str, claimed: bool) -> Route:
    """Where a control command's verb takes effect for one instance of a fleet run."""
    if status not in UNFINISHED:
        return Route.ENDED
    if not claimed and status in ("pending", "paused"):
        return Route.UNCLAIMED
    return Route.HELD
