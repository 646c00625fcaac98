"""The errors pgflow raises on purpose.

Everything the tools raise deliberately derives from :class:`PgflowError`, so a
command line front end can catch that one class and print a one-line message
instead of a traceback.  Anything else escaping is a bug.
"""

from __future__ import annotations

from collections.abc import Sequence


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
