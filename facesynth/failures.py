"""The failures file of a resumable cache command (`learn-albedo`, `learn-profile-landmarks`): one
photo per line, `path<TAB>reason`; a photo listed there is not tried again when the command is run
again on the same cache."""
from __future__ import annotations

from pathlib import Path

from face3d.errors import FaceSynthError, internal_error_line
from face3d.image_io import atomic_write_bytes


def failure_reason(photo: Path, exc: Exception) -> str:
    """One line for the file: the message of a foreseen error, or `internal_error_line` for an
    unforeseen one."""
    if isinstance(exc, FaceSynthError):
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return internal_error_line(str(photo), exc)


def read_failures(path: Path) -> dict[str, str]:
    """photo -> reason, from `path` (empty when it does not exist)."""
    failed = {}
    if path.exists():
        for line in path.read_text().splitlines():
            name, _, why = line.partition("\t")
            failed[name] = why
    return failed


def write_failures(path: Path, failed: dict[str, str]) -> None:
    """Write `failed` to `path` (sorted; a temporary file, then renamed)."""
    atomic_write_bytes(path, "".join(f"{k}\t{v}\n" for k, v in sorted(failed.items())).encode())
