"""Re-posing: render the fitted, textured head at new absolute poses as aligned square face crops.

A renderer is a rasterizer plus a shader: `rasterize_meshes` gives the visible triangle and the
barycentrics per pixel, `shade_textured` looks the UV atlas up there. Each view places the head
the same way: the pivot sits on the optical axis at
a fixed distance, so the face keeps its size and place across poses; only R(pose) changes.
The pivot is the point midway between the eye centre and the mouth centre, as in aligned face crops.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from face3d.camera import PerspectiveCamera, Pose, euler_to_matrix, transform_views
from face3d.morphable_model import MorphableModel
from face3d.rasterizer import Fragments, interpolate_face_attributes, interpolate_vertex_attributes, rasterize_meshes
from face3d.shading import sh_basis, vertex_normals
from face3d.texture import Texture

#: Vertical eye-to-mouth distance as a fraction of the crop side (the face's scale in every view).
EYE_MOUTH_FRACTION = 0.22
#: Field of view of the virtual camera (a moderate telephoto, as in portrait photos).
VIEW_FOV_DEGREES = 10.0

#: The version of what a view looks like for the same fit and flags; runs that resume or cache views
#: (rotate --resume, augment, compare) record it and do not mix versions. 2: an open mouth shows the
#: photo's teeth from every angle (`face3d.texture`), where version 1 showed a dark socket. 3: mirror-filled
#: texels are re-lit by the fitted light, the photo's backdrop stays out of the texture, ears under hair are not drawn.
#: 4: a photo much larger than the head is segmented on the part around it (`face3d.segmentation.segment_box`).
#: 5: over the photo the head turns about the neck, the neck below the jaw is the photo's, the face stays opaque
#: where the photo did not colour it, and neither a face cut by the photo's edge nor black padding is
#: mirrored beyond it (`face3d.photo_view`). 6: over the photo, the seam beside the face is refilled only on
#: the side the face turns towards (`face3d.photo_view.profile_side_seams`); the anti-aliased ring round the
#: head takes the colours of the head pixels next to it, where it drew a line of the atlas corner's colour.
#: 7: over the photo, the back of the head that the photo could not show is drawn in the photo's hair
#: colour and grain where the turned photo shows no person (`face3d.photo_view.back_of_head_texture`),
#: where the turned backdrop showed before. 8: over the photo, no line across the forehead where the face's
#: atlas island meets the scalp's (the gutter beside an island counted as back of the head, and the alpha's
#: blur and bilinear look-ups dipped there), and the back of the head is whole behind the scalp the photo saw
#: edge-on (a thin arc of the backdrop showed between them); thin or receding hair gets the hair's grain
#: from a smaller patch instead of a flat cap (`face3d.photo_view.hair_detail`). 9: the hair's grain over the
#: back of the head is a random-phase texture of the photo's hair (`face3d.photo_view.spot_noise_tile`)
#: instead of mirrored copies of one patch; ear texels the person mask left out take the photo's colour
#: where it is the skin's (`face3d.texture.looks_like_skin`), where the ear was a hole in the turned head;
#: a head cut by the photo's edge is carried on beyond it in a blur that grows with the distance
#: (`face3d.photo_view.warp_canvas`), where each pixel of the edge drew a streak across the canvas; the back
#: of the head's colour is brightened to the luma of the scalp the photo showed (`hair_luma_gain`), where
#: light hair got a darker cap.
RENDER_VERSION = 9


def render_version(method: str) -> int | None:
    """The render version a run of `method` records: None for the GAN-only baseline, which renders nothing."""
    return None if method == "gan" else RENDER_VERSION


@dataclass
class RenderedViews:
    """A batch of views: images (B, S, S, 3) uint8, head masks (B, S, S) float 0..1, texture confidence (B, S, S)."""

    images: np.ndarray
    masks: np.ndarray
    confidence: np.ndarray
    poses: list[Pose]
    landmarks: np.ndarray        # (B, 68, 2) projected model landmarks (jaw: fixed vertices), pixels
    extra_masks: np.ndarray | None = None   # (B, S, S) float: pixels that show the `extra` mesh, if any
    depth: np.ndarray | None = None         # (B, S, S) float32 view depth (mm) of the surface seen, -1 where none


def view_camera(size: int, eye_mouth_mm: float):
    """Focal length (px) and distance (mm) for crops of `size` px where eye-mouth spans the set fraction."""
    focal = 0.5 * size / math.tan(math.radians(VIEW_FOV_DEGREES) / 2)
    distance = focal * eye_mouth_mm / (EYE_MOUTH_FRACTION * size)
    return focal, distance


def head_pivot(vertices: torch.Tensor, model: MorphableModel) -> tuple[torch.Tensor, float]:
    """Pivot (3,) of the re-posing rotation and the eye-to-mouth distance (mm) of this face."""
    lm = torch.from_numpy(np.maximum(model.landmark_vertices, 0)).to(vertices.device)
    p = vertices[0, lm]
    eyes = 0.5 * (p[36] + p[45])
    mouth = 0.5 * (p[48] + p[54])
    centre = 0.5 * (eyes + mouth)
    # the mid-face point: it projects to the crop centre at every pose, as in landmark-aligned crops
    return centre, float(torch.linalg.norm(eyes - mouth))


def _uv_grid(uv: torch.Tensor) -> torch.Tensor:
    """grid_sample coordinates of UVs (v up, 0..1) in the atlas (y down, -1..1)."""
    return torch.stack([uv[..., 0] * 2 - 1, (1 - uv[..., 1]) * 2 - 1], dim=-1)


def _sample(layer: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return F.grid_sample(layer, grid, mode="bilinear", padding_mode="border", align_corners=False)


def shade_textured(fragments: Fragments, face_uvs: torch.Tensor, texture) -> torch.Tensor:
    """Texture lookup: UVs interpolated per pixel, bilinear sample of the atlas; (B, C, H, W).

    `texture` is (1 or B, C, Ht, Wt), or a list of (1, c_i, Ht, Wt) layers sampled at the same
    UVs and stacked along the channels (so that the colour, confidence and alpha maps need no
    concatenated copy; channels-last views sample fastest). With one shared atlas only the
    covered pixels are sampled; the empty ones get the value at UV (0, 0) (the atlas corner),
    as when every pixel was sampled, so the result is the same.
    """
    layers = list(texture) if isinstance(texture, (list, tuple)) else [texture]
    if any(t.shape[0] != 1 for t in layers):
        uv = interpolate_face_attributes(fragments, face_uvs)                 # (B, H, W, 2), v up
        batch = uv.shape[0]
        return torch.cat([_sample(t.expand(batch, -1, -1, -1) if t.shape[0] == 1 else t, _uv_grid(uv))
                          for t in layers], dim=1)
    batch, height, width = fragments.pix_to_face.shape
    p2f = fragments.pix_to_face.reshape(-1)
    covered = (p2f >= 0).nonzero().squeeze(1)
    bary = fragments.bary_coords.reshape(-1, 3).index_select(0, covered)   # (P, 3)
    fuv = face_uvs.index_select(0, p2f.index_select(0, covered))            # (P, 3, 2)
    bary = bary.to(face_uvs.dtype)
    # the corner sum written out: the same bits as (bary[..., None] * fuv).sum(1), 3x faster
    uv = bary[:, 0:1] * fuv[:, 0] + bary[:, 1:2] * fuv[:, 1] + bary[:, 2:3] * fuv[:, 2]
    grid = _uv_grid(torch.cat([uv.new_zeros(1, 2), uv])).view(1, 1, -1, 2)   # UV (0, 0) first
    vals = torch.cat([_sample(t, grid)[0, :, 0] for t in layers]).t().contiguous()   # (1 + P, C)
    # every pixel's row of `vals`: its rank among the covered pixels, 0 (the corner) where empty
    rank = torch.zeros(batch * height * width, dtype=torch.int64, device=covered.device)
    rank.index_put_((covered,), torch.arange(1, covered.numel() + 1, device=covered.device))
    pix = vals.index_select(0, rank)
    return pix.view(batch, height, width, -1).permute(0, 3, 1, 2)          # a view of (B, H, W, C)


def view_screen(vertices: torch.Tensor, model: MorphableModel, poses: list[Pose], size: int,
                frame_vertices: torch.Tensor | None = None) -> torch.Tensor:
    """Screen coordinates (B, V, 3) of the head at each pose in the aligned crop of `size` px.

    `frame_vertices` (1, V, 3), when given, sets the pivot and scale instead of `vertices` (an
    expression edit is framed like the fitted face, so an open mouth does not zoom the view out).
    """
    pivot, eye_mouth = head_pivot(vertices if frame_vertices is None else frame_vertices, model)
    focal, dist = view_camera(size, eye_mouth)
    B, dev = len(poses), vertices.device
    ang = torch.tensor([[math.radians(p.yaw), math.radians(p.pitch), math.radians(p.roll)] for p in poses], device=dev)
    R = euler_to_matrix(ang[:, 0], ang[:, 1], ang[:, 2])
    trans = torch.tensor([0.0, 0.0, -dist], device=dev).expand(B, 3) - (R @ pivot)
    cam = PerspectiveCamera(torch.full((B,), focal, device=dev), torch.full((B, 2), size / 2.0, device=dev))
    return cam.project(transform_views(vertices, R, trans))


def _relight(out, frag, verts, faces, poses, sh, start):
    """Multiply the colour channels by the SH shading of the per-pixel normals in each view's camera frame."""
    B, dev = len(poses), verts.device
    ang = torch.tensor([[math.radians(p.yaw), math.radians(p.pitch), math.radians(p.roll)] for p in poses], device=dev)
    R = euler_to_matrix(ang[:, 0], ang[:, 1], ang[:, 2])
    n = vertex_normals(verts, faces).expand(B, -1, -1) @ R.transpose(1, 2)
    npix = F.normalize(interpolate_vertex_attributes(frag, faces, n), dim=-1)      # (B, S, S, 3)
    L = torch.from_numpy(sh if sh.ndim == 3 else np.broadcast_to(sh, (start + B, 9, 3)).copy())[start:start + B].to(dev)
    shade = torch.einsum("bhwk,bkc->bhwc", sh_basis(npix), L).clamp(min=0).permute(0, 3, 1, 2)
    return torch.cat([out[:, :3] * shade, out[:, 3:]], dim=1)


#: Texture confidence reported for the pixels of an `extra` mesh (a default colour, like inpainting).
EXTRA_CONFIDENCE = 0.05


@dataclass
class ColouredMesh:
    """A mesh rendered beside the head in per-vertex colours: vertices (V', 3) mm in the model's
    frame, triangles (F', 3) counter-clockwise seen from outside, colours (V', 3) in 0..1."""

    vertices: np.ndarray | torch.Tensor
    triangles: np.ndarray | torch.Tensor
    colours: np.ndarray | torch.Tensor


def _paint_extra(out, frag, n_head_faces: int, extra_faces, extra_rgb):
    """Replace the colour (and confidence) of the pixels that show an extra-mesh face."""
    p2f = frag.pix_to_face
    sel = p2f >= n_head_faces
    if not bool(sel.any()):
        return out
    local = Fragments(pix_to_face=torch.where(sel, p2f - n_head_faces, torch.full_like(p2f, -1)),
                      zbuf=frag.zbuf, bary_coords=frag.bary_coords)
    rgb = interpolate_vertex_attributes(local, extra_faces, extra_rgb).permute(0, 3, 1, 2)   # (B, 3, S, S)
    m = sel[:, None].to(out.dtype)
    conf = torch.full_like(out[:, 3:4], EXTRA_CONFIDENCE)
    return torch.cat([out[:, :3] * (1 - m) + rgb * m, out[:, 3:4] * (1 - m) + conf * m, out[:, 4:]], dim=1)


def box_mean3(x: torch.Tensor) -> torch.Tensor:
    """3x3 mean of (B, H, W) maps with zero padding, as ``avg_pool2d(x, 3, 1, 1)`` (padding counted).

    Separable shifted sums: ~8x faster than avg_pool2d on one-channel maps on the CPU, and the
    same bits for 0/1 masks (integer sums); for other values the summation order differs
    (differences of an ulp).
    """
    p = F.pad(x, (1, 1, 1, 1))
    rows = p[:, :-2] + p[:, 1:-1]
    rows += p[:, 2:]
    out = rows[:, :, :-2] + rows[:, :, 1:-1]
    out += rows[:, :, 2:]
    return out.div_(9)


def _ring_pixels(mask: torch.Tensor, cover: torch.Tensor):
    """(b, y, x) of the soft ring: empty pixels (`mask` 0) next to the head (`cover` > 0)."""
    return ((mask == 0) & (cover > 0)).nonzero(as_tuple=True)


def _fill_ring(values: torch.Tensor, mask: torch.Tensor, cover: torch.Tensor) -> torch.Tensor:
    """`values` (B, C, S, S) with the soft ring outside the silhouette (empty pixels next to the head,
    which the outline's anti-aliasing draws at up to half cover) set to the mean over the head
    pixels next to each; `cover`: the 3x3 mean of `mask`. The colours take it (an empty pixel's own
    colour is the atlas corner's, `shade_textured`, which drew a thin line of that colour round every
    head), and so does the texture's alpha (`_pixel_alpha`). Written in place, on the ring's pixels
    alone (a few hundred per view; a 3x3 filter of the whole image took about 7% of a 128-px render).

    The pixels are gathered and written as rows of a (B*S*S, C) view of `values` (its channels
    innermost, as `shade_textured` returns them), which indexes about twice as fast as
    `_fill_ring_reference`'s (b, :, y, x) indexing; the same sums in the same order, so the same
    bits (tests/test_render_fast_paths.py). Other layouts take the reference."""
    B, C, H, W = values.shape
    try:
        rows = values.permute(0, 2, 3, 1).view(B * H * W, C)
    except RuntimeError:          # the channels are not innermost: no such view
        return _fill_ring_reference(values, mask, cover)
    b, y, x = _ring_pixels(mask, cover)
    if b.numel() == 0:
        return values
    flat_mask = mask.reshape(-1)
    base = b * (H * W)
    total = values.new_zeros(b.numel(), C)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            yy, xx = y + dy, x + dx
            inside = ((yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)).to(values.dtype)
            at = base + yy.clamp(0, H - 1) * W + xx.clamp(0, W - 1)
            total += rows.index_select(0, at) * (flat_mask.index_select(0, at) * inside)[:, None]
    at = base + y * W + x
    rows.index_copy_(0, at, total / (9 * cover.reshape(-1).index_select(0, at))[:, None])
    return values


def _fill_ring_reference(values: torch.Tensor, mask: torch.Tensor, cover: torch.Tensor) -> torch.Tensor:
    """`_fill_ring` by plain (b, :, y, x) indexing, for any layout of `values`."""
    B, C, H, W = values.shape
    b, y, x = _ring_pixels(mask, cover)
    if b.numel() == 0:
        return values
    total = values.new_zeros(b.numel(), C)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            yy, xx = y + dy, x + dx
            inside = ((yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)).to(values.dtype)
            yy, xx = yy.clamp(0, H - 1), xx.clamp(0, W - 1)
            total += values[b, :, yy, xx] * (mask[b, yy, xx] * inside)[:, None]
    values[b, :, y, x] = total / (9 * cover[b, y, x])[:, None]
    return values


def _pixel_alpha(tex_alpha: torch.Tensor, mask: torch.Tensor, extra: torch.Tensor | None,
                 cover: torch.Tensor | None = None) -> torch.Tensor:
    """The texture's alpha per pixel (B, S, S): as sampled on the head, 1 on an extra mesh (None:
    none), on the soft ring outside the silhouette the mean over the head pixels next to it
    (`_fill_ring`), 0 elsewhere. `cover`: the 3x3 mean of `mask`, when the caller has it already."""
    a = (tex_alpha if extra is None else torch.where(extra, torch.ones_like(tex_alpha), tex_alpha)) * mask
    if cover is None:
        cover = box_mean3(mask)
    return _fill_ring(a[:, None], mask, cover)[:, 0]


#: The back of the head fades in over this fraction of the view's side inside the head's outline
#: (`_inner_ramp`; 3 px at 256 px): hair ends softly, the fitted skull's outline is sharp.
BACK_EDGE = 0.012


def _inner_ramp(mask: torch.Tensor) -> torch.Tensor:
    """(B, S, S) in 0..1: 0 outside the head (`mask` (B, S, S) 0/1) and at its outline, rising to 1
    at about `BACK_EDGE` of the side inside a straight outline (the mean of the mask over a square
    of side 2 r + 1, r = `BACK_EDGE` S, mapped from 1/2..1 onto 0..1)."""
    r = max(1, int(round(BACK_EDGE * mask.shape[-1])))
    m = F.avg_pool2d(mask[:, None], 2 * r + 1, stride=1, padding=r, count_include_pad=True)[:, 0]
    return ((m - 0.5) * 2).clamp(0, 1) * mask


def _composite(rgb: torch.Tensor, alpha: torch.Tensor, background) -> np.ndarray:
    """uint8 images: `rgb` (B, S, S, 3) in 0..1 over `background` (a grey level or a uint8 array)
    with `alpha` (B, S, S). The same float32 steps as a numpy composite (so the same bits), in
    torch: multi-threaded, with fewer full-size temporaries."""
    if isinstance(background, np.ndarray):
        bg = torch.from_numpy(background.astype(np.float32) / 255.0).to(rgb.device)
    else:
        bg = torch.tensor(float(background), dtype=torch.float32, device=rgb.device)
    a = alpha[..., None]
    comp = rgb * a
    comp += bg * (1 - a)
    return comp.mul_(255.0).add_(0.5).clamp_(0, 255).to(torch.uint8).cpu().numpy()


def _texture_layers(texture: Texture, cut: bool, device: torch.device | None = None) -> list[torch.Tensor]:
    """The atlas maps as (1, c, Ht, Wt) channels-last views of the texture's arrays (no copy when
    they are float32 and stay on the CPU): colour, confidence and, when `cut`, alpha and (where the
    texture has it) the back of the head's opacity."""
    maps = [texture.image, texture.confidence[..., None]]
    if cut:
        maps += [texture.alpha[..., None]] + ([texture.back[..., None]] if texture.back is not None else [])
    return [torch.from_numpy(np.asarray(m, dtype=np.float32)).to(device).permute(2, 0, 1)[None] for m in maps]


def render_views(fit, texture: Texture, poses: list[Pose], model: MorphableModel, size: int = 128,
                 background: np.ndarray | float = 0.5, vertices: torch.Tensor | None = None,
                 batch: int = 32, frame_vertices: torch.Tensor | None = None,
                 sh: np.ndarray | None = None, extra: "ColouredMesh | None" = None,
                 device: torch.device | str | None = None, behind: np.ndarray | None = None) -> RenderedViews:
    """Render the fitted head with its photo texture at each absolute pose.

    `background` is a grey level (0..1) or a (B, size, size, 3) uint8 array to composite over.
    `vertices` (1, V, 3) replaces the fitted mesh (an expression or shape edit); `frame_vertices`
    sets the crop's pivot and scale (default: the rendered mesh itself). `sh` (9, 3) or (B, 9, 3):
    SH lighting in each view's camera frame; the texture (then a de-lit albedo) is multiplied by
    its shading (`--relight`, see `face3d.sfs.relight_sh`). `extra` (a `ColouredMesh` in the
    model's frame, e.g. the teeth of an opened mouth) is rendered with the head, z-buffered against
    it, in its vertex colours (confidence `EXTRA_CONFIDENCE`); without it nothing changes.
    `device`: where the views are rasterized and shaded (default the CPU; `face3d.devices`); the
    results are NumPy arrays either way. A texture with an alpha (`cut`) is composited by it; one
    that also has the back of the head's opacity (`Texture.back`, over a turned photo) draws that
    part only where the background does not show the person: `behind` (B, size, size) in 0..1, how
    much each background pixel shows the person (None: nowhere), so the photo's own hair stays in
    front of the guessed back of the head.
    """
    dev = torch.device("cpu" if device is None else device)
    t = model.tensors(dev)
    faces, face_uvs = t["triangles"], t["face_uvs"]
    n_head_faces = faces.shape[0]
    with torch.no_grad():
        verts = (fit.vertices(model) if vertices is None else vertices).to(dev)
        if frame_vertices is not None:
            frame_vertices = frame_vertices.to(dev)
        if extra is not None:   # one mesh: the head's faces first, so face ids >= n_head_faces are extra's
            if frame_vertices is None:
                frame_vertices = verts
            ev = torch.as_tensor(extra.vertices, dtype=verts.dtype, device=dev).reshape(1, -1, 3)
            extra_faces = torch.as_tensor(extra.triangles, dtype=torch.int64, device=dev)
            faces = torch.cat([faces, extra_faces + verts.shape[1]])
            face_uvs = torch.cat([face_uvs, face_uvs.new_zeros((len(extra.triangles), 3, 2))])
            extra_rgb = torch.as_tensor(extra.colours, dtype=torch.float32, device=dev).reshape(-1, 3)
            verts = torch.cat([verts, ev], dim=1)
        cut = texture.alpha is not None and bool((texture.alpha < 1).any())     # else the views stay as they were
        back = cut and texture.back is not None
        tex = _texture_layers(texture, cut, dev)
        lm = torch.from_numpy(np.maximum(model.landmark_vertices, 0)).to(dev)
        imgs, masks, confs, lms, extras, depths = [], [], [], [], [], []
        for s in range(0, len(poses), batch):
            chunk = poses[s : s + batch]
            screen = view_screen(verts, model, chunk, size, frame_vertices)
            frag = rasterize_meshes(screen, faces, size, cull_backfaces=True)
            out = shade_textured(frag, face_uvs, tex)                        # (B, 4 or 5, S, S)
            if extra is not None:
                out = _paint_extra(out, frag, n_head_faces, extra_faces, extra_rgb)
                extras.append((frag.pix_to_face >= n_head_faces).float())
            if sh is not None:
                out = _relight(out, frag, verts, faces, chunk, np.asarray(sh, np.float32), s)
            mask = (frag.pix_to_face >= 0).float()
            # soften the hard silhouette by one pixel (cheap anti-aliasing of the head outline)
            cover = box_mean3(mask)
            alpha = cover * mask + (1 - mask) * 0.5 * cover
            if cut:
                a = _pixel_alpha(out[:, 4], mask, None if extra is None else frag.pix_to_face >= n_head_faces, cover)
                if back:   # the back of the head, behind what of the person the background shows
                    b = _pixel_alpha(out[:, 5], mask, None, cover) * _inner_ramp(mask)
                    if behind is not None:
                        b = b * (1 - torch.as_tensor(np.asarray(behind[s: s + len(chunk)], np.float32), device=dev))
                    a = 1 - (1 - a) * (1 - b)
                alpha = alpha * a
            imgs.append(_fill_ring(out[:, :3], mask, cover).permute(0, 2, 3, 1))
            confs.append(out[:, 3] * mask)
            masks.append(alpha)
            lms.append(screen[:, lm, :2])
            depths.append(frag.zbuf)
        alpha = torch.cat(masks)
        images = _composite(torch.cat(imgs).clamp(0, 1), alpha, background)
        alpha = alpha.cpu().numpy()
        conf = torch.cat(confs).cpu().numpy()
        lms = torch.cat(lms).cpu().numpy()
    extra_masks = torch.cat(extras).cpu().numpy() if extras else None
    return RenderedViews(images=images, masks=alpha, confidence=conf, poses=list(poses), landmarks=lms,
                         extra_masks=extra_masks, depth=torch.cat(depths).cpu().numpy().astype(np.float32))


def view_fit(fit, model: MorphableModel, pose: Pose, size: int, vertices: torch.Tensor | None = None):
    """A FaceFit that describes the aligned view of `render_views` at `pose` and `size`.

    Its camera, rotation and translation are those the view was rendered with, so the view can be
    treated like a photo: `extract_texture(view_fit(...), view_image, model)` takes the texture that
    the rendered view shows (the Rotate-and-Render step).
    """
    with torch.no_grad():
        verts = fit.vertices(model) if vertices is None else vertices
        pivot, eye_mouth = head_pivot(verts, model)
        focal, dist = view_camera(size, eye_mouth)
        ang = torch.tensor([math.radians(pose.yaw), math.radians(pose.pitch), math.radians(pose.roll)])
        R = euler_to_matrix(ang[0:1], ang[1:2], ang[2:3])[0]
        t = torch.tensor([0.0, 0.0, -dist]) - R @ pivot
    return replace(fit, image_size=(size, size), rotation=R.numpy().astype(np.float64),
                   translation=t.numpy().astype(np.float64), focal=float(focal),
                   center=(size / 2.0, size / 2.0), residuals=dict(fit.residuals))
