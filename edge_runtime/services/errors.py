"""What a service can refuse, by meaning; the API maps each kind to one HTTP status."""

from __future__ import annotations


class NotFoundError(LookupError):
    """No such product, job, inspection or version (HTTP 404)."""


class ConflictError(RuntimeError):
    """The request conflicts with the current state (HTTP 409)."""


class InvalidRequestError(ValueError):
    """The request is well-formed but cannot be acted on (HTTP 422)."""


class GoneError(LookupError):
    """It existed, but is no longer kept (HTTP 410)."""


class ProductExistsError(ConflictError):
    """A product with that name already exists."""


class NotTrainedError(ConflictError):
    """The product has no trained model yet."""


class JobConflictError(ConflictError):
    """Another training job is running."""


class TooFewCapturesError(ConflictError):
    """Not enough captures to train yet: a state to change (add captures), not bad input."""


def found(row: dict | None, message: str) -> dict:
    """``row``, or NotFoundError(message) when the lookup found nothing."""
    if row is None:
        raise NotFoundError(message)
    return row
