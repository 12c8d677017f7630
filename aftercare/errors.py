"""The two kinds of error the rest of the code raises on purpose."""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix (bad input, bad config); the CLI prints one line, exit 2."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


# What a permanent failure says about the patient's contact data, beyond this message.
PHONE_INVALID = "phone_invalid"
SMS_OPTED_OUT = "sms_opted_out"
EMAIL_INVALID = "email_invalid"


class SendError(Exception):
    """A channel could not send; `permanent` says whether retrying can ever help.

    `consequence` (PHONE_INVALID, SMS_OPTED_OUT, EMAIL_INVALID) marks the route itself as
    unusable, so no further message is attempted on it.
    """

    def __init__(self, reason: str, *, permanent: bool, code: str | None = None,
                 consequence: str | None = None, unknown_outcome: bool = False,
                 setup_problem: bool = False, flag: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.code = code
        self.consequence = consequence
        # The request may have reached the provider (e.g. a read timeout): sending again
        # blindly could deliver it twice, so the dispatcher asks the provider first.
        self.unknown_outcome = unknown_outcome
        # Our credentials or sender were refused: no fault of this message, so it keeps
        # its attempts and waits for the setup to be fixed (`aftercare check`).
        self.setup_problem = setup_problem
        # Something for staff to look at on the message (e.g. the carrier filtered it).
        self.flag = flag

    def describe(self) -> str:
        """The error as stored on a row (`last_error`): the provider's code, then why."""
        return (f"{self.code}: {self.reason}" if self.code else self.reason)[:500]

    def retryable(self, attempts: int, max_attempts: int) -> bool:
        """Whether another try may help and is still allowed."""
        return not self.permanent and attempts < max_attempts
