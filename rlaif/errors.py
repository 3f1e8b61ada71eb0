"""The one exception type the CLI turns into a one-line message and a non-zero exit.

Raise `RlaifError` for anything a user can fix (bad config, missing model, no Docker engine); its
message must name the problem and the fix. Anything else is a bug and keeps its traceback.
"""


class RlaifError(Exception):
    """A user-facing error: the message names the problem and how to fix it."""

    exit_code: int = 2
