"""Helpers that run in the background are context managers the same way: start on entry, stop on exit."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self


class StartStop:
    """``with X(...) as x`` starts ``x`` and stops it on leaving, whatever happened inside."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> Any:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
