"""The simulated API's error answers; the HTTP edge turns each into its status and the OpenAI error body.

ApiError            message and offending parameter, as in ``{"error": {"message", "param", ...}}``
├── NotFound        no object with that id, or one the API no longer keeps (404)
├── Conflict        an action the object's status forbids, where the API answers 409 (cancelling an ended batch)
└── BadRequest      invalid parameters, or an action the object's status does not allow (400)
"""

from __future__ import annotations


class ApiError(Exception):
    """An error answer of the simulated API: its message and the request parameter at fault, if any."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class NotFound(ApiError):
    """No object with that id, or one the API no longer keeps (HTTP 404)."""


class Conflict(ApiError):
    """The object's status forbids the action, and the API says so with HTTP 409."""


class BadRequest(ApiError):
    """The request is invalid, or not allowed in the object's current status (HTTP 400)."""
