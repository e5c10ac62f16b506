"""The simulated API's error answers; the HTTP edge turns each into its status and the OpenAI error body.

ApiError            message and offending parameter, as in ``{"error": {"message", "param", ...}}``
├── NotFound        no thread, run or step with that id (404)
└── BadRequest      invalid parameters, or an action the run's status does not allow (400)
"""

from __future__ import annotations


class ApiError(Exception):
    """An error answer of the simulated API: its message and the request parameter at fault, if any."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class NotFound(ApiError):
    """No thread, run or step with that id (HTTP 404)."""


class BadRequest(ApiError):
    """The request is invalid, or not allowed in the run's current status (HTTP 400)."""
