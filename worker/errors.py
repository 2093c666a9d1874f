"""Errors the worker raises for bad input. Torch-free so the job API can import it."""


class BadInput(ValueError):
    """The job cannot run as specified (wrong width, unknown hook, bad position, ...).

    Raised before any record is written; the queue fails the job at once with this
    message and never retries it.
    """
