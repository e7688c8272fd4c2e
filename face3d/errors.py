"""User-facing errors: each carries a one-line message that the CLI prints without a traceback."""


class FaceSynthError(Exception):
    """An error caused by the user's input or environment (bad file, missing model, no face...)."""


class NoFaceError(FaceSynthError):
    """The detector found no face in the image."""


def internal_error_line(where: str, exc: BaseException) -> str:
    """The one line that reports an exception no check foresaw, raised while working on `where` (a
    file, or a flag and a file): "<where>: internal error: <type>: <the first line of its message>",
    never a traceback."""
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{where}: internal error: {type(exc).__name__}: {first}"
