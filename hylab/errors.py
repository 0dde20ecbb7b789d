"""User-facing errors: one line that names the problem and the fix."""


class UserError(Exception):
    """A problem with the user's input (config, files, checkpoints), reported without a traceback."""
