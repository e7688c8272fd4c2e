"""User-facing errors: each carries a one-line message that the CLI prints without a traceback."""


class FaceSynthError(Exception):
    """An error caused by the user's input or environment (bad file, missing model, no face...)."""


class NoFaceError(FaceSynthError):
    """The detector found no face in the image."""
