"""Errors that patchlens raises for a user's mistake.

Each carries a one-line message that names the file or value at fault and the
reason, so the CLI can print it without a traceback.
"""

from __future__ import annotations


class PatchlensError(Exception):
    """Base class: a problem with the user's input, model or options."""


class ImageError(PatchlensError, ValueError):
    """An image could not be read or is not usable."""


class ModelError(PatchlensError, RuntimeError):
    """A model could not be loaded, or returned something unusable."""


class TargetError(PatchlensError, ValueError):
    """A target class specification does not name a class of the model."""


class MethodError(PatchlensError, ValueError):
    """An unknown method, or a parameter out of range."""


class BudgetError(PatchlensError, RuntimeError):
    """A job cannot go on: it would run more forward passes than its budget allows, or its model's server is gone.

    A sampling method keeps the rounds it finished before this as a partial map.
    """


class Cancelled(Exception):
    """A job was cancelled while it ran (not a user error: nothing was wrong with the input)."""


class QueryBudgetError(BudgetError, ModelError):
    """A remote model's query budget (``max_queries`` images) is spent; the explanation stopped unfinished."""


class ServerUnavailableError(BudgetError, ModelError):
    """A remote model's server stopped answering (every retry failed); like a spent budget, the rounds done are kept."""


class MetricError(PatchlensError, ValueError):
    """An unknown metric, a missing ground truth, or a bad metric option."""
