"""The project's one exception type (and how foreign error text is kept to one line).

Library code raises :class:`ConvSegError` for anything the user can fix (a bad path, a bad
value, a missing package); the CLI turns it into a one-line ``Error: ...`` and exit code 1.
Anything else is a bug and keeps its traceback.
"""


class ConvSegError(Exception):
    """A user-facing error: the message names the file or value and says what to do."""


class MissingDependencyError(ConvSegError):
    """An optional package (tensorrt, pycuda, a CUDA GPU) is not available on this machine."""


def shorten(text: str, limit: int = 600) -> str:
    """``text`` on one line, at most ``limit`` characters, cut in the middle: the cause of a
    library's error ("Unsupported model IR version: 14, max 13") is usually at its end."""
    flat = " ".join(str(text).split())
    if len(flat) <= limit:
        return flat
    half = (limit - 5) // 2
    return f"{flat[:half]} ... {flat[-half:]}"


def one_line(exc: BaseException, limit: int = 600) -> str:
    """An exception for a one-line message: our own errors as written, others with their type
    (``shorten``: one line, cut in the middle)."""
    text = str(exc).strip()
    if not isinstance(exc, ConvSegError):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return shorten(text, limit)
