"""Head/background segmentation of a photo, seeded by the fitted model: which pixels show the person.

The texture extraction uses it to keep the photo's backdrop out of the head texture: texels near
the silhouette (ears, neck, jaw line, hair line) whose photo pixel is background count as unseen.

OpenCV's GrabCut (Rother et al. 2004, colour GMMs + graph cut) runs on a downscaled copy of the
part of the photo around the fitted head (the box of its projected mesh, `CROP_MARGIN` wider on each
side, within the photo; everything beyond it is backdrop), with its trimap taken from the fitted
head projected into the photo:

* definite foreground: the inner face (the hull of the jaw and brow landmarks) and the fitted skull
  above the brows (hair or scalp on any head), eroded, and a band below the chin (neck and clothes);
* probably foreground: the projected head mesh (face, scalp, neck), dilated;
* probably background: everything beyond;
* definite background: the segmented part's top border and its left and right borders above the chin, except where the
  projected head itself reaches them (a tight crop's hair at the edge is not backdrop); not the bottom border,
  where a portrait shows the body, whose clothes would otherwise become "background" colours and
  cut the neck and shoulders of the mesh out of the texture.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from face3d.morphable_model import MorphableModel
from face3d.rasterizer import rasterize_meshes

#: GrabCut runs at most at this size (longer side, px): 0.07-0.17 s on one core (the most for a
#: square photo, 160 x 160 px), some 40% of `extract_texture`. Less changes the mask too much: over
#: the 17 test photos, astronaut.png and 8 LFW photos, 2 iterations leave IoU >= 0.99 with today's
#: mask on all but one photo (0.963) and save ~20%; 1 iteration drops to 0.71, 128 px to 0.34.
SEGMENT_SIZE = 160
#: The part of the photo segmented: the box of the projected head mesh (face, scalp, neck: about
#: 1.7 x 2.3 face sizes) grown by this fraction of its size on each side, for the hair beyond the
#: skull (only texels on the mesh read the mask; the rest of the box feeds GrabCut's colour models).
#: Unless the photo's longer side is `CROP_GAIN` times the box's or more, the whole photo is
#: segmented as before (an LFW crop, 1.0-1.3 times); in a larger photo (a portrait down to the
#: waist) GrabCut then sees the head at about LFW's scale instead of a face of 20-40 px.
CROP_MARGIN = 0.2
CROP_GAIN = 1.5
#: How far (photo px) the texture keeps off the mask's outline anyway (`face3d.texture._foreground_texels`).
TEXTURE_MARGIN_PX = 2
GRABCUT_ITERATIONS = 3
#: Trimap margins as fractions of the face size (outer-eye to mouth distance scale, see `_face_scale`).
ERODE_FRACTION = 0.08
DILATE_FRACTION = 0.35
BORDER_PX = 2          # width of the definite-background frame, in downscaled pixels
#: The torso seed (definite foreground): its top this many face sizes below the chin, this many wide.
TORSO_GAP = 0.15
TORSO_WIDTH = 0.5


def projected_box(fit, model: MorphableModel, grow: float, vertices: torch.Tensor | None = None,
                  keep: np.ndarray | None = None) -> np.ndarray:
    """(x0, y0, x1, y1), photo pixels (float, not clipped to the photo): the box of the fitted mesh
    (`vertices`, default the fit's; only the `keep` ones (V,) bool, when given) projected into the
    photo, grown by `grow` of its size on each side."""
    with torch.no_grad():
        xy = fit.project(model, vertices)[0, :, :2].numpy()
    if keep is not None:
        xy = xy[keep]
    lo, hi = xy.min(0), xy.max(0)
    margin = grow * (hi - lo)
    return np.concatenate([lo - margin, hi + margin])


def segment_box(fit, model: MorphableModel, image_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the part of the photo that is segmented (`CROP_MARGIN`), in pixels."""
    H, W = image_hw
    box = projected_box(fit, model, CROP_MARGIN)
    x0, y0 = np.floor(np.maximum(box[:2], 0)).astype(int)
    x1, y1 = np.ceil(np.minimum(box[2:], [W, H])).astype(int)
    # the whole photo where the box would be seen hardly sharper (an LFW crop), or lies outside it
    if CROP_GAIN * max(x1 - x0, y1 - y0) > max(H, W) or min(x1 - x0, y1 - y0) < 2:
        return 0, 0, W, H
    return int(x0), int(y0), int(x1), int(y1)


def _projected_head(fit, model: MorphableModel, scale: float, hw: tuple[int, int],
                    offset: tuple[int, int] = (0, 0)) -> tuple[np.ndarray, np.ndarray]:
    """(h, w) bool masks of the downscaled crop (photo pixels minus `offset`, times `scale`): pixels
    the fitted mesh covers, and those of them that show the skull above the brows (hair or scalp in
    any real head, whatever the hair style)."""
    faces = model.tensors()["triangles"]
    with torch.no_grad():
        verts = fit.vertices(model)
        screen = fit.project(model, verts).clone()
        screen[..., :2] = (screen[..., :2] - torch.tensor(offset, dtype=screen.dtype)) * scale
        frag = rasterize_meshes(screen, faces, hw, cull_backfaces=True)
    p2f = frag.pix_to_face[0].numpy()
    brows = model.landmark_vertices[17:27]
    brow_y = float(verts[0, brows[brows >= 0], 1].max()) if (brows >= 0).any() else np.inf
    upper = verts[0, :, 1].numpy()[model.triangles].min(axis=1) > brow_y
    head = p2f >= 0
    skull = np.zeros_like(head)
    skull[head] = upper[p2f[head]]
    return head, skull


def _face_scale(landmarks: np.ndarray) -> float:
    """A face size in photo pixels: the span of the jaw and brow landmarks."""
    pts = landmarks[:27]
    return float(max(np.ptp(pts[:, 0]), np.ptp(pts[:, 1]), 1.0))


def _trimap(fit, model: MorphableModel, scale: float, hw: tuple[int, int],
            offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """GrabCut's initial labels (h, w) uint8 from the fitted head (see the module docstring), on the
    crop whose top-left photo pixel is `offset`, downscaled by `scale`."""
    h, w = hw
    head, skull = _projected_head(fit, model, scale, hw, offset)
    head = head.astype(np.uint8)
    landmarks = (np.asarray(fit.landmarks, np.float64) - np.asarray(offset, np.float64)) * scale
    size = _face_scale(np.asarray(fit.landmarks)) * scale
    k_out = max(3, int(round(size * DILATE_FRACTION)) | 1)
    k_in = max(3, int(round(size * ERODE_FRACTION)) | 1)
    labels = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
    labels[cv2.dilate(head, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k_out, k_out))) > 0] = cv2.GC_PR_FGD
    border = np.zeros((h, w), bool)
    chin = int(np.clip(landmarks[8, 1], BORDER_PX, h))   # sides: above the chin only
    border[:BORDER_PX], border[:chin, :BORDER_PX], border[:chin, -BORDER_PX:] = True, True, True
    labels[border & (head == 0)] = cv2.GC_BGD
    inner = np.zeros((h, w), np.uint8)
    hull = cv2.convexHull(landmarks[:27].astype(np.int32))
    cv2.fillConvexPoly(inner, hull, 1)
    inner |= skull.astype(np.uint8)
    inner = cv2.erode(inner, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k_in, k_in)))
    labels[inner > 0] = cv2.GC_FGD
    labels[_torso(landmarks, size, hw)] = cv2.GC_FGD
    return labels


def _torso(landmarks: np.ndarray, size: float, hw: tuple[int, int]) -> np.ndarray:
    """(h, w) bool: a band below the chin, `TORSO_WIDTH` face sizes wide, down to the bottom: what a
    portrait shows there is the person's neck and clothes, which seed GrabCut's foreground colours
    so that a dark suit is not taken for a dark backdrop."""
    h, w = hw
    x, y = landmarks[8]
    out = np.zeros((h, w), bool)
    top, half = int(round(y + TORSO_GAP * size)), TORSO_WIDTH * size / 2
    out[max(0, top):, max(0, int(round(x - half))):max(0, int(round(x + half)))] = True
    return out


def head_foreground_mask(fit, image: np.ndarray, model: MorphableModel) -> np.ndarray:
    """(H, W) bool: the photo's pixels that show the person (face, hair, ears, neck), not the backdrop.

    `fit` is the model fitted to `image` (uint8 RGB). Deterministic: GrabCut's GMMs are initialised
    by k-means with OpenCV's fixed default seed; the RNG is reset here so earlier OpenCV calls do not
    change the result."""
    H, W = image.shape[:2]
    x0, y0, x1, y1 = segment_box(fit, model, (H, W))
    crop = image[y0:y1, x0:x1]
    ch, cw = crop.shape[:2]
    scale = min(1.0, SEGMENT_SIZE / max(ch, cw))
    hw = (max(1, int(round(ch * scale))), max(1, int(round(cw * scale))))
    small = cv2.resize(crop, (hw[1], hw[0]), interpolation=cv2.INTER_AREA)
    labels = _trimap(fit, model, scale, hw, (x0, y0))
    out = np.zeros((H, W), bool)                       # beyond the box: backdrop
    if not (labels == cv2.GC_FGD).any() or not np.isin(labels, (cv2.GC_BGD, cv2.GC_PR_BGD)).any():
        out[y0:y1, x0:x1] = cv2.resize((labels != cv2.GC_BGD).astype(np.uint8), (cw, ch),
                                       interpolation=cv2.INTER_NEAREST) > 0
        return out
    cv2.setRNGSeed(0)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.grabCut(cv2.cvtColor(small, cv2.COLOR_RGB2BGR), labels, None, bgd, fgd, GRABCUT_ITERATIONS,
                cv2.GC_INIT_WITH_MASK)
    fg = np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.float32)
    mask = (cv2.resize(fg, (cw, ch), interpolation=cv2.INTER_LINEAR) > 0.5).astype(np.uint8)
    # the outline is only as sharp as GrabCut's pixels: a photo pixel within one of them may show
    # either side. The texture keeps TEXTURE_MARGIN_PX off it (`face3d.texture`); where a GrabCut
    # pixel is wider than that, the mask gives up the rest of its width
    extra = int(np.ceil(1.0 / scale)) - TEXTURE_MARGIN_PX
    if extra > 0:
        mask = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * extra + 1, 2 * extra + 1)))
    out[y0:y1, x0:x1] = mask > 0
    return out
