"""Every error pgflow raises on purpose.

Everything the package raises deliberately derives from :class:`PgflowError`,
so a command line front end can catch that one class and print a one-line
message instead of a traceback.  Anything else escaping is a bug.

Errors the extension raises arrive as :class:`DatabaseError` subclasses chosen
by SQLSTATE (:func:`database_error`; :mod:`pgflow.db` does the translation),
so applications catch ``pgflow.errors.RunNotFound`` rather than a psycopg
class and a message to parse.  This module imports nothing but the standard
library: every layer may use it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final


def one_line(text: str) -> str:
    """``text`` with line breaks and other unprintable characters escaped."""
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
        for c in text
    )


class PgflowError(Exception):
    """Base class of every error pgflow raises on purpose."""


class SpecError(PgflowError):
    """A flow spec is invalid.

    Carries where the problem is (``file``, ``line``, ``key``) and what it is
    (``message``); ``str()`` renders ``file:line: key: message``.  A spec with
    several problems raises one ``SpecError`` for the first and lists the rest
    in ``more``; :attr:`errors` gives all of them in order.
    """

    def __init__(
        self,
        file: str,
        line: int | None,
        key: str,
        message: str,
        *,
        more: Sequence[SpecError] = (),
    ) -> None:
        self.file = file
        self.line = line
        self.key = key
        self.message = message
        self.more: tuple[SpecError, ...] = tuple(more)
        super().__init__(self.rendered)

    @property
    def rendered(self) -> str:
        """The one-line form ``file:line: key: message`` (parts left out when unknown)."""
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        what = f"{self.key}: {self.message}" if self.key else self.message
        return one_line(f"{where}: {what}")

    @property
    def errors(self) -> tuple[SpecError, ...]:
        """This error followed by the others found in the same pass."""
        return (self, *self.more)

    @classmethod
    def collect(cls, errors: Sequence[SpecError]) -> SpecError:
        """One error standing for a non-empty list of them."""
        first, *rest = errors
        return cls(first.file, first.line, first.key, first.message, more=rest)


class CompileError(PgflowError):
    """The compiler produced SQL that does not parse: a bug in pgflow, never in the spec."""


class LoadError(PgflowError):
    """A SPEC argument names nothing loadable (missing file, module without flows, ...)."""


class HandlerError(PgflowError):
    """A step handler reference cannot be resolved to a callable."""


class ScaffoldError(PgflowError):
    """A flow cannot be scaffolded with these arguments (``pgflow new``)."""


class UnquotedValueError(CompileError):
    """A template printed a value without passing it through a quoting filter."""


class InstallError(PgflowError):
    """pgflow cannot be installed or upgraded as asked."""


class VersionMismatchError(PgflowError):
    """The database runs another pgflow version than these tools (or none)."""


class ShapeMismatchError(PgflowError):
    """The database holds a different definition of a flow than the spec."""


class RunTimeoutError(PgflowError):
    """A run did not finish within the time asked for."""


class RunNotCompleted(PgflowError):
    """A run ended without completing, so it has no result (:meth:`pgflow.RunHandle.result`).

    ``run`` is the finished run as ``pgflow.get_run`` describes it, ``run_id``
    and ``flow_slug`` name it, ``status`` is ``"failed"`` or ``"cancelled"``.
    """

    def __init__(self, message: str, run: Mapping[str, object]) -> None:
        self.run: Mapping[str, object] = run
        self.run_id = str(run.get("run_id"))
        self.flow_slug = str(run.get("flow_slug"))
        self.status = str(run.get("status"))
        super().__init__(one_line(message))


class RunFailed(RunNotCompleted):
    """The run failed: ``step_slug`` is the step that failed it (``None`` when no step
    did, e.g. a map over a non-array input), ``error_message`` the step's error (or the
    run's)."""

    def __init__(
        self, message: str, run: Mapping[str, object], step_slug: str | None, error_message: str
    ) -> None:
        self.step_slug = step_slug
        self.error_message = error_message
        super().__init__(message, run)


class RunCancelled(RunNotCompleted):
    """The run was cancelled (``pgflow.cancel_run``) before it completed."""


class JsonTooDeep(PgflowError):
    """A JSON value is nested more deeply than Python's json module can read or write
    (about ``sys.getrecursionlimit()`` levels); PostgreSQL itself may hold it."""


class ConfigError(PgflowError):
    """A worker setting is out of range (:class:`pgflow.worker.WorkerConfig`)."""


class ClusterError(PgflowError):
    """A throwaway cluster could not be created, started or stopped (``pgflow.testing``)."""


# --------------------------------------------------------------------------- database


class DatabaseError(PgflowError):
    """An error PostgreSQL reported for a pgflow call.

    ``sqlstate`` is the five-character SQLSTATE (``None`` when the connection
    itself failed), ``message`` the primary message, ``hint`` and ``detail``
    what the server added.  ``str()`` is the message on one line.
    ``transient``: the same call may succeed if tried again later.
    """

    transient: bool = False

    def __init__(
        self,
        message: str,
        *,
        sqlstate: str | None = None,
        hint: str | None = None,
        detail: str | None = None,
    ) -> None:
        self.message = one_line(" ".join(message.split()))
        self.sqlstate = sqlstate
        self.hint = hint
        self.detail = detail
        super().__init__(self.message)


class ConnectionFailed(DatabaseError):
    """The database could not be reached, refused the connection, or the connection broke
    (SQLSTATE class 08, 57P01-57P03, or no SQLSTATE at all)."""

    transient = True


class TransactionConflict(DatabaseError):
    """The transaction was rolled back by a deadlock or serialisation failure (class 40)."""

    transient = True


class InvalidArgument(DatabaseError):
    """An argument the extension refuses (SQLSTATE class 22: NULL, out of range, not JSON, ...)."""


class NotFound(DatabaseError):
    """Something named does not exist (SQLSTATE 42704)."""


class FlowNotFound(NotFound):
    """The flow named does not exist."""


class RunNotFound(NotFound):
    """The run named does not exist."""


class DefinitionConflict(DatabaseError):
    """A definition differs in structure from the one the database has (SQLSTATE 42P17)."""


class InvalidState(DatabaseError):
    """The object is not in a state that allows the call (SQLSTATE 55000), e.g. retrying a
    running run or deleting a flow that has runs."""


class RunIdConflict(DatabaseError):
    """The run id is already used by a run of another flow (SQLSTATE 23505)."""


class PermissionDenied(DatabaseError):
    """The role lacks a privilege (SQLSTATE 42501); the hint names the grant that gives it."""


#: The error class of each SQLSTATE the extension raises on purpose.
SQLSTATE_ERRORS: Final[Mapping[str, type[DatabaseError]]] = {
    "22004": InvalidArgument,  # null_value_not_allowed
    "22023": InvalidArgument,  # invalid_parameter_value
    "22P02": InvalidArgument,  # invalid_text_representation (a uuid, a json text)
    "22P05": InvalidArgument,  # untranslatable_character (\u0000 in jsonb)
    "22003": InvalidArgument,  # numeric_value_out_of_range
    "54000": InvalidArgument,  # program_limit_exceeded (jsonb too large or too deep)
    "54001": InvalidArgument,  # statement_too_complex (nesting)
    "42704": NotFound,  # undefined_object
    "42P17": DefinitionConflict,  # invalid_object_definition
    "55000": InvalidState,  # object_not_in_prerequisite_state
    "23505": RunIdConflict,  # unique_violation
    "42501": PermissionDenied,  # insufficient_privilege
}


#: admin_shutdown, crash_shutdown, cannot_connect_now: the server ends or refuses sessions.
_SERVER_GOING: Final = frozenset({"57P01", "57P02", "57P03"})


def database_error(
    sqlstate: str | None,
    message: str,
    *,
    hint: str | None = None,
    detail: str | None = None,
    not_found: type[NotFound] = NotFound,
) -> DatabaseError:
    """The typed error for a server error.

    ``not_found`` refines 42704 by what the caller asked for (a run, a flow):
    the caller knows which object its call names, so nothing reads the
    message text.  Connection-level failures (class 08, and errors without a
    SQLSTATE) are :class:`ConnectionFailed`.
    """
    if sqlstate is None or sqlstate.startswith("08") or sqlstate in _SERVER_GOING:
        return ConnectionFailed(message, sqlstate=sqlstate, hint=hint, detail=detail)
    if sqlstate.startswith("40"):
        return TransactionConflict(message, sqlstate=sqlstate, hint=hint, detail=detail)
    cls = SQLSTATE_ERRORS.get(sqlstate, DatabaseError)
    if cls is NotFound:
        cls = not_found
    return cls(message, sqlstate=sqlstate, hint=hint, detail=detail)


# --------------------------------------------------------------------------- raised by handlers


class Fail(PgflowError):
    """Raised by a handler: this attempt failed and retrying cannot help.

    The task fails at once, its remaining attempts unused, and the step's
    ``when_exhausted`` applies (``fail_task(..., retry => false)``)::

        if card.declined:
            raise pgflow.Fail("card declined")
    """


class RetryAfter(PgflowError):
    """Raised by a handler: this attempt failed; try again after ``seconds``.

    Replaces the step's backoff for this retry (``fail_task(...,
    retry_delay => seconds)``), capped at the step's ``max_delay``; with no
    attempts left the task fails as usual::

        if response.status == 429:
            raise pgflow.RetryAfter(float(response.headers["Retry-After"]), "rate limited")
    """

    def __init__(self, seconds: float, message: str = "") -> None:
        if not seconds >= 0 or seconds == float("inf"):
            raise ValueError(f"RetryAfter needs a finite number of seconds >= 0, got {seconds!r}")
        self.seconds = float(seconds)
        super().__init__(message or f"retry after {self.seconds:g} s")
