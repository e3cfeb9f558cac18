"""Errors a client can fix, and the JSON body they are answered with."""

from __future__ import annotations


class ClientError(Exception):
    """A request the backend refuses; the message says what to change.

    :param message: what was wrong and how to fix it.
    :param field: the request field at fault, when there is one.
    :param status: the HTTP status to answer with (a 4xx).
    """

    status = 400
    field: str | None = None

    def __init__(
        self, message: str, *, field: str | None = None, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if field is not None:
            self.field = field
        if status is not None:
            self.status = status

    def to_dict(self) -> dict:
        """The JSON body for this error."""
        body = {"error": type(self).__name__, "message": self.message}
        if self.field:
            body["field"] = self.field
        return body
