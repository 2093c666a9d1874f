"""Errors the worker raises for bad input, and how any error reads in one line. Torch-free
so the job API can import it."""

from __future__ import annotations

MAX_MESSAGE = 400  # characters of an error kept in a one-line message


class BadInput(ValueError):
    """The job cannot run as specified (wrong width, unknown hook, bad position, ...).

    Raised before any record is written; the queue fails the job at once with this
    message and never retries it.
    """


class QueueUnavailable(RuntimeError):
    """The broker could not take a job; nothing was stored."""


def one_line(error: BaseException) -> str:
    """The error's message on one line (multi-line messages joined by '; '), at most MAX_MESSAGE characters."""
    text = "; ".join(part.strip() for part in str(error).splitlines() if part.strip()) or type(error).__name__
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def describe(error: BaseException) -> str:
    """One line for the user: a BadInput's own message, else the error's type and message."""
    if isinstance(error, BadInput):
        return one_line(error)
    return f"{type(error).__name__}: {one_line(error)}"
