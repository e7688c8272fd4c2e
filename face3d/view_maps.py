"""Per-view maps beside the picture: the head's depth, its surface normals and its mask.

    maps = view_maps(vertices, model, poses, size, frame_vertices)       # {"depth": (B, S, S), ...}
    png = encode_map("depth", maps["depth"][0])                                   # PNG bytes

Conventions, in the pixels of the written view:
- `depth`: 16-bit grey PNG, the view depth of the head's surface in units of DEPTH_UNIT_MM
  (0.1 mm; 0 where no head surface is seen); the camera sits at the origin of the view's camera
  (see the manifest's `camera`).
- `normals`: 16-bit RGB PNG of the unit surface normal in the view's camera frame (x right, y up,
  z toward the viewer), each component c stored as round((c + 1) / 2 * 65535); 0, 0, 0 where no
  head surface is seen.
- `mask`: 8-bit grey PNG, 255 where the head mesh covers the pixel's centre, 0 elsewhere (after
  an ArcFace alignment, bilinear in between).
Only the head mesh is in the maps (not the teeth of an opened mouth, not the whole-photo background).
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from face3d.camera import Pose, pose_matrix
from face3d.errors import FaceSynthError
from face3d.labels import cv_affine
from face3d.morphable_model import MorphableModel
from face3d.rasterizer import interpolate_vertex_attributes, rasterize_meshes
from face3d.render import view_screen
from face3d.shading import vertex_normals

MAP_NAMES = ("depth", "normals", "mask")
DEPTH_UNIT_MM = 0.1


def parse_maps(text: str | None) -> tuple[str, ...]:
    """'depth,normals' -> ('depth', 'normals'); None or '' -> (); a one-line error for unknown names."""
    if not text:
        return ()
    names = tuple(dict.fromkeys(t.strip() for t in text.split(",")))
    bad = [n for n in names if n not in MAP_NAMES]
    if bad:
        raise FaceSynthError(f"unknown map(s) {', '.join(repr(b) for b in bad)}; choose from {', '.join(MAP_NAMES)}")
    return names


def view_maps(vertices: torch.Tensor, model: MorphableModel, poses: list[Pose], size: int,
              frame_vertices: torch.Tensor | None = None, names=MAP_NAMES) -> dict[str, np.ndarray]:
    """The maps `names` of the views `render_views` makes of `vertices` at `poses` and `size`:
    depth (B, S, S) mm (0: none), normals (B, S, S, 3) camera frame (0: none), mask (B, S, S) 0 or 1."""
    out: dict[str, np.ndarray] = {}
    faces = model.tensors()["triangles"]
    with torch.no_grad():
        screen = view_screen(vertices, model, poses, size, frame_vertices)
        frag = rasterize_meshes(screen, faces, size, cull_backfaces=True)
        hit = frag.pix_to_face >= 0
        if "mask" in names:
            out["mask"] = hit.numpy().astype(np.float32)
        if "depth" in names:
            out["depth"] = torch.where(hit, frag.zbuf, torch.zeros_like(frag.zbuf)).numpy().astype(np.float32)
        if "normals" in names:
            R = torch.from_numpy(np.stack([pose_matrix(p) for p in poses]).astype(np.float32))
            n = vertex_normals(vertices, faces).expand(len(poses), -1, -1) @ R.transpose(1, 2)
            pix = F.normalize(interpolate_vertex_attributes(frag, faces, n), dim=-1)
            out["normals"] = torch.where(hit[..., None], pix, torch.zeros_like(pix)).numpy().astype(np.float32)
    return out


def encode_map(name: str, array: np.ndarray) -> bytes:
    """One view's map as PNG bytes, in the module docstring's encoding."""
    if name == "depth":
        img = np.clip(np.round(array / DEPTH_UNIT_MM), 0, 65535).astype(np.uint16)
    elif name == "normals":
        seen = np.abs(array).sum(axis=-1, keepdims=True) > 0
        img = np.where(seen, np.clip(np.round((array + 1.0) / 2.0 * 65535), 0, 65535), 0).astype(np.uint16)
        img = np.ascontiguousarray(img[..., ::-1])            # OpenCV writes BGR
    elif name == "mask":
        img = np.clip(np.round(array * 255.0), 0, 255).astype(np.uint8)
    else:
        raise FaceSynthError(f"unknown map {name!r}")
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise FaceSynthError(f"could not encode the {name} map")
    return buf.tobytes()


def decode_map(name: str, data: bytes) -> np.ndarray:
    """The inverse of `encode_map` (to the precision of the encoding): what a reader does."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if name == "depth":
        return img.astype(np.float32) * DEPTH_UNIT_MM
    if name == "normals":
        rgb = img[..., ::-1].astype(np.float32)
        return np.where(rgb.sum(axis=-1, keepdims=True) > 0, rgb / 65535 * 2.0 - 1.0, 0.0).astype(np.float32)
    return img.astype(np.float32) / 255.0


def warp_map(name: str, array: np.ndarray, affine: np.ndarray, size: int) -> np.ndarray:
    """A map moved by the 2x3 pixel map `affine` (pixel centres at +0.5, as `face3d.labels`) into a
    `size` x `size` image: nearest neighbour for depth and normals (no blend across the outline), linear for the mask."""
    M = cv_affine(affine)
    flag = cv2.INTER_LINEAR if name == "mask" else cv2.INTER_NEAREST
    return cv2.warpAffine(np.ascontiguousarray(array), M, (size, size), flags=flag, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0)
