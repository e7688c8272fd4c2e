"""Whole-photo views (`face3d.photo_view`): the photo turns with the head in the crop of `render_views`."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from face3d.alignment import aligned_original
from face3d.camera import Pose
from face3d.photo_view import CANVAS_MARGIN, _membrane_sparse, membrane, photo_view_backgrounds, photo_view_layers
from face3d.render import render_views
import facesynth.api as api
from facesynth.api import PLAIN_GREY, RenderOptions, render_face
from facesynth.cli import build_parser
from facesynth.methods import load_method

SIZE = 96


@pytest.fixture(scope="module")
def turned(obama_image, obama_reconstruction, ict_model):
    rec = obama_reconstruction
    poses = [rec.fit.pose, Pose(-35.0, 0.0, 0.0), Pose(40.0, 10.0, 0.0)]
    return poses, photo_view_backgrounds(rec.fit, obama_image, ict_model, poses, SIZE)


def test_shapes_and_dtype(turned):
    poses, bg = turned
    assert bg.shape == (len(poses), SIZE, SIZE, 3) and bg.dtype == np.uint8
    assert bg.std() > 5  # the photo, not a flat fill


def test_source_pose_reproduces_the_aligned_photo(turned, obama_image, obama_reconstruction, ict_model):
    _, bg = turned
    al = aligned_original(obama_reconstruction.fit, obama_image, ict_model, SIZE)
    diff = np.abs(bg[0].astype(int) - al.astype(int)).mean(-1)
    views = render_views(obama_reconstruction.fit, obama_reconstruction.texture, [obama_reconstruction.fit.pose],
                         ict_model, size=SIZE)
    # away from the head edge (where the photo's face is re-projected through the fitted surface)
    head = (views.masks[0] > 0).astype(np.uint8)
    away = cv2.distanceTransform(1 - head, cv2.DIST_L2, 5) > 6
    assert away.sum() > 0.1 * SIZE * SIZE
    assert diff[away].mean() < 6.0
    assert diff.mean() < 12.0


def test_turn_about_pivot_turns_the_head_as_rendered_and_shifts_the_body_rigidly():
    from face3d.photo_view import _pose_matrices, turn_about_pivot

    rng = np.random.default_rng(0)
    X = torch.from_numpy(rng.normal(0, 50, (40, 3)).astype(np.float32))
    R = _pose_matrices([Pose(0, 0, 0), Pose(40, 10, 5), Pose(-60, -5, 0)])
    R_rel = R[1:] @ R[0].T
    P = np.array([0.0, -10.0, -90.0])
    head = turn_about_pivot(X, np.ones(40), R_rel, P)
    assert torch.allclose(head, torch.einsum("bij,nj->bni", torch.from_numpy(R_rel).float(), X), atol=1e-3)
    body = turn_about_pivot(X, np.zeros(40), R_rel, P)
    shift = torch.from_numpy((P[None] - R_rel @ P).astype(np.float32))
    assert torch.allclose(body, X[None] - shift[:, None], atol=1e-3)
    # the pivot itself ends where the turned head puts it whatever its weight: the neck stays joined
    half = turn_about_pivot(torch.from_numpy(P[None].astype(np.float32)), np.array([0.5]), R_rel, P)
    assert torch.allclose(half[:, 0], torch.from_numpy(R_rel @ P).float(), atol=1e-3)


def test_the_body_moves_as_one_the_way_the_neck_pivot_says(turned, obama_reconstruction, ict_model):
    from face3d.photo_view import _pose_matrices, neck_pivot
    from face3d.render import head_pivot, view_camera

    poses, bg = turned
    rec = obama_reconstruction
    verts = rec.fit.vertices(ict_model)
    _, eye_mouth = head_pivot(verts, ict_model)
    focal, dist = view_camera(SIZE, eye_mouth)
    R = _pose_matrices(poses)
    P = R[0] @ neck_pivot(verts, ict_model)
    # the crop's bottom strip (shoulders, below the chin's fall-off) in the source view and a turned
    # one; at (40, 10) the turned photo's jaw on the near side reaches down to SIZE // 6 from the bottom
    strip = slice(SIZE - SIZE // 8, SIZE)
    src = cv2.cvtColor(bg[0], cv2.COLOR_RGB2GRAY)[strip].astype(np.float32)
    for k in (1, 2):
        shift = P - (R[k] @ R[0].T) @ P
        expect_dx = -focal * shift[0] / dist            # screen x = c + f X / d, the body at X - shift
        moved = cv2.cvtColor(bg[k], cv2.COLOR_RGB2GRAY)[strip].astype(np.float32)
        (dx, _), _ = cv2.phaseCorrelate(src, moved)
        assert abs(expect_dx) > 3                          # the test sees a real shift
        assert abs(dx - expect_dx) < 0.25 * abs(expect_dx) + 1.0


def test_the_neck_fades_below_the_jaw_and_the_face_stays(ict_model):
    from face3d.photo_view import neck_vertex_alpha

    alpha = neck_vertex_alpha(ict_model)
    lm = np.maximum(ict_model.landmark_vertices, 0)
    assert (alpha[lm] == 1).all()                          # every landmark, the jaw outline included
    low = ict_model.mean[:, 1] < ict_model.mean[lm[8], 1] - 40    # 4 cm below the chin: neck, shoulders
    assert low.sum() > 500 and alpha[low].max() == 0


def test_turned_pose_has_no_holes_and_the_head_lands_on_it(turned, obama_reconstruction, ict_model):
    poses, bg = turned
    assert not (bg[1:] == 0).all(-1).any()          # no pixel left at a fill value
    rec = obama_reconstruction
    views = render_views(rec.fit, rec.texture, poses, ict_model, size=SIZE, background=bg)
    plain = render_views(rec.fit, rec.texture, poses, ict_model, size=SIZE, background=PLAIN_GREY)
    # the head is where render_views puts it: same mask, and only the background changed off the head
    assert np.array_equal(views.masks, plain.masks)
    head = views.masks > 0.999
    assert np.abs(views.images[head].astype(int) - plain.images[head].astype(int)).max() <= 1
    outside = views.masks < 1e-3
    assert np.abs(views.images[outside].astype(int) - bg[outside].astype(int)).max() <= 1


def test_plain_background_is_the_plain_render(obama_image, obama_reconstruction, ict_model):
    rec = obama_reconstruction
    poses = [Pose(-30.0), Pose(30.0)]
    opts = RenderOptions(method="3d", size=SIZE, background="plain", dense=False)
    out = render_face(rec, obama_image, ict_model, poses, opts, load_method("3d"))[0].images
    plain = render_views(rec.fit, rec.texture, poses, ict_model, size=SIZE, background=PLAIN_GREY)
    assert np.array_equal(out, plain.images)
    photo = render_face(rec, obama_image, ict_model, poses, RenderOptions(method="3d", size=SIZE, dense=False),
                        load_method("3d"))[0].images
    assert photo.shape == out.shape and not np.array_equal(photo, out)


@pytest.mark.parametrize("command,args", [("rotate", ["x.jpg", "--out", "o"]), ("augment", ["in", "out", "--yaw", "0"]),
                                          ("compare", ["in", "--out", "o", "--yaw", "0"])])
def test_cli_default_is_photo(command, args):
    parser = build_parser(command)
    assert parser.parse_args([command, *args]).background == "photo"
    assert parser.parse_args([command, *args, "--background", "plain"]).background == "plain"
    assert RenderOptions().background == "photo"
    assert 0 < CANVAS_MARGIN < 1


def test_see_through_texture_hides_only_what_no_photo_pixel_showed():
    from face3d.photo_view import see_through_texture
    from face3d.texture import INPAINT_CONFIDENCE, Texture

    conf = np.full((64, 160), 0.9, np.float32)
    conf[:, :80] = INPAINT_CONFIDENCE                      # left half inpainted, right half seen
    tex = Texture(np.zeros((64, 160, 3), np.float32), conf)
    alpha = see_through_texture(tex).alpha
    assert alpha[:, :60].max() < 0.01 and alpha[:, 100:].min() > 0.99
    ears = np.ones_like(conf)
    ears[:, 120:] = 0.0                                    # an alpha the texture already had is kept
    assert see_through_texture(Texture(tex.image, conf, ears)).alpha[:, 130:].max() < 0.01


@pytest.mark.slow
def test_seam_beside_the_face_is_refilled_only_in_turned_views(obama_reconstruction, obama_image, ict_model):
    from face3d.camera import Pose
    from face3d.photo_view import SEAM_MIN_TURN, face_seam, photo_view_backgrounds

    rec = obama_reconstruction
    src = rec.fit.pose
    same = photo_view_backgrounds(rec.fit, obama_image, ict_model, [Pose(src.yaw, src.pitch, src.roll)], 96)
    assert same.shape == (1, 96, 96, 3)
    # the seam lies outside the head, beside it: not empty, and not the whole canvas
    from face3d.photo_view import source_surface
    n, step, pad = 49, 144 / 48, 24
    head, _, _, _, _ = source_surface(rec.fit, ict_model, rec.fit.vertices(ict_model), None, 96, pad, n, step)
    seam = face_seam(head, rec.fit, ict_model, rec.fit.vertices(ict_model), None, 96, pad, step)
    assert seam.any() and not (seam & head).any() and seam.sum() < 0.2 * n * n
    assert SEAM_MIN_TURN > 0


@pytest.mark.slow
def test_the_seam_is_refilled_on_the_side_the_face_turns_towards(obama_reconstruction, ict_model):
    from face3d.photo_view import face_seam, profile_side_seams, source_surface
    from face3d.render import view_screen

    rec = obama_reconstruction
    verts = rec.fit.vertices(ict_model)
    n, step, pad = 49, 144 / 48, 24
    head, _, _, _, _ = source_surface(rec.fit, ict_model, verts, None, 96, pad, n, step)
    seam = face_seam(head, rec.fit, ict_model, verts, None, 96, pad, step)
    src = rec.fit.pose
    poses = [Pose(src.yaw + 40.0, src.pitch, src.roll), Pose(src.yaw - 40.0, src.pitch, src.roll)]
    sides = profile_side_seams(seam, rec.fit, ict_model, verts, None, poses, 96, pad, step)
    assert sides.shape == (2, n, n)
    assert sides[0].any() and sides[1].any() and not (sides[0] & sides[1]).any()
    assert not (sides & ~seam[None]).any()                       # parts of the seam, nothing else
    # each part lies on the side of the photo's nose tip that the nose moves to in that view
    nose = view_screen(verts, ict_model, [src] + poses, 96, None)[:, int(ict_model.landmark_vertices[30]), 0].numpy()
    cols = np.arange(n) * step - pad
    for b in range(2):
        kept = cols[np.nonzero(sides[b])[1]]
        assert np.all(np.sign(kept - nose[0]) == np.sign(nose[b + 1] - nose[0]))
    # a nod about the head's own axis moves the nose down, not sideways: no profile, no refill
    nod = profile_side_seams(seam, rec.fit, ict_model, verts, None, [Pose(src.yaw, src.pitch + 25.0, src.roll)],
                             96, pad, step)
    assert not nod.any()


def test_black_padding_of_a_rotated_crop_is_found_and_a_dark_backdrop_is_not(obama_image, face_photos):
    from face3d.image_io import load_image
    from face3d.photo_view import padding_mask

    img = cv2.resize(obama_image, (250, int(round(250 * obama_image.shape[0] / obama_image.shape[1]))),
                     interpolation=cv2.INTER_AREA)
    h, w = img.shape[:2]
    M = cv2.getRotationMatrix2D((w / 2, h / 2), 12.0, 1.0)            # as an aligned face set rotates
    turned = cv2.warpAffine(img, M, (w, h), borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    ok, jpeg = cv2.imencode(".jpg", turned[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    turned = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)[..., ::-1]
    truth = cv2.warpAffine(np.ones((h, w), np.uint8), M, (w, h), borderValue=0) == 0
    found = padding_mask(turned)
    assert found is not None
    assert (found & truth).sum() > 0.7 * truth.sum()
    # what is missed are slivers under 11 px wide: the wedges' tips, which the opening that ignores
    # dark speckles drops
    missed = (truth & ~found).astype(np.uint8)
    assert not cv2.erode(missed, np.ones((11, 11), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0).any()
    assert (found & ~truth).sum() < 0.05 * (~truth).sum()         # only the rim next to it
    assert padding_mask(img) is None
    # no test photo has padding, those on a near-black backdrop (deepface_jack) included: at most
    # black at the very edge (a dark suit cut by the bottom edge) with its rim
    from face3d.photo_view import PADDING_RING_PX, PADDING_SLIVER_PX, PADDING_WORK_SIDE

    for p in face_photos:
        photo = load_image(p)
        mask = padding_mask(photo)
        if mask is not None:
            per_work_px = max(1.0, max(photo.shape[:2]) / PADDING_WORK_SIDE)   # photo px per working px
            edge = int(np.ceil(PADDING_SLIVER_PX + (PADDING_RING_PX + 1) * per_work_px + 2 * per_work_px + 1))
            assert edge < min(photo.shape[:2]) // 4 and not mask[edge:-edge, edge:-edge].any(), p.name


def test_the_face_stays_opaque_over_the_photo_where_the_photo_did_not_colour_it(ict_model):
    from face3d.photo_view import face_vertex_opacity, see_through_texture
    from face3d.texture import INPAINT_CONFIDENCE, Texture, atlas_size

    opacity = face_vertex_opacity(ict_model)
    lm = np.maximum(ict_model.landmark_vertices, 0)
    assert (opacity[lm[27:68]] == 1).all()                # the inner face
    mean = np.asarray(ict_model.mean)
    assert opacity[mean[:, 1] > mean[lm[17:27], 1].max() + 20].max() == 0     # the skull above the brows
    assert opacity[mean[:, 2] < 0].max() == 0                                  # behind the ear canals
    # a texture the photo coloured nowhere: only the face stays
    H, W = atlas_size(256)
    blank = Texture(np.zeros((H, W, 3), np.float32), np.full((H, W), INPAINT_CONFIDENCE, np.float32))
    alpha = see_through_texture(blank, ict_model).alpha
    assert see_through_texture(blank).alpha.max() < 0.01
    assert 0.05 < (alpha > 0.99).mean() < 0.5 and (alpha < 0.01).mean() > 0.3


def test_an_ear_the_person_mask_cut_off_is_taken_from_the_photo_by_its_skin_colour(face_photos, ict_model):
    """GrabCut's mask is coarse at the ears: on this photo it leaves the visible ear out, and the ear
    texels are coloured from the photo all the same where the photo shows skin there."""
    from face3d.fitting import FitConfig, fit_morphable_model
    from face3d.image_io import load_image
    from face3d.landmarks import detect_faces
    from face3d.texture import INPAINT_CONFIDENCE, TextureConfig, atlas_texels, extract_texture, looks_like_skin

    photo = load_image(next(p for p in face_photos if p.name == "face_recognition_obama2.jpg"))
    fit = fit_morphable_model(photo, detect_faces(photo)[0].landmarks, ict_model, FitConfig())
    tex = extract_texture(fit, photo, ict_model)
    texels = atlas_texels(ict_model, tex.confidence.shape[0])
    ear = np.zeros(tex.confidence.size, bool)
    ear[texels.flat[texels.ear]] = True
    seen = tex.confidence.reshape(-1) > INPAINT_CONFIDENCE
    unmasked = extract_texture(fit, photo, ict_model, TextureConfig(segment=False)).confidence.reshape(-1)
    visible = ear & (unmasked > INPAINT_CONFIDENCE)
    assert visible.sum() > 1000
    assert (seen & visible).sum() > 0.3 * visible.sum()          # none without the colour test
    # a white or grey backdrop is not the skin
    assert not looks_like_skin(np.array([[255.0, 255, 255], [128, 128, 128], [200, 200, 200]]), tex.skin).any()


def test_padding_is_filled_by_the_photo_mirrored_about_its_edge():
    from face3d.photo_view import fill_padding

    h, w = 120, 160
    x = np.arange(w)[None, :, None]
    img = np.broadcast_to(np.concatenate([60 + x, 200 - x // 2, 30 + 0 * x], -1), (h, w, 3)).astype(np.uint8).copy()
    pad = np.zeros((h, w), bool)
    pad[:, 130:] = True                                  # a black bar down the right edge
    img[pad] = 0
    out = fill_padding(img, pad)
    assert (out[~pad] == img[~pad]).all()                # the photo itself is kept
    # column 130 + k mirrors column 129 - k: the gradient runs back, blurred, with nothing black left
    k = np.arange(5, 25)
    expect = img[h // 2, 129 - k].astype(float)
    assert np.abs(out[h // 2, 130 + k].astype(float) - expect).max() < 12
    assert out[pad].min() > 20


def test_a_head_cut_by_the_edge_is_carried_on_smoothly_not_mirrored_or_streaked():
    """Below a photo whose bottom edge cuts the head (a beard), the canvas neither mirrors the head
    nor draws each pixel of the edge row on as a streak: far from the edge the colour varies along
    the edge a fraction of what the edge row does, and the carried-on part meets the mirrored canvas
    beside it without a step."""
    from face3d.photo_view import HEAD_EDGE_FADE, warp_canvas

    rng = np.random.default_rng(3)
    h = w = 200
    img = np.zeros((h, w, 3), np.uint8)
    img[:, :, 1] = img[:, :, 2] = 120 + np.arange(w)[None] // 4                      # a smooth backdrop
    img[:, 70:130, 1:] = np.repeat(rng.integers(0, 256, (1, 3, 2)), 20, axis=1)      # stripes 20 px wide (a beard)
    img[:, :, 0] = np.arange(h)[:, None]                                              # red rises downwards
    canvas, top = 320, 40
    out = warp_canvas(img, np.eye(2), np.array([60.0, top]), canvas, head_box=np.array([70.0, 120, 130, 200]))
    bottom = top + h                                      # first canvas row below the photo
    cols = slice(60 + 80, 60 + 120)                       # under the head box's middle
    assert np.allclose(out[bottom - 1, 60:60 + w], img[-1] / 255.0, atol=1 / 255)
    far = bottom + int(HEAD_EDGE_FADE * canvas) + 5
    edge_var = out[bottom - 1, cols, 1:].std(axis=0)                      # the stripes' green and blue
    assert (out[far, cols, 1:].std(axis=0) < 0.3 * edge_var).all()
    # not the head mirrored: row bottom + k would be photo row h - 1 - k (red falling), it stays at the edge's red
    assert abs(out[far, cols, 0].mean() - img[-1, 80:120, 0].mean() / 255.0) < 0.05
    # no step between the carried-on part and the mirror beside it (at the head box's side, x = 70)
    row = out[far, 60 + 40:60 + 100].mean(axis=1)
    assert np.abs(np.diff(row)).max() < 0.05


def _membrane_case(seed: int, n: int = 23):
    rng = np.random.default_rng(seed)
    fixed = np.zeros((n, n), bool)
    fixed[[0, -1], :] = fixed[:, [0, -1]] = True                       # the border, as photo_view holds it
    yy, xx = np.mgrid[:n, :n]
    fixed |= (yy - n * 0.45) ** 2 / 30 + (xx - n * 0.55) ** 2 / 20 < 1.0   # a head-like blob
    fixed |= rng.random((n, n)) < 0.05                                 # and scattered cells
    values = rng.normal(size=(n, n, 3)) * np.array([200.0, 3.0, 0.5])
    return values, fixed


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_membrane_block_solve_is_the_sparse_solve(seed):
    values, fixed = _membrane_case(seed)
    out = membrane(values, fixed)
    assert np.allclose(out, _membrane_sparse(values, fixed), rtol=0, atol=1e-9)
    assert np.array_equal(out[fixed], values[fixed])                   # fixed cells keep their values
    # each free cell is the mean of its in-grid neighbours (Laplace's equation)
    n = fixed.shape[0]
    pad = np.pad(out, ((1, 1), (1, 1), (0, 0)))
    inside = np.pad(np.ones((n, n)), 1)
    total = pad[:-2, 1:-1] + pad[2:, 1:-1] + pad[1:-1, :-2] + pad[1:-1, 2:]
    count = (inside[:-2, 1:-1] + inside[2:, 1:-1] + inside[1:-1, :-2] + inside[1:-1, 2:])[..., None]
    assert np.abs((total / count - out)[~fixed]).max() < 1e-9


def test_membrane_edge_cases():
    values, _ = _membrane_case(3, n=9)
    every = np.ones((9, 9), bool)
    assert np.array_equal(membrane(values, every), values)             # nothing free
    border = np.zeros((9, 9), bool)
    border[[0, -1], :] = border[:, [0, -1]] = True
    flat = np.full((9, 9, 2), 7.5)
    assert np.allclose(membrane(flat, border), 7.5, atol=1e-12)       # a constant border fills constant
    assert np.allclose(membrane(values, border), _membrane_sparse(values, border), atol=1e-9)


def test_default_views_do_not_import_scipy_sparse():
    """SciPy's sparse modules (0.24-0.28 s to import) load only with --sfs: not with the modules a
    default `rotate` imports."""
    code = ("import sys, facesynth.api, facesynth.rotate_job, face3d.sfs, face3d.photo_view; "
            "print(sorted(m for m in sys.modules if m.startswith('scipy.sparse')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_texture_records_which_way_each_texel_faced_the_photo(obama_reconstruction, ict_model):
    from face3d.photo_view import back_of_head_vertex_weight
    from face3d.texture import atlas_texels, interpolate

    tex = obama_reconstruction.texture
    assert tex.facing is not None and tex.facing.shape == tex.confidence.shape
    texels = atlas_texels(ict_model, tex.confidence.shape[0])
    facing = tex.facing.reshape(-1)[texels.flat]
    lm = np.maximum(ict_model.landmark_vertices, 0)
    mean = np.asarray(ict_model.mean)
    nose = (np.linalg.norm(mean - mean[lm[30]], axis=1) < 30) & ict_model.skin   # around the nose tip
    on_nose = interpolate(texels, nose[None].astype(texels.bary.dtype))[0] > 0.99
    back = interpolate(texels, back_of_head_vertex_weight(ict_model)[None].astype(texels.bary.dtype))[0] > 0.99
    behind = mean[:, 2] < mean[:, 2].min() + 40                                 # the back of the skull
    behind_t = interpolate(texels, behind[None].astype(texels.bary.dtype))[0] > 0.99
    assert on_nose.any() and np.median(facing[on_nose]) > 0.5            # the face looks at the camera
    assert (back & behind_t).any() and (facing[back & behind_t] < 0).mean() > 0.95   # the back of the head does not
    # seen texels face the camera
    seen = tex.confidence.reshape(-1)[texels.flat] >= 0.5
    assert (facing[seen] > 0).all()


def test_back_of_head_takes_the_hair_colour_and_is_opaque_only_where_the_photo_cannot_see(
        obama_reconstruction, ict_model):
    from face3d.photo_view import (BACK_FACING_COSINE, back_of_head_texture, hair_source_texels,
                                   see_through_texture, vertex_texel_maps)
    from face3d.texture import INPAINT_CONFIDENCE, Texture

    tex = obama_reconstruction.texture
    H, W = tex.confidence.shape
    sources = hair_source_texels(ict_model, H) & (tex.confidence > INPAINT_CONFIDENCE)
    assert sources.sum() > 1000
    # a flat "hair" colour on the hair sources, another colour elsewhere
    given = np.zeros((H, W, 3), np.float32)
    given[..., 1] = 0.9
    given[sources] = (0.8, 0.1, 0.05)
    image, opacity = back_of_head_texture(Texture(given, tex.confidence, None, tex.facing), ict_model)
    region = ((tex.confidence <= INPAINT_CONFIDENCE) & (tex.facing < BACK_FACING_COSINE) & (tex.facing > -1)
              & (vertex_texel_maps(ict_model, H)[2] > 0.01))
    core = region & (opacity > 0.99)
    assert core.sum() > 1000 and (opacity[region & (vertex_texel_maps(ict_model, H)[2] > 0.99)] > 0.5).mean() > 0.9
    assert np.allclose(image[core], (0.8, 0.1, 0.05), atol=0.02)           # flat hair: no detail to add
    # the colour follows the opacity: untouched where it is 0
    assert np.array_equal(image[opacity == 0], given[opacity == 0])
    # a texture whose scalp shows nothing like hair (here: all of the skin's colour) gets no back
    skin = cv2.cvtColor(np.array([[[204, 26, 13]]], np.uint8), cv2.COLOR_RGB2YCrCb).reshape(3).astype(np.float32)
    assert back_of_head_texture(Texture(given, tex.confidence, None, tex.facing, skin=skin), ict_model)[1] is None
    # hardly where the photo looked and saw the backdrop (the opacity's blur reaches over a few texels)
    looked = (tex.confidence <= INPAINT_CONFIDENCE) & (tex.facing > 0.6)
    assert looked.sum() > 1000 and (opacity[looked] > 0.05).mean() < 0.02
    # over the photo: the back of the head is opaque, what the photo saw as backdrop is not
    # over the photo the back of the head gets its own opacity (`Texture.back`) and the hair colour,
    # the see-through alpha stays as it was; a texture that does not know its texels' facing gets none
    shown = see_through_texture(tex, ict_model)
    before = see_through_texture(Texture(tex.image, tex.confidence, tex.alpha), ict_model)
    back = region & (vertex_texel_maps(ict_model, H)[2] > 0.99)
    assert np.median(shown.back[back]) > 0.95 and before.back is None
    assert np.array_equal(shown.alpha, before.alpha)
    assert not np.array_equal(shown.image[back], tex.image[back])


@pytest.mark.slow
def test_a_turned_view_shows_the_back_of_the_head_over_the_photo(obama_reconstruction, obama_image, ict_model):
    from face3d.texture import Texture

    rec = obama_reconstruction
    options = RenderOptions(size=SIZE)
    poses = [rec.fit.pose, Pose(-45.0, 0.0, 0.0)]
    with_back = render_face(rec, obama_image, ict_model, poses, options, load_method("3d", options))[0].images
    without = replace(rec, texture=Texture(rec.texture.image, rec.texture.confidence, rec.texture.alpha))
    see_through = render_face(without, obama_image, ict_model, poses, options, load_method("3d", options))[0].images
    diff = np.abs(with_back.astype(int) - see_through.astype(int)).max(-1)
    # at the photo's own pose: at most a line along the skull's outline (no 3x3 block changes)
    changed = (diff[0] > 8).astype(np.uint8)
    assert changed.mean() < 0.01 and not cv2.erode(changed, np.ones((3, 3), np.uint8)).any()
    assert (diff[1] > 8).mean() > 0.01                # turned: the back of the head is drawn
    # and it lies behind the face: on the side away from the nose (the nose turns to the image left)
    ys, xs = np.nonzero(diff[1] > 8)
    assert np.median(xs) > SIZE / 2



@pytest.mark.slow
def test_the_back_of_the_head_stays_behind_the_person_of_the_turned_photo(obama_reconstruction, obama_image,
                                                                           ict_model):
    """`render_views` draws `Texture.back` only where `behind` says the background shows no person;
    `photo_view_layers` turns the photo's person mask with the photo (0 where it opened up)."""
    from face3d.photo_view import photo_view_layers, see_through_texture

    rec = obama_reconstruction
    poses = [rec.fit.pose, Pose(-45.0, 0.0, 0.0)]
    fg = rec.texture.foreground
    assert fg is not None and fg.shape == obama_image.shape[:2] and 0.05 < fg.mean() < 0.95
    bg, person = photo_view_layers(rec.fit, obama_image, ict_model, poses, SIZE, foreground=fg)
    assert np.array_equal(bg, photo_view_backgrounds(rec.fit, obama_image, ict_model, poses, SIZE))
    assert person.shape == (2, SIZE, SIZE) and person.dtype == np.float32
    assert 0.0 <= person.min() and person.max() <= 1.0
    # at the photo's own pose: the photo's segmentation, aligned like the photo, off the fitted head
    # (the head itself counts as no person: the back of the head may show behind it)
    al = aligned_original(rec.fit, (np.repeat(fg[..., None], 3, -1) * 255).astype(np.uint8), ict_model, SIZE)
    head = render_views(rec.fit, rec.texture, [rec.fit.pose], ict_model, size=SIZE).masks[0] > 0
    off = ~cv2.dilate(head.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert np.abs(person[0][off] - al[..., 0][off] / 255.0).mean() < 0.05
    inner = cv2.erode(head.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert person[0][inner].mean() < 0.05
    shown = see_through_texture(rec.texture, ict_model)
    nobody = render_views(rec.fit, shown, poses, ict_model, size=SIZE, background=bg)
    everybody = render_views(rec.fit, shown, poses, ict_model, size=SIZE, background=bg,
                             behind=np.ones((2, SIZE, SIZE), np.float32))
    without = render_views(rec.fit, replace(shown, back=None), poses, ict_model, size=SIZE, background=bg)
    assert np.allclose(everybody.masks, without.masks, atol=1e-6)      # all person: the back never shows
    assert (nobody.masks[1] - without.masks[1] > 0.5).mean() > 0.01    # no person: it shows, turned
    turned = render_views(rec.fit, shown, poses, ict_model, size=SIZE, background=bg, behind=person)
    assert (turned.masks >= without.masks - 1e-6).all() and (turned.masks <= nobody.masks + 1e-6).all()



def test_a_hole_in_the_hair_stays_hair_and_one_beside_the_head_does_not():
    from face3d.photo_view import person_in_holes

    person = np.zeros((40, 60), np.float32)
    person[:, 30:] = 1.0                                     # hair on the right half
    on_head = np.zeros((40, 60), bool)
    on_head[10:30, 2:12] = True                              # the head, on the left
    holes = np.zeros((40, 60), bool)
    holes[15:25, 40:50] = True                               # inside the hair
    holes[15:25, 14:22] = True                               # between the head and the backdrop
    out = person_in_holes(person, holes, on_head)
    assert (out[15:25, 40:50] == 1).all() and (out[15:25, 14:22] == 0).all()
    assert np.array_equal(out[~holes], person[~holes])
    assert np.array_equal(person_in_holes(person, np.zeros_like(holes), on_head), person)


def test_hair_is_told_from_skin_by_its_chroma_or_its_darkness():
    import cv2 as cv

    from face3d.photo_view import looks_like_hair

    skin_rgb = np.array([[[220, 170, 140]]], np.uint8)
    skin = cv.cvtColor(skin_rgb, cv.COLOR_RGB2YCrCb).reshape(3).astype(np.float32)
    rgb = np.array([[220, 170, 140], [215, 168, 141],      # skin
                    [90, 60, 40],                          # brown hair: about the skin's chroma, darker
                    [30, 30, 30],                          # black hair
                    [200, 200, 205]], np.float32) / 255.0  # grey hair: another chroma
    assert looks_like_hair(rgb, skin).tolist() == [False, False, True, True, True]


def test_alpha_and_back_carry_across_the_atlas_gutters(obama_reconstruction, ict_model):
    """Views sample the atlas bilinearly: a gutter texel next to an island holds that island's
    alpha and back opacity, and an island's edge keeps the alpha its neighbours have (no dip that
    shows the backdrop as a line along a seam of the head, e.g. where the forehead meets the scalp)."""
    from scipy.ndimage import distance_transform_edt

    from face3d.photo_view import neck_texel_alpha, nearest_island_texel, see_through_texture
    from face3d.texture import atlas_texels

    tex = obama_reconstruction.texture
    H = tex.confidence.shape[0]
    covered = (atlas_texels(ict_model, H).row >= 0).reshape(tex.confidence.shape)
    near = nearest_island_texel(ict_model, H)
    assert np.array_equal(near[covered.reshape(-1)], np.flatnonzero(covered))    # island texels: themselves
    assert covered.reshape(-1)[near].all()                                         # gutters: an island texel
    ys, xs = np.divmod(np.arange(covered.size), covered.shape[1])
    ny, nx = np.divmod(near, covered.shape[1])
    exact = distance_transform_edt(~covered).reshape(-1)     # the nearest: exactly next to the islands,
    found = np.hypot(ys - ny, xs - nx)                         # within 4% further out (OpenCV's 5x5 mask)
    assert np.allclose(found[exact <= 3], exact[exact <= 3]) and (found <= exact * 1.04 + 1e-6).all()
    shown = see_through_texture(tex, ict_model)
    assert np.array_equal(shown.alpha.reshape(-1), shown.alpha.reshape(-1)[near])
    assert np.array_equal(shown.back.reshape(-1), shown.back.reshape(-1)[near])
    # island edges the photo saw head-on (off the neck, which fades out under the jaw) are as opaque
    # as the texels inside
    edge = covered & (cv2.dilate((~covered).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)
    frontal = edge & (tex.facing > 0.7) & (tex.confidence > 0.7) & (neck_texel_alpha(ict_model, H) > 0.99)
    if tex.alpha is not None:
        frontal &= tex.alpha > 0.99
    assert frontal.sum() > 50 and np.percentile(shown.alpha[frontal], 5) > 0.95     # a plain blur: 25% under 0.75


def test_back_of_head_stays_on_the_islands_and_is_whole_behind_the_scalp_seen_edge_on(
        obama_reconstruction, ict_model):
    from face3d.photo_view import BACK_FACING_COSINE, back_of_head_texture, vertex_texel_maps
    from face3d.texture import INPAINT_CONFIDENCE, atlas_texels

    tex = obama_reconstruction.texture
    H = tex.confidence.shape[0]
    image, opacity = back_of_head_texture(tex, ict_model)
    covered = (atlas_texels(ict_model, H).row >= 0).reshape(tex.confidence.shape)
    # texels the photo saw head-on keep their colour, also beside a gutter (which is no back of the head)
    edge = covered & (cv2.dilate((~covered).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)
    frontal = covered & (tex.facing > 0.6) & (tex.confidence > INPAINT_CONFIDENCE)
    assert (edge & frontal).sum() > 50
    assert np.array_equal(image[edge & frontal], tex.image[edge & frontal])
    # behind the scalp the photo saw edge-on the back is opaque, and shows that scalp's own colour
    scalp = vertex_texel_maps(ict_model, H)[2] > 0.99
    edge_on = scalp & (tex.confidence > INPAINT_CONFIDENCE) & (tex.facing > 0) & (tex.facing < BACK_FACING_COSINE)
    assert edge_on.sum() > 200 and np.median(opacity[edge_on]) > 0.95
    far = edge_on & (cv2.GaussianBlur((tex.confidence <= INPAINT_CONFIDENCE).astype(np.float32), (0, 0), 6) < 1e-4)
    assert far.sum() > 20 and np.array_equal(image[far], tex.image[far])


def test_hair_patch_takes_the_largest_patch_the_hair_covers():
    """Thin or receding hair covers no 48-texel patch: the grain comes from a smaller one (a smooth
    fill alone reads as a cap), and none where the hair covers no patch of the smallest size."""
    from face3d.photo_view import HAIR_PATCH_COVER, HAIR_PATCH_SIZES, HAIR_TILE, hair_detail, hair_patch

    rng = np.random.default_rng(0)
    image = rng.random((512, 1280, 3)).astype(np.float32)
    for side, P in ((60, HAIR_PATCH_SIZES[0]), (36, HAIR_PATCH_SIZES[1]), (26, HAIR_PATCH_SIZES[2])):
        sources = np.zeros((512, 1280), bool)
        sources[100:100 + side, 300:300 + side] = True
        got = hair_patch(image, sources)
        assert got is not None and got.shape == (P, P, 3)
        assert np.abs(got.mean(axis=(0, 1))).max() < 1e-5                     # detail: the blur taken off
        assert hair_detail(image, sources).shape == (HAIR_TILE, HAIR_TILE, 3)
    sources = np.zeros((512, 1280), bool)
    side = int(np.sqrt(HAIR_PATCH_COVER) * HAIR_PATCH_SIZES[-1]) - 1
    sources[100:100 + side, 300:300 + side] = True
    assert hair_patch(image, sources) is None and hair_detail(image, sources) is None


def test_spot_noise_tile_keeps_the_patch_grain_without_a_seam_or_a_copy():
    """The hair's tile: the patch's variance per channel and the channels' correlation, periodic (the
    wrap-around meets like neighbouring rows inside), no copy of the patch in it, the same every run."""
    from face3d.photo_view import spot_noise_tile

    rng = np.random.default_rng(1)
    base = cv2.GaussianBlur(rng.standard_normal((32, 32)).astype(np.float32), (0, 0), 1.0)
    patch = np.stack([base, 0.5 * base, -base + 0.3 * rng.standard_normal((32, 32)).astype(np.float32)], -1)
    patch -= patch.mean(axis=(0, 1))
    tile = spot_noise_tile(patch, 128, seed=0)
    assert tile.shape == (128, 128, 3) and tile.dtype == np.float32
    assert np.array_equal(tile, spot_noise_tile(patch, 128, seed=0))
    ratio = tile.var(axis=(0, 1)) / patch.var(axis=(0, 1))
    assert np.all((ratio > 0.6) & (ratio < 1.6)), ratio
    corr = np.corrcoef(tile.reshape(-1, 3).T)
    want = np.corrcoef(patch.reshape(-1, 3).T)
    assert corr[0, 1] > 0.99 and want[0, 2] < -0.5
    assert np.abs(corr - want).max() < 0.1                                   # the colours vary together
    inside = np.abs(np.diff(tile, axis=0)).mean()
    for wrap in (np.abs(tile[0] - tile[-1]).mean(), np.abs(tile[:, 0] - tile[:, -1]).mean()):
        assert 0.7 < wrap / inside < 1.3                                       # no seam where copies meet
    # no 32 x 32 window of the tile is the patch (or its mirror): the grain, not the picture
    windows = np.lib.stride_tricks.sliding_window_view(tile[..., 0], (32, 32))[::4, ::4].reshape(-1, 32 * 32)
    for ref in (patch[..., 0], patch[::-1, ..., 0], patch[:, ::-1, 0]):
        r = (ref - ref.mean()).ravel()
        w = windows - windows.mean(1, keepdims=True)
        c = (w @ r) / (np.linalg.norm(w, axis=1) * np.linalg.norm(r) + 1e-9)
        assert c.max() < 0.8


def test_hair_luma_gain_brings_the_dark_strands_of_light_hair_up_to_the_scalp():
    """Light hair is close to the skin's colour, so the hair sources are its darker strands: the fill
    is brightened to the median luma of all the scalp the photo showed, never darkened, at most by
    HAIR_LUMA_GAIN_MAX."""
    from face3d.photo_view import HAIR_LUMA_GAIN_MAX, hair_luma_gain
    from face3d.texture import ycrcb

    rng = np.random.default_rng(0)
    light = np.clip(0.55 + 0.05 * rng.standard_normal((400, 3)), 0, 1)       # light-brown hair
    dark = light[:100] * 0.7                                                  # its darker strands
    scalp = np.concatenate([light, dark])
    gain = hair_luma_gain(scalp, dark)
    luma = lambda c: float(np.median(ycrcb(c * 255.0 + 0.5)[:, 0]))
    assert gain > 1.2 and abs(luma(dark) * gain - luma(scalp)) < 2.0
    assert hair_luma_gain(dark, dark) == pytest.approx(1.0, abs=0.01)          # dark hair: as it is
    assert hair_luma_gain(dark, light) == 1.0                                 # never darker
    assert hair_luma_gain(light, light * 0.3) == HAIR_LUMA_GAIN_MAX
    assert hair_luma_gain(light[:0], dark) == 1.0


def test_the_benchmarks_backdrop_control_greys_only_the_backdrop(obama_image, obama_reconstruction, ict_model):
    """bench_whole_photo's control (`backdrop_greyed`): over the photo, the backdrop beyond the person
    turns the plain grey and the person stays as it was; outside the context nothing changes."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_whole_photo import backdrop_greyed   # deferred: a benchmark module, on the path only here

    rec, poses = obama_reconstruction, [Pose(-30.0), Pose(30.0)]
    opts = RenderOptions(method="3d", size=SIZE, dense=False)
    photo = render_face(rec, obama_image, ict_model, poses, opts, load_method("3d"))[0].images
    person = photo_view_layers(rec.fit, obama_image, ict_model, poses, SIZE, foreground=rec.texture.foreground)[1]
    original = api.view_background
    with backdrop_greyed():
        greyed = render_face(rec, obama_image, ict_model, poses, opts, load_method("3d"))[0].images
    assert api.view_background is original
    head = render_views(rec.fit, rec.texture, poses, ict_model, size=SIZE).masks > 0.99
    # the head's outline is softened over a pixel beyond its mask (render_views)
    near_head = np.stack([cv2.dilate(h.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0 for h in head])
    backdrop = (person < 0.01) & ~near_head
    grey = round(PLAIN_GREY * 255)
    assert backdrop.mean() > 0.2 and np.all(np.abs(greyed[backdrop].astype(int) - grey) <= 1)
    shown = person > 0.99          # the turned photo's person beyond the head: kept (up to 1% of grey)
    assert shown.sum() > 100 and np.abs(greyed[shown].astype(int) - photo[shown]).max() <= 2
    assert np.array_equal(render_face(rec, obama_image, ict_model, poses, opts, load_method("3d"))[0].images, photo)
