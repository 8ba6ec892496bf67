"""Typed errors that always name the file (and line) at fault."""

from __future__ import annotations

from pathlib import Path


class AllsegError(Exception):
    """Base class of every error allseg raises on purpose."""


class InputError(AllsegError):
    """A user-supplied file is missing, unreadable or malformed."""

    def __init__(self, path: str | Path, problem: str, line: int | None = None) -> None:
        self.path = Path(path)
        self.problem = problem
        self.line = line
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {problem}")


class ImageReadError(InputError):
    """An image file cannot be decoded into an RGB array."""


class ModelError(AllsegError):
    """A model folder is missing, invalid or unsafe to load."""
