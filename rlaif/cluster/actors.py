"""What an error from a Ray actor call means for the caller."""

from __future__ import annotations


class NotStarted(RuntimeError):
    """Raised by an actor that needs `start()` first: Ray restarted it (a fresh instance) after it or its node died."""


def actor_lost(error: object) -> bool:
    """Whether the error means the actor (or its node) is gone or was restarted, rather than a failure inside the
    call: the caller takes the actor out of rotation until it is back and started again."""
    from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError

    if isinstance(error, RayTaskError):  # Ray's wrapper of an exception raised inside the call
        return isinstance(error.cause, NotStarted)
    return isinstance(error, RayActorError | ActorUnavailableError | NotStarted)
