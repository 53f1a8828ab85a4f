"""The one exception type users see for bad input; the CLI turns it into exit code 2."""


class SurgeryError(ValueError):
    """Bad input to the toolkit: the message says what is wrong and how to fix it."""
