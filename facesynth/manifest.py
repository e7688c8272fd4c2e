"""What a run writes beside its views: the JSON-lines manifest, the file names of views, the
record of each view, and the comparison of a folder's stored settings with a new run's."""
from __future__ import annotations

import json
import os
from pathlib import Path

from face3d.image_io import atomic_write_bytes


def angle_name(value: float) -> str:
    """An angle as file names write it: -7.5 -> m7p5."""
    return f"{value:g}".replace("-", "m").replace(".", "p")


def view_file_name(stem: str, pose) -> str:
    """`<stem>_yaw<y>_pitch<p>[_roll<r>].png`, minus signs as 'm' and points as 'p' (-7.5 -> m7p5)."""
    roll = f"_roll{angle_name(pose.roll)}" if pose.roll else ""
    return f"{stem}_yaw{angle_name(pose.yaw)}_pitch{angle_name(pose.pitch)}{roll}.png"


def view_record(source: str, output: str, face: int, pose, method: str, model, fit, size: int,
                extra: dict, faces: int | None = None) -> dict:
    """One manifest line of a view (`rotate`'s manifest.jsonl, and the web demo's zip): `extra`
    holds the variant's fields (expression, shape sample, SFS, and the weights' file and hash for
    `hybrid` and `gan`: `facesynth.api.FaceViews.record`). `faces`, when given, is how many faces the photo had (the
    name `augment`'s manifest uses); `face` is which of them the view shows (0: the largest)."""
    return {"source": source, "output": output, "face": face, **({} if faces is None else {"faces": faces}),
            "yaw": pose.yaw, "pitch": pose.pitch,
            "roll": pose.roll, "method": method, "model": model.name,
            "fit_landmark_error": round(fit.landmark_error, 6),
            "source_pose": {k: round(v, 3) for k, v in zip(("yaw", "pitch", "roll"), fit.pose.as_tuple())},
            "size": size, **extra}


class Manifest:
    """`DIR/manifest.jsonl`: each record goes out as one whole line in one write, then fsync."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def _encode(records: list[dict]) -> bytes:
        return "".join(json.dumps(r, sort_keys=False) + "\n" for r in records).encode()

    def read(self) -> list[dict]:
        """The records on disk; a line cut off by a killed run (not valid JSON) is dropped."""
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out

    def rewrite(self, records: list[dict]) -> None:
        """Replace the whole manifest with `records` (atomically: temp file, then rename)."""
        atomic_write_bytes(self.path, self._encode(records))

    def append(self, records: list[dict]) -> None:
        if not records:
            return
        data = self._encode(records)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)


def changed_setting(old: dict, new: dict, keys) -> str | None:
    """`key: old, now new` for the first of `keys` whose stored value differs from the new one, else
    None: what a run into a folder made with other flags is refused with (rotate --resume, augment)."""
    for k in keys:
        if old.get(k) != new.get(k):
            return f"{k}: {shown_setting(old.get(k))}, now {shown_setting(new.get(k))}"
    return None


def shown_setting(value, width: int = 120) -> str:
    """A stored setting as a refusal quotes it: its repr, cut to `width` characters (a list of
    reference photos or their coefficients would fill the screen)."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."
