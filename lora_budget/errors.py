"""Errors the library raises for bad user input. The CLI turns them into one-line messages."""


class LoraBudgetError(ValueError):
    """A problem with what the user asked for: unknown model, bad size, impossible spec."""


class UnknownNameError(LoraBudgetError):
    """A catalog lookup failed; the message names the closest entries."""
