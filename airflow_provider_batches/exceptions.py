"""
The provider's one error tree, and which of its errors are worth trying again; it never does I/O and
imports nothing of ours but the constants and the models (leaves), so every other module may import it.

Every error carries its facts as attributes (status code, the server's message, the ``X-Request-ID``,
the call); callers branch on the class and read attributes, never parse a message. Messages are written
for a task log and never contain the API key.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

from airflow_provider_batches.constants import RETRYABLE_STATUSES
from airflow_provider_batches.models import Batch


class MKA1Error(AirflowException):
    """Base of every error this provider raises."""


class MKA1InvalidInputError(MKA1Error, ValueError):
    """A bad id, header value, argument or connection field, found before any request was sent."""


class MKA1ConnectionError(MKA1Error):
    """
    The API could not be reached or stopped answering (connection refused or dropped, timeout, truncated
    body), after the retries allowed.

    :param message: what happened, for the task log.
    :param method: HTTP method of the call, e.g. ``GET``.
    :param path: path of the call under the API base path, e.g. ``/batches/batch_abc``.
    """

    def __init__(self, message: str, *, method: str | None = None, path: str | None = None) -> None:
        super().__init__(message)
        self.method = method
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.__dict__, str(self)))

    def serialize(self) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
        """
        ``(class path, args, kwargs)``: what Airflow's serialization (and :func:`error_to_event`) rebuilds
        this error from, with its ``method`` and ``path``.
        """
        return _class_path(self), (str(self),), {"method": self.method, "path": self.path}


class MKA1APIError(MKA1Error):
    """
    The API answered with an error (or with a body that is not what it promises).

    :param status_code: HTTP status of the answer.
    :param message: the server's own message, taken from whichever error-body shape it used.
    :param method: HTTP method of the call.
    :param path: path of the call under the API base path.
    :param request_id: the answer's ``X-Request-ID``: what MKA1 support asks for.
    """

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        method: str | None = None,
        path: str | None = None,
        request_id: str | None = None,
    ) -> None:
        # Shadows AirflowException's class-level HTTPStatus on purpose: the status the API answered.
        self.status_code: int = status_code  # type: ignore[assignment]
        self.message = message
        self.method = method
        self.path = path
        self.request_id = request_id
        super().__init__(self._text())

    def _text(self) -> str:
        try:
            reason = f"{self.status_code} {HTTPStatus(self.status_code).phrase}"
        except ValueError:
            reason = str(self.status_code)
        call = f"{self.method} {self.path}" if self.method and self.path else "call"
        text = f"MKA1 API {call} answered {reason}"
        if self.message:
            text += f": {self.message}"
        return text + f" (request id {self.request_id or 'not given'})"

    def __str__(self) -> str:
        return self._text()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status_code={self.status_code!r}, message={self.message!r}, "
            f"method={self.method!r}, path={self.path!r}, request_id={self.request_id!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.__dict__, str(self)))

    def serialize(self) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
        """
        ``(class path, (status_code, message), kwargs)``: what Airflow's serialization (and
        :func:`error_to_event`) rebuilds this error from, with its ``method``, ``path`` and ``request_id``.
        """
        kwargs = {"method": self.method, "path": self.path, "request_id": self.request_id}
        return _class_path(self), (self.status_code, self.message), kwargs


class MKA1AuthenticationError(MKA1APIError):
    """401 or 403: the API key is missing, wrong or not allowed to do this."""


class MKA1NotFoundError(MKA1APIError):
    """404: no such batch or file (or it belongs to another key or end user)."""


class MKA1BadRequestError(MKA1APIError):
    """Any other 4xx (and any other status the retry rule does not retry): the request itself is wrong."""


class MKA1RateLimitError(MKA1APIError):
    """429: over the API key's rate limit, after the retries allowed."""


class MKA1ServerError(MKA1APIError):
    """5xx: the API or a proxy in front of it failed, after the retries allowed."""


class MKA1InvalidResponseError(MKA1APIError):
    """The answer's body is not what the API promises (not JSON, wrong shape, a bad result line)."""


class MKA1BatchOutcomeError(MKA1Error, AirflowFailException):
    """
    A batch ended in a way the task must fail for. Final: retrying the task would not change the batch.

    :param message: what happened to the batch, for the task log.
    :param batch: the batch as last read (a :class:`~airflow_provider_batches.models.Batch` or its JSON).
    """

    def __init__(self, message: str, batch: Batch | dict[str, Any] | None = None) -> None:
        super().__init__(message)
        if isinstance(batch, dict):
            batch = Batch.model_validate(batch)
        self.batch = batch

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.__dict__, str(self)))

    def serialize(self) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
        """
        ``(class path, (message,), {"batch": ...})``: what Airflow's serialization rebuilds this error from,
        the batch as JSON (``None`` if there is none).
        """
        batch = self.batch.model_dump(mode="json") if self.batch is not None else None
        return _class_path(self), (str(self),), {"batch": batch}


class MKA1BatchFailedError(MKA1BatchOutcomeError):
    """The batch failed (usually validation of its input file); its ``errors`` say why."""


class MKA1BatchExpiredError(MKA1BatchOutcomeError):
    """The batch's completion window passed before it finished."""


class MKA1BatchCancelledError(MKA1BatchOutcomeError):
    """The batch was cancelled."""


class MKA1BatchPartialFailureError(MKA1BatchOutcomeError):
    """The batch completed, but more of its requests failed than the task allows."""


def _class_path(exc: BaseException) -> str:
    return f"{type(exc).__module__}.{type(exc).__qualname__}"


def _rebuild(cls: type[BaseException], state: dict[str, Any], text: str) -> BaseException:
    # Our constructors take keyword arguments that BaseException's default pickling does not replay.
    exc = cls.__new__(cls)
    exc.args = (text,)
    exc.__dict__.update(state)
    return exc


def is_transient(exc: BaseException) -> bool:
    """
    Whether ``exc`` is worth trying again later (the retry rule's verdict on an error; its statuses are
    :data:`~airflow_provider_batches.constants.RETRYABLE_STATUSES`).

    :param exc: an error raised by :class:`~airflow_provider_batches.hooks.mka1.MKA1Hook` (or a bare
        network error from elsewhere).
    """
    if isinstance(exc, MKA1ConnectionError):
        return True
    if isinstance(exc, MKA1InvalidResponseError):
        return False
    if isinstance(exc, MKA1APIError):
        return exc.status_code in RETRYABLE_STATUSES
    if isinstance(exc, MKA1Error):
        return False
    return isinstance(exc, (ConnectionError, TimeoutError))


_EVENT_ERRORS: dict[str, type[MKA1Error]] = {
    cls.__name__: cls
    for cls in (
        MKA1Error,
        MKA1InvalidInputError,
        MKA1ConnectionError,
        MKA1APIError,
        MKA1AuthenticationError,
        MKA1NotFoundError,
        MKA1BadRequestError,
        MKA1RateLimitError,
        MKA1ServerError,
        MKA1InvalidResponseError,
    )
}


def error_to_event(exc: BaseException) -> dict[str, Any]:
    """
    ``exc`` as JSON for a trigger event, so that the task raises the same class with the same facts
    (:func:`error_from_event`). Carries ``type``, ``status_code`` and ``request_id`` for readers too.
    """
    if isinstance(exc, (MKA1APIError, MKA1ConnectionError)):
        _, args, kwargs = exc.serialize()
    else:
        args, kwargs = (str(exc),), {}
    name = type(exc).__name__ if type(exc).__name__ in _EVENT_ERRORS else MKA1Error.__name__
    return {
        "type": name,
        "status_code": getattr(exc, "status_code", None) if isinstance(exc, MKA1APIError) else None,
        "request_id": getattr(exc, "request_id", None),
        "args": list(args),
        "kwargs": kwargs,
    }


def error_from_event(error: dict[str, Any], fallback: str) -> MKA1Error:
    """The error a trigger event carries (see :func:`error_to_event`); ``fallback`` if it is unreadable."""
    cls = _EVENT_ERRORS.get(str(error.get("type")), MKA1Error)
    try:
        return cls(*error.get("args", ()), **error.get("kwargs", {}))
    except Exception:
        return MKA1Error(fallback)
