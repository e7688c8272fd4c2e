"""Texture extraction: the photo sampled into the model's UV atlas, with per-texel confidence.

For each atlas texel we know (from a UV-space rasterization, cached per model and size) which
triangle it lies in and its barycentrics, hence its 3D point on the fitted mesh. The texel is
projected into the photo; it is *seen* when it passes the source view's z-buffer and faces the
camera, with confidence cos(angle between normal and view ray). Texels the photo sees badly take
colour from their mirror texel (the nearest texel to the x-mirrored 3D point on the mean shape,
cached), and whatever is still unknown, the back of the head and the gutters between UV charts,
is filled by push-pull (pyramid) inpainting, so no hole ever reaches a rendered view.

Confidence map semantics (used later by the refiner): 1 seen frontally, lower for grazing views,
0.5 * mirror confidence where filled by symmetry, 0.05 where inpainted.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from face3d.camera import transform
from face3d.image_io import sample_bilinear, sample_bilinear_xy
from face3d.morphable_model import MorphableModel, cache_dir, save_cache_npz
from face3d.rasterizer import rasterize_meshes
from face3d.segmentation import TEXTURE_MARGIN_PX, head_foreground_mask
from face3d.shading import sh_basis, vertex_normals

INPAINT_CONFIDENCE = 0.05
MIRROR_SCALE = 0.5
MOUTH_INTERIOR_RGB = (0.23, 0.09, 0.09)
MOUTH_PLANE_CONFIDENCE = 0.25   # mouth-socket texels coloured from the photo's open mouth on the lip plane
MOUTH_EYE_MM = 20.0             # the socket is projected onto the lip plane from this far in front of the lips
SHADING_RATIO_RANGE = (0.5, 2.0)  # a mirrored colour is re-lit by at most this factor (fit errors stay bounded)
MIN_SHADING = 0.05              # texels shaded darker than this keep the mirror colour as it is (no division by ~0)
#: The ears of the ICT FaceKit head (part "face" of `ICT_PARTS`, which has no ear part of its own):
#: skin vertices of the mean shape beyond this |x| (mm), between these heights (y, mm), behind this depth (z, mm).
EAR_MIN_ABS_X, EAR_Y_RANGE, EAR_MAX_Z = 70.0, (-30.0, 45.0), 15.0
#: An ear texel's photo colour is hair, not skin, beyond this chroma distance (YCrCb units) from the cheeks' skin.
HAIR_CHROMA_DISTANCE = 22.0
#: An ear texel the person mask left out is the ear when its photo colour is the skin's (`looks_like_skin`):
#: its luma within this range of the cheeks' luma.
SKIN_LUMA_RANGE = (0.5, 1.5)
EAR_ALPHA_SIGMA = 3.0           # smoothing (texels at height 512) of the ear's hair verdicts into a soft alpha


@dataclass
class TextureConfig:
    height: int = 512              # atlas height in texels (width follows the model's atlas aspect: 2.5x)
    mirror_below: float = 0.45     # texels seen with lower confidence borrow from their mirror texel
    min_cosine: float = 0.08       # grazing texels under this cosine count as unseen
    depth_tolerance_mm: float = 4.0
    visibility_size: int = 384     # resolution of the source-view z-buffer used for the visibility test
    segment: bool = True           # texels over the photo's background (`face3d.segmentation`) count as unseen


@dataclass
class Texture:
    """A UV atlas (H, W, 3) float32 in 0..1, its per-texel confidence (H, W) and optional alpha (H, W).
    `facing` (H, W) float32, where known: per texel the cosine between its surface normal and the ray
    to the photo's camera (1 straight on, below 0 facing away: the back of the head, which no pixel
    of the photo can show; -1 between the atlas's islands). `foreground` (h, w) bool, where the texture
    was cut with it: the photo's pixels that show the person (`face3d.segmentation`). `back` (H, W),
    over a photo only: the opacity of the back of the head, drawn where the turned photo does not
    show the person (`face3d.photo_view.back_of_head_texture`). `skin` (3,): the photo's skin colour
    (Y, Cr, Cb of the cheeks, `skin_ycrcb`), where the texture was cut with the segmentation."""

    image: np.ndarray
    confidence: np.ndarray
    #: per-texel coverage (H, W) in 0..1, None for all 1: 0 where the photo shows hair over the
    #: model's ear, so views show what is behind the ear (the background) there instead of the ear
    alpha: np.ndarray | None = None
    facing: np.ndarray | None = None
    foreground: np.ndarray | None = None
    back: np.ndarray | None = None
    skin: np.ndarray | None = None

    def tensor(self) -> torch.Tensor:
        return torch.from_numpy(self.image).permute(2, 0, 1)[None].contiguous()


@dataclass
class UVRaster:
    """Per texel of the atlas: covering triangle (-1 in gutters) and barycentrics; plus mirror texels."""

    face: np.ndarray      # (H, W) int64
    bary: np.ndarray      # (H, W, 3) float32
    mirror: np.ndarray    # (H, W) int64 flat index of the mirror texel, -1 where none


def atlas_size(height: int) -> tuple[int, int]:
    return height, int(round(height * 2.5))


def uv_raster(model: MorphableModel, height: int) -> UVRaster:
    key = ("uv_raster", height)
    if key in model._torch_cache:
        return model._torch_cache[key]
    H, W = atlas_size(height)
    digest = hashlib.sha1(model.face_uvs.tobytes() + model.mean.tobytes()[:4096]).hexdigest()[:12]
    path = cache_dir() / f"uvraster_{model.name}_{height}_{digest}.npz"
    r = None
    if path.is_file():
        try:
            with np.load(path) as z:
                r = UVRaster(z["face"], z["bary"], z["mirror"])
        except Exception:
            r = None
    if r is None:
        r = _build_uv_raster(model, H, W)
        save_cache_npz(path, {"face": r.face, "bary": r.bary, "mirror": r.mirror})
    model._torch_cache[key] = r
    return r


def _build_uv_raster(model: MorphableModel, H: int, W: int) -> UVRaster:
    # deferred: scipy.spatial costs ~0.12 s to import (measured, scipy.sparse already loaded) and
    # only a UV raster missing from the cache needs it
    from scipy.spatial import cKDTree

    uv = torch.from_numpy(model.face_uvs)                      # (F, 3, 2)
    F = uv.shape[0]
    # Each corner gets its own vertex so the UV layout (with seams) is a triangle soup.
    verts = torch.stack([uv[..., 0] * W, (1.0 - uv[..., 1]) * H, torch.ones_like(uv[..., 0])], dim=-1).reshape(1, F * 3, 3)
    faces = torch.arange(F * 3).reshape(F, 3)
    frag = rasterize_meshes(verts, faces, (H, W), cull_backfaces=False, perspective_correct=False)
    face = frag.pix_to_face[0].numpy().astype(np.int64)
    bary = frag.bary_coords[0].detach().numpy().astype(np.float32)
    # 3D point of each texel on the mean shape; mirror texel = nearest texel to the mirrored point
    # among texels of the same kind of surface (skin to skin, eye to eye).
    tri = model.triangles
    valid = face >= 0
    fi = face[valid]
    p = np.einsum("nk,nkc->nc", bary[valid], model.mean[tri[fi]])
    mirror = np.full(H * W, -1, dtype=np.int64)
    flat_valid = np.nonzero(valid.reshape(-1))[0]
    tree = cKDTree(p)
    dist, j = tree.query(p * np.array([-1.0, 1.0, 1.0]), distance_upper_bound=6.0)
    ok = np.isfinite(dist)
    mirror[flat_valid[ok]] = flat_valid[j[ok]]
    return UVRaster(face, bary, mirror.reshape(H, W))


def _source_zbuffer(screen: torch.Tensor, faces: torch.Tensor, image_hw, size: int):
    """z-buffer and front face ids of the fitted mesh in the photo, at reduced resolution around the face."""
    H, W = image_hw
    xy = screen[0, :, :2]
    lo = xy.min(0).values.clamp(min=0)
    hi = torch.minimum(xy.max(0).values, torch.tensor([W, H], dtype=xy.dtype))
    side = float(max((hi - lo).max(), 1.0))
    s = size / side
    crop = screen.clone()
    crop[..., 0] = (screen[..., 0] - lo[0]) * s
    crop[..., 1] = (screen[..., 1] - lo[1]) * s
    frag = rasterize_meshes(crop, faces, size, cull_backfaces=True)
    return frag.zbuf[0], frag.pix_to_face[0], lo, s


@dataclass
class AtlasTexels:
    """The atlas's covered texels as per-texel arrays, one entry (column) per texel, built once per
    model and atlas height: everything an extraction needs that does not depend on the face."""

    flat: np.ndarray      # (N,) int64 atlas index (row-major) of each covered texel, ascending
    corners: np.ndarray   # (3, N) int32 vertex ids of the covering triangle's corners (int32: faster gathers)
    bary: np.ndarray      # (3, N) float32 their barycentric weights
    ear: np.ndarray       # (N,) bool: on an ear triangle (all three corners `ear_vertices`)
    mouth: np.ndarray     # (N,) bool: on the mouth socket (`model.mouth_interior` of the first corner)
    row: np.ndarray       # (H * W,) int64 each atlas texel's index into the arrays above, -1 in gutters


def atlas_texels(model: MorphableModel, height: int) -> AtlasTexels:
    """The `AtlasTexels` of `model`'s atlas at `height` (from `uv_raster`), cached with the model."""
    key = ("atlas_texels", height)
    if key not in model._torch_cache:
        raster = uv_raster(model, height)
        valid = raster.face >= 0
        flat = np.nonzero(valid.reshape(-1))[0]
        # gathers by index, in int32 (half the memory traffic of boolean masks over int64 and (H, W, 3))
        tri = np.take(model.triangles.astype(np.int32), raster.face.reshape(-1)[flat], axis=0)
        mouth = model.mouth_interior if model.mouth_interior is not None else np.zeros(model.num_vertices, bool)
        row = np.full(valid.size, -1, np.int64)
        row[flat] = np.arange(len(flat))
        corners = np.ascontiguousarray(tri.T)
        bary = np.ascontiguousarray(np.take(raster.bary.reshape(-1, 3), flat, axis=0).T)
        model._torch_cache[key] = AtlasTexels(flat, corners, bary, ear_vertices(model)[tri].all(axis=1),
                                              mouth[tri[:, 0]], row)
    return model._torch_cache[key]


def interpolate(texels: AtlasTexels, values: np.ndarray) -> np.ndarray:
    """Per-vertex `values` (C, V) at the texels: (C, N), barycentric interpolation.

    Summed corner by corner, b0 * v0 + b1 * v1 + b2 * v2, the order np.einsum("nk,nkc->nc") sums
    in (the same floats, bit for bit: tests/test_texture_render.py), but gathered per channel into
    contiguous rows, ~3x faster than the einsum over (N, 3, C) gathers; the gathers and products run
    in torch, whose kernels use the process's threads (np.take does not): 0.035 s instead of 0.064 s
    for the texture's 9 channels at atlas height 512 on this project's 2-core machine."""
    v = torch.from_numpy(np.ascontiguousarray(values))
    out = v.index_select(1, torch.from_numpy(texels.corners[0]))
    out *= torch.from_numpy(texels.bary[0])
    for k in (1, 2):
        term = v.index_select(1, torch.from_numpy(texels.corners[k]))
        term *= torch.from_numpy(texels.bary[k])
        out += term
    return out.numpy()


def _unit(v: np.ndarray) -> np.ndarray:
    """(3, N) vectors divided by their length (floored at 1e-9), as np.linalg.norm(axis=1) would
    on (N, 3): the same sum of squares in the same order."""
    return v / np.maximum(np.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]), 1e-9)


def _seen_texels(x, y, depth, cos, zbuf: torch.Tensor, lo, s: float, image_hw, cfg: TextureConfig) -> np.ndarray:
    """(N,) bool: texels in the photo, in front in the source z-buffer (nearest pixel of the
    reduced-resolution buffer, see `_source_zbuffer`) and facing the camera."""
    zb = zbuf.numpy()
    zx = np.clip(((x - float(lo[0])) * s).astype(np.int64), 0, zb.shape[1] - 1)
    zy = np.clip(((y - float(lo[1])) * s).astype(np.int64), 0, zb.shape[0] - 1)
    zref = zb[zy, zx]
    H, W = image_hw
    inside = (x >= 0) & (x <= W - 1) & (y >= 0) & (y <= H - 1)
    return inside & (zref > 0) & (depth <= zref + cfg.depth_tolerance_mm) & (cos > cfg.min_cosine)


def _foreground_texels(fg: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(n,) bool: texels at photo positions (x, y) (inside the photo) whose pixel and the pixels
    `TEXTURE_MARGIN_PX` (2) left, right, up and down of it all show the person (`fg`), so no texel
    blends backdrop in.

    One erosion of the mask with that cross (edges replicated, as clipping the neighbours' positions
    to the photo does) and one look-up per texel, instead of five look-ups per texel."""
    m = TEXTURE_MARGIN_PX
    cross = np.zeros((2 * m + 1, 2 * m + 1), np.uint8)
    cross[m, ::m] = cross[::m, m] = 1
    core = cv2.erode(fg.astype(np.uint8), cross, borderType=cv2.BORDER_REPLICATE)
    H, W = fg.shape
    px = np.clip(np.rint(x).astype(np.int64), 0, W - 1)
    py = np.clip(np.rint(y).astype(np.int64), 0, H - 1)
    return core[py, px] > 0


def extract_texture(fit, image: np.ndarray, model: MorphableModel, config: TextureConfig | None = None,
                    vertices: torch.Tensor | None = None) -> Texture:
    """Sample `image` (uint8 RGB) into the model's UV atlas using the fitted geometry."""
    cfg = config or TextureConfig()
    if cfg.segment and torch.get_num_threads() > 1:
        # GrabCut (about 0.1 s, 40% of this function) releases the GIL: it runs in a second thread
        # while the z-buffer and the texel interpolation run here, and is joined where its mask is
        # first needed. The same calls in the same order per thread, so the same texture. Only where
        # the process may use more than one thread: augment's workers and `--threads 1` keep to one.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="facesynth-segment") as pool:
            foreground = pool.submit(head_foreground_mask, fit, image, model)
            return _extract_texture(fit, image, model, cfg, vertices, foreground.result)
    return _extract_texture(fit, image, model, cfg, vertices,
                            (lambda: head_foreground_mask(fit, image, model)) if cfg.segment else None)


def _extract_texture(fit, image: np.ndarray, model: MorphableModel, cfg: TextureConfig,
                     vertices: torch.Tensor | None, foreground: Callable[[], np.ndarray] | None) -> Texture:
    """`extract_texture`'s body; `foreground()` gives the photo's head mask (`cfg.segment`), None without."""
    raster = uv_raster(model, cfg.height)
    texels = atlas_texels(model, cfg.height)
    flat = texels.flat
    Ht, Wt = raster.face.shape
    faces = model.tensors()["triangles"]
    with torch.no_grad():
        verts = fit.vertices(model) if vertices is None else vertices                  # (1, V, 3)
        R = torch.from_numpy(fit.rotation.astype(np.float32))[None]
        tr = torch.from_numpy(fit.translation.astype(np.float32))[None]
        cam_pts = transform(verts, R, tr)
        screen = fit.camera().project(cam_pts)
        normals = vertex_normals(cam_pts, faces)                                          # camera frame
        zbuf, front_face, lo, s = _source_zbuffer(screen, faces, image.shape[:2], cfg.visibility_size)

    # per texel (rows): x, y, depth in the photo; the camera-frame point; the normal (camera frame)
    per_vertex = np.concatenate([screen[0].numpy(), cam_pts[0].numpy(), normals[0].numpy()], axis=1).T
    at = interpolate(texels, np.ascontiguousarray(per_vertex, np.result_type(texels.bary, per_vertex)))
    x, y, depth = at[0], at[1], at[2]
    n = _unit(at[6:9])
    view = _unit(-at[3:6])                                                                # toward the camera
    cos = n[0] * view[0] + n[1] * view[1] + n[2] * view[2]
    seen = _seen_texels(x, y, depth, cos, zbuf, lo, s, image.shape[:2], cfg)
    facing = np.full(Ht * Wt, -1.0, np.float32)
    facing[flat] = cos
    fg = None
    skin = None
    if cfg.segment:   # texels whose photo pixel shows the backdrop are not seen (mirror-filled or inpainted)
        fg = foreground()
        skin = skin_ycrcb(image, fit.landmarks)
        cand = np.nonzero(seen)[0]
        person = _foreground_texels(fg, x[cand], y[cand])
        # the mask is coarse at the ears (thin, beside the backdrop): an ear texel of the skin's colour
        # is the ear whatever the mask says
        ear = ~person & texels.ear[cand]
        if ear.any():
            person[ear] = looks_like_skin(sample_bilinear_xy(image, x[cand[ear]], y[cand[ear]]), skin)
        seen[cand] = person
    rows = np.nonzero(seen)[0]
    # only seen texels' photo colours are ever used (the others have weight 0 in every fill below)
    colours = sample_bilinear_xy(image, x[rows], y[rows])
    tex = np.zeros((Ht * Wt, 3), np.float32)
    conf = np.zeros(Ht * Wt, np.float32)
    tex[flat[rows]] = colours.astype(np.float32) / 255.0
    conf[flat[rows]] = np.clip(cos[rows], 0.0, 1.0)
    alpha = None
    if cfg.segment:
        alpha = ear_alpha(fit, image, texels.ear, seen, colours, raster.mirror.reshape(-1), flat, (Ht, Wt), skin[1:])

    def fitted_shading(idx: np.ndarray) -> np.ndarray:   # only the texels the mirror fill touches need it
        return texel_shading(n[:, texels.row[idx]].T, fit.sh)

    # a landmark-only fit has no light (sh = 0): mirror as photographed
    shading = fitted_shading if np.any(np.asarray(fit.sh) != 0) else None
    _fill_from_mirror(tex, conf, raster.mirror.reshape(-1), cfg.mirror_below, shading)
    if texels.mouth.any():
        socket = np.nonzero(texels.mouth)[0]
        unseen = socket[conf[flat[socket]] == 0]
        if len(unseen):
            tri, b = np.ascontiguousarray(texels.corners[:, unseen].T), np.ascontiguousarray(texels.bary[:, unseen].T)
            got, colour = _mouth_from_lip_plane(fit, verts, model, tri, b, front_face, lo, s, image)
            _fill_mouth_socket(tex, conf, flat[unseen], got, colour)
    known = conf > 0
    filled = push_pull_fill(tex.reshape(Ht, Wt, 3), known.reshape(Ht, Wt))
    conf[flat[~known[flat]]] = INPAINT_CONFIDENCE
    return Texture(filled.astype(np.float32, copy=False), conf.reshape(Ht, Wt), alpha, facing=facing.reshape(Ht, Wt),
                   foreground=None if fg is None else np.asarray(fg, bool), skin=skin)


def ear_vertices(model: MorphableModel) -> np.ndarray:
    """(V,) bool: the model's ear vertices (the ICT FaceKit's, by their place on the mean shape; none
    for other models)."""
    if model.name != "ict_facekit":
        return np.zeros(model.mean.shape[0], dtype=bool)
    x, y, z = model.mean[:, 0], model.mean[:, 1], model.mean[:, 2]
    return model.skin & (np.abs(x) > EAR_MIN_ABS_X) & (y > EAR_Y_RANGE[0]) & (y < EAR_Y_RANGE[1]) & (z < EAR_MAX_Z)


def ycrcb(rgb: np.ndarray) -> np.ndarray:
    """(N, 3) Y, Cr, Cb (0..255, float32) of (N, 3) RGB colours in 0..255 (clipped, then truncated to
    integers as OpenCV takes them)."""
    rgb = np.asarray(rgb)
    if len(rgb) == 0:                                        # cvtColor refuses an empty array
        return np.zeros((0, 3), np.float32)
    ycc = cv2.cvtColor(np.clip(rgb, 0, 255).astype(np.uint8).reshape(-1, 1, 3), cv2.COLOR_RGB2YCrCb)
    return ycc.reshape(-1, 3).astype(np.float32)


def looks_like_skin(rgb: np.ndarray, skin: np.ndarray) -> np.ndarray:
    """(N,) bool: colours (N, 3) in 0..255 close to the cheeks' skin (`skin`: Y, Cr, Cb): a chroma
    within half `HAIR_CHROMA_DISTANCE` of it and a luma within `SKIN_LUMA_RANGE` of its luma. A white
    or grey backdrop is further from the chroma of any skin than that."""
    ycc = ycrcb(rgb)
    close = np.linalg.norm(ycc[:, 1:] - skin[1:], axis=1) < 0.5 * HAIR_CHROMA_DISTANCE
    luma = ycc[:, 0] / max(float(skin[0]), 1.0)
    return close & (luma > SKIN_LUMA_RANGE[0]) & (luma < SKIN_LUMA_RANGE[1])


def _chroma(rgb: np.ndarray) -> np.ndarray:
    """(N, 2) Cr, Cb (0..255) of (N, 3) RGB colours in 0..255."""
    return ycrcb(rgb)[:, 1:]


def skin_chroma(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The cheeks' skin colour (Cr, Cb): the median over small patches midway between the jaw line
    and the nose/mouth landmarks (iBUG 2-31, 3-48, 14-35, 13-54)."""
    return skin_ycrcb(image, landmarks)[1:]


def skin_ycrcb(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The cheeks' skin colour (Y, Cr, Cb; 0..255), as `skin_chroma` with the luma."""
    lm = np.asarray(landmarks, np.float64)
    centres = np.array([0.5 * (lm[a] + lm[b]) for a, b in ((2, 31), (3, 48), (14, 35), (13, 54))])
    r = 0.03 * max(np.ptp(lm[:, 0]), 1.0)
    grid = np.stack(np.meshgrid(np.linspace(-r, r, 5), np.linspace(-r, r, 5)), -1).reshape(-1, 2)
    pts = (centres[:, None] + grid[None]).reshape(-1, 2)
    return np.median(ycrcb(sample_bilinear(image, pts)), axis=0)


def ear_alpha(fit, image: np.ndarray, ear: np.ndarray, seen: np.ndarray, colours: np.ndarray,
              mirror: np.ndarray, flat: np.ndarray, shape: tuple[int, int],
              skin: np.ndarray | None = None) -> np.ndarray | None:
    """Texture alpha (H, W): 0 on ear texels whose photo pixel (seen, foreground) is hair, not skin;
    1 elsewhere; None where every texel is 1.

    Per covered texel (entries of `ear`, see `AtlasTexels.ear`, of `seen` and atlas index `flat`);
    `colours`: the photo colours (0..255) of the seen texels, in order. An ear texel is hair when
    its chroma lies over HAIR_CHROMA_DISTANCE from the cheeks' skin. Ear texels the photo does not
    show take their mirror texel's verdict (hair styles are mostly symmetric). The verdicts are
    smoothed in the atlas, so the ear fades out rather than being cut. `skin`: the cheeks' chroma
    (`skin_chroma`) when the caller has it."""
    if not ear.any():
        return None
    hair = np.zeros(shape[0] * shape[1], np.float32)
    known = np.zeros(shape[0] * shape[1], dtype=bool)
    look = ear & seen
    if not look.any():                                       # no ear texel seen: no evidence of hair
        return None
    if skin is None:
        skin = skin_chroma(image, fit.landmarks)
    dist = np.linalg.norm(_chroma(colours[ear[seen]]) - skin, axis=1)
    hair[flat[look]] = dist > HAIR_CHROMA_DISTANCE
    known[flat[look]] = True
    unknown = flat[ear & ~seen]
    m = mirror[unknown]
    ok = (m >= 0) & known[np.maximum(m, 0)]
    hair[unknown[ok]] = hair[m[ok]]
    if not hair.any():
        return None
    sigma = EAR_ALPHA_SIGMA * shape[0] / 512.0
    soft = cv2.GaussianBlur(hair.reshape(shape), (0, 0), sigma)
    alpha = 1.0 - np.clip((soft - 0.3) / 0.4, 0.0, 1.0)      # mostly-hair neighbourhoods fade out fully
    return alpha.astype(np.float32)


def texel_shading(normals: np.ndarray, sh: np.ndarray) -> np.ndarray:
    """SH irradiance (N, 3) of unit normals (N, 3) in the source camera frame under the fitted light
    `sh` (9, 3), as the dense stage shades its albedo."""
    basis = sh_basis(torch.from_numpy(np.ascontiguousarray(normals, dtype=np.float32))).numpy()
    return basis @ np.asarray(sh, np.float32)


def _fill_from_mirror(tex: np.ndarray, conf: np.ndarray, mirror: np.ndarray, below: float,
                      shading: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
    """Symmetry fill, in place: texels seen with confidence under `below` borrow from their mirror
    texel (flat index, -1 for none) where it is seen better.

    With `shading` (the SH irradiance (n, 3) at atlas texels (n,)), the borrowed colour is the
    mirror texel's de-lit albedo re-lit at this texel: colour(m) * shade(src) / shade(m), the ratio
    clamped to SHADING_RATIO_RANGE, so a face lit from one side does not get its dark side mirrored
    onto the lit side (or the reverse)."""
    src = np.nonzero((mirror >= 0) & (conf < below))[0]
    m = mirror[src]
    w_own = conf[src]
    w_mir = conf[m] * np.clip((below - w_own) / below, 0.0, 1.0)
    use = w_mir > w_own * 0.5
    src, m, w_own, w_mir = src[use], m[use], w_own[use], w_mir[use]
    tot = np.maximum(w_own + w_mir, 1e-6)
    borrowed = tex[m]
    if shading is not None:
        s_src, s_m = np.split(shading(np.concatenate([src, m])), [len(src)])
        ratio = np.where((s_src > MIN_SHADING) & (s_m > MIN_SHADING), s_src / np.maximum(s_m, MIN_SHADING), 1.0)
        borrowed = np.clip(borrowed * np.clip(ratio, *SHADING_RATIO_RANGE), 0.0, 1.0)
    tex[src] = (tex[src] * w_own[:, None] + borrowed * w_mir[:, None]) / tot[:, None]
    conf[src] = np.maximum(np.maximum(w_own, MIRROR_SCALE * w_mir), INPAINT_CONFIDENCE)


def _fill_mouth_socket(tex: np.ndarray, conf: np.ndarray, unseen: np.ndarray, got: np.ndarray,
                       colour: np.ndarray) -> None:
    """The mouth socket where the photo does not show it (texels `unseen`), in place.

    A view from another angle looks at other walls of the deep socket than the photo did, so where
    the photo shows an open mouth (teeth, tongue) the unseen walls take the photo's colour at their
    point projected onto the plane of the inner lips (a flat stand-in for the teeth behind the lips),
    wherever that point lands on the socket as the photo shows it (`got`, `colour`: see
    `_mouth_from_lip_plane`). The rest gets a dark mouth-interior colour, not a smear of the
    surrounding charts.
    """
    tex[unseen[got]] = colour
    conf[unseen[got]] = MOUTH_PLANE_CONFIDENCE
    dark = unseen[~got]
    tex[dark] = MOUTH_INTERIOR_RGB
    conf[dark] = INPAINT_CONFIDENCE


def _mouth_from_lip_plane(fit, verts: torch.Tensor, model: MorphableModel, tri: np.ndarray, bary: np.ndarray,
                          front_face: torch.Tensor, lo: torch.Tensor, s: float, image: np.ndarray):
    """Colours for mouth-socket texels the photo does not see: (N,) bool got, (n_got, 3) colours.

    Each texel's model-space point is projected onto the plane of the inner-lip landmarks, from a
    point MOUTH_EYE_MM in front of their centre, and then into the photo. It takes the photo's
    colour there if the source view shows the mouth socket at that pixel (the open mouth: teeth,
    tongue). Points that land on the lips or the skin, or a closed mouth, get nothing."""
    lips = model.landmark_vertices[60:68]
    got = np.zeros(len(tri), dtype=bool)
    if (lips < 0).any():
        return got, np.zeros((0, 3), np.float32)
    v = verts[0].numpy().astype(np.float64)
    pm = np.einsum("nk,nkc->nc", bary, v[tri])
    # central projection from a point MOUTH_EYE_MM in front of the lips' centre onto their plane:
    # deeper walls (a side view sees the socket's side walls) are drawn in towards the opening
    plane = float(np.median(v[lips, 2]))
    centre = v[lips, :2].mean(axis=0)
    gain = MOUTH_EYE_MM / (MOUTH_EYE_MM + np.maximum(plane - pm[:, 2], 0.0))
    pm[:, :2] = centre + (pm[:, :2] - centre) * gain[:, None]
    pm[:, 2] = plane
    cam = transform(torch.from_numpy(pm[None].astype(np.float32)), torch.from_numpy(fit.rotation.astype(np.float32))[None],
                    torch.from_numpy(fit.translation.astype(np.float32))[None])
    with torch.no_grad():
        p = fit.camera().project(cam)[0].numpy()
    ff = front_face.numpy()
    zx = np.floor((p[:, 0] - float(lo[0])) * s).astype(np.int64)
    zy = np.floor((p[:, 1] - float(lo[1])) * s).astype(np.int64)
    H, W = image.shape[:2]
    inside = (zx >= 0) & (zx < ff.shape[1]) & (zy >= 0) & (zy < ff.shape[0]) & (p[:, 0] >= 0) & (p[:, 0] <= W - 1) \
        & (p[:, 1] >= 0) & (p[:, 1] <= H - 1)
    face_id = np.full(len(tri), -1, np.int64)
    face_id[inside] = ff[zy[inside], zx[inside]]
    hit = face_id >= 0
    got[hit] = model.mouth_interior[model.triangles[face_id[hit], 0]]
    return got, sample_bilinear(image, p[got, :2]).astype(np.float32) / 255.0


def push_pull_fill(image: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Fill unknown pixels smoothly from the known ones (pyramid push-pull, Gortler et al. 1996)."""
    w = known.astype(np.float32)
    levels = []
    img = image * w[..., None]
    while True:
        levels.append((img, w))
        if min(img.shape[:2]) <= 2:
            break
        img = cv2.resize(img, (max(1, img.shape[1] // 2), max(1, img.shape[0] // 2)), interpolation=cv2.INTER_AREA)
        w = cv2.resize(w, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_AREA)
    # pull: from coarse to fine, fill each level's unknown part from the coarser estimate
    img, w = levels[-1]
    est = img / np.maximum(w, 1e-8)[..., None]
    if not np.any(w > 0):
        est[:] = 0.5
    elif not np.all(w > 0):   # a coarsest cell with nothing known takes the mean of what is known (not black)
        est[w <= 0] = img.reshape(-1, img.shape[-1]).sum(0) / w.sum()
    for img, w in reversed(levels[1:-1]):
        up = cv2.resize(est, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
        a = np.clip(w, 0.0, 1.0)[..., None]
        est = img / np.maximum(w, 1e-8)[..., None]          # the blend below, in place: est*a + up*(1-a)
        est *= a
        est += up * (1 - a)
        np.copyto(est, up, where=(w <= 0)[..., None])
    # the finest level's weights are 0 or 1, where that blend gives the image itself or `up`
    up = cv2.resize(est, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    return np.where(known[..., None], image, up)
