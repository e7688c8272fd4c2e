"""Which photos a command reads: files as given, folders expanded, in order. Plain Python (no torch,
no numpy), so that `facesynth rotate` can list its photos and send them to its detection helper
before it imports torch (`facesynth.cli.run_command`)."""
from __future__ import annotations

from pathlib import Path

from face3d.errors import FaceSynthError

#: file types a folder given as IMAGE contributes
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
#: photos one run takes at most (folders expanded), checked before any work
MAX_PHOTOS = 100_000


def photo_list(paths: list[str], limit: int = MAX_PHOTOS, what: str = "photos in one run; split the run") -> list[str]:
    """The photos of `paths`: files as given, folders as their image files (sorted, not recursive;
    hidden files such as macOS's `._x.jpg` resource forks left out). More than `limit` is refused as
    `more than <limit> <what>`, before any photo is read."""
    out: list[str] = []
    for p in paths:
        folder = Path(p)
        if folder.is_dir():
            found = sorted(str(f) for f in folder.iterdir()
                           if f.is_file() and f.suffix.lower() in PHOTO_SUFFIXES and not f.name.startswith("."))
            if not found:
                raise FaceSynthError(f"{p}: a folder without photos ({', '.join(PHOTO_SUFFIXES)})")
            out += found
        else:
            out.append(str(p))
        if len(out) > limit:
            raise FaceSynthError(f"more than {limit} {what}")
    return out


def rotate_inputs(images: list[str], expression_from: str | None, pose_from: str | None) -> tuple[list[str], list[str]]:
    """(reference photos, photos) of a rotate run, each once and in the order the run detects their
    faces: the references (`--pose-from`, `--expression-from`; one photo given for both counts
    once) before the photos of `images` (`photo_list`)."""
    photos = photo_list(images)
    references = [r for r in dict.fromkeys((expression_from, pose_from)) if r]
    return references, photos
