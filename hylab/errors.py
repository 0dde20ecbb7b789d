"""User-facing errors: one line that names the problem and the fix."""


class UserError(Exception):
    """A problem with the user's input (config, files, checkpoints), reported without a traceback."""


class RunNotStarted(UserError):
    """Bad input found once the run was built but before its first training step (a `monitor` it
    never logs): the run folder holds nothing of value and is removed, as for a check before torch."""
