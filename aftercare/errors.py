"""The two kinds of error the rest of the code raises on purpose."""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix (bad input, bad config); the CLI prints one line, exit 2."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class SendError(Exception):
    """A channel could not send; `permanent` says whether retrying can ever help."""

    def __init__(self, reason: str, *, permanent: bool, code: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.code = code
