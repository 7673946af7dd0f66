"""User-facing errors: each carries one line of text and the exit code the CLI returns for it."""
from __future__ import annotations

#: Exit codes shared by every command (documented in docs/cli.md).
EXIT_OK = 0
EXIT_FINDINGS = 1  # a check ran and found problems (audit, check, diff "different", grads, nan)
EXIT_USAGE = 2  # bad input: usage, load or read errors


class ModscopeError(Exception):
    """An error whose message is meant for the user: what was wrong and what to do."""

    exit_code = EXIT_USAGE


class UsageError(ModscopeError):
    """The command line or API call itself is wrong (bad option value, malformed spec)."""


class LoadError(ModscopeError):
    """A TARGET could not be turned into an nn.Module."""


class CheckpointError(ModscopeError):
    """A checkpoint file or directory could not be read."""


class UnsafeLoadError(LoadError):
    """Loading would execute pickled code and the user did not pass --trust."""


class ForwardError(ModscopeError):
    """The model's forward pass raised; ``partial`` holds whatever was recorded before it did."""

    def __init__(self, message: str, partial=None):
        super().__init__(message)
        self.partial = partial


class RenderError(ModscopeError):
    """A graph could not be drawn: Graphviz's ``dot`` is missing or failed."""
