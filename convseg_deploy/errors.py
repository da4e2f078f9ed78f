"""The project's one exception type.

Library code raises :class:`ConvSegError` for anything the user can fix (a bad path, a bad
value, a missing package); the CLI turns it into a one-line ``Error: ...`` and exit code 1.
Anything else is a bug and keeps its traceback.
"""


class ConvSegError(Exception):
    """A user-facing error: the message names the file or value and says what to do."""


class MissingDependencyError(ConvSegError):
    """An optional package (tensorrt, pycuda, a CUDA GPU) is not available on this machine."""
