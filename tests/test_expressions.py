"""Expression presets, raw coefficients, shape jitter and the rotate flags (issue 8)."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from face3d.errors import FaceSynthError
from face3d.expressions import (ICT_PRESETS, PRESET_NAMES, SFM_PRESETS, expression_coefficients,
                                expression_split, expression_texture, make_variant, parse_expression,
                                parse_expression_list, shape_samples)


def _landmarks(model, beta, identity=None):
    ident = torch.zeros(1, 60) if identity is None else torch.from_numpy(identity[None])
    v = model.shape(ident, torch.from_numpy(np.asarray(beta, np.float32))[None])[0].numpy()
    return v[np.maximum(model.landmark_vertices, 0)]


def _ear(p):
    return (np.linalg.norm(p[1] - p[5]) + np.linalg.norm(p[2] - p[4])) / (2 * np.linalg.norm(p[0] - p[3]))


def test_presets_parse_and_use_real_blendshape_names(ict_model, sfm_model):
    for name in PRESET_NAMES:
        spec = parse_expression(name)
        assert spec.presets == (name,) and spec.label == name
        beta = expression_coefficients(spec, ict_model)
        assert beta.shape == (53,) and (beta >= 0).all() and (beta <= 1).all()
        assert (beta > 0).any() == (name != "neutral")
    for table, model in ((ICT_PRESETS, ict_model), (SFM_PRESETS, sfm_model)):
        for weights in table.values():
            assert set(weights) <= set(model.expression_names)
    assert expression_coefficients("smile", sfm_model)[sfm_model.expression_names.index("happiness")] > 0
    with pytest.raises(FaceSynthError, match="cannot be expressed by model surrey_sfm_3448") as e:
        expression_coefficients("blink", sfm_model)
    assert "\n" not in str(e.value)
    # presets replace the fit's expression; 'fitted' keeps it
    fitted = np.full(53, 0.2, np.float32)
    assert expression_coefficients("neutral", ict_model, fitted).sum() == 0
    np.testing.assert_allclose(expression_coefficients("fitted", ict_model, fitted), fitted)
    j = ict_model.expression_names.index("jawOpen")
    assert expression_coefficients("fitted+jawOpen=0.7", ict_model, fitted)[j] == pytest.approx(0.7)


def test_raw_coefficients_and_errors(ict_model):
    beta = expression_coefficients("jawOpen=0.6,mouthSmile_L=0.5", ict_model)
    names = ict_model.expression_names
    assert beta[names.index("jawOpen")] == pytest.approx(0.6)
    assert beta[names.index("mouthSmile_L")] == pytest.approx(0.5)
    assert np.count_nonzero(beta) == 2
    specs = parse_expression_list("neutral,jawOpen=0.6,mouthSmile_L=0.5,smile+jawOpen=0.2")
    assert [s.label for s in specs] == ["neutral", "jawOpen0p6-mouthSmile_L0p5", "smile-jawOpen0p2"]
    s = expression_coefficients(specs[2], ict_model)
    assert s[names.index("jawOpen")] == pytest.approx(0.2) and s[names.index("mouthSmile_R")] > 0
    with pytest.raises(FaceSynthError, match="close matches: jawOpen") as e:
        expression_coefficients("jawOpn=0.3", ict_model)
    assert "\n" not in str(e.value)
    with pytest.raises(FaceSynthError, match="outside the model's range"):
        expression_coefficients("jawOpen=1.5", ict_model)
    with pytest.raises(FaceSynthError, match="did you mean smile"):
        parse_expression("smiel")
    with pytest.raises(FaceSynthError, match="not name=number"):
        parse_expression("jawOpen=abc")
    with pytest.raises(FaceSynthError, match="more than once"):
        parse_expression_list("smile,neutral,smile")


def test_presets_move_the_model_landmarks(ict_model):
    n = _landmarks(ict_model, expression_coefficients("neutral", ict_model))
    o = _landmarks(ict_model, expression_coefficients("open-mouth", ict_model))
    s = _landmarks(ict_model, expression_coefficients("smile", ict_model))
    b = _landmarks(ict_model, expression_coefficients("blink", ict_model))
    gap = lambda p: np.linalg.norm(p[62] - p[66])
    width = lambda p: np.linalg.norm(p[54] - p[48])
    assert gap(o) > gap(n) + 10.0                         # mm: the jaw opens
    assert gap(o) / width(o) - gap(n) / width(n) > 0.3
    assert width(s) > 1.08 * width(n)                     # the smile widens ...
    centre = lambda p: 0.5 * (p[62][1] + p[66][1])
    for k in (48, 54):                                    # ... and lifts both corners (+y up)
        assert s[k][1] - centre(s) > n[k][1] - centre(n) + 1.0
    for eye in (slice(36, 42), slice(42, 48)):            # the lids close
        assert _ear(b[eye]) < 0.3 * _ear(n[eye])
    np.testing.assert_allclose(b[48:68], n[48:68], atol=0.01)   # mm: blink leaves the mouth alone


def test_shape_samples_are_seeded_and_scaled(ict_model):
    ident = np.linspace(-1, 1, 60).astype(np.float32)
    a = shape_samples(ident, ict_model, 0.5, 3, seed=7, key="photo")
    b = shape_samples(ident, ict_model, 0.5, 3, seed=7, key="photo")
    c = shape_samples(ident, ict_model, 0.5, 3, seed=8, key="photo")
    for x, y, z in zip(a, b, c):
        np.testing.assert_array_equal(x.identity, y.identity)
        assert not np.allclose(x.delta, z.delta)
        np.testing.assert_allclose(x.identity[:60] - x.delta[:60], ident, atol=1e-6)
    assert not np.allclose(a[0].delta, a[1].delta)
    K = ict_model.num_identity
    norms = [s.norm for s in a]
    assert all(0.5 * np.sqrt(K) * 0.7 < v < 0.5 * np.sqrt(K) * 1.3 for v in norms)
    v0 = _landmarks(ict_model, np.zeros(53), np.pad(ident, (0, K - 60)))
    v1 = _landmarks(ict_model, np.zeros(53), a[0].identity)
    assert np.linalg.norm(v1 - v0, axis=1).mean() > 0.5   # mm: the shape really changes
    assert len(shape_samples(ident, ict_model, 0.0, 5)) == 1
    with pytest.raises(FaceSynthError):
        shape_samples(ident, ict_model, -1.0)


def test_closed_lid_texture_only_for_blink(ict_model, obama_reconstruction):
    from face3d.expressions import eyeball_vertices
    from face3d.texture import uv_raster

    rec = obama_reconstruction
    same = expression_texture(rec.texture, ict_model, expression_coefficients("smile", ict_model), rec.fit.expression)
    assert same is rec.texture
    lid = expression_texture(rec.texture, ict_model, expression_coefficients("blink", ict_model), rec.fit.expression)
    raster = uv_raster(ict_model, rec.texture.image.shape[0])
    tri = ict_model.triangles[np.maximum(raster.face, 0)]
    skin = (raster.face >= 0) & ict_model.skin[tri].all(axis=2)
    eye = (raster.face >= 0) & eyeball_vertices(ict_model)[tri].all(axis=2)
    changed = np.abs(lid.image - rec.texture.image).max(axis=2) > 1e-3
    assert 100 < (changed & skin).sum() < 0.02 * changed.size   # a small region of the skin: the lids
    assert not (changed & ~skin & ~eye).any()                    # head, ears and mouth keep their texture
    lum = lambda t, m: float(t.image[m].mean())
    assert lum(lid, eye) < 0.5 * lum(rec.texture, eye)           # the hidden eyeballs take the lash colour
    assert np.count_nonzero(lid.image[skin].mean(axis=1) < 0.5 * np.median(lid.image[changed & skin])) > 50  # lash line
    half = expression_coefficients("eyeBlink_L=0.5,eyeBlink_R=0.5", ict_model)
    ajar = expression_texture(rec.texture, ict_model, half, rec.fit.expression)
    # a half-open eye shows its eyeball: no lash colour, only the lid's shadow right under its edge
    from face3d.expressions import EYE_SHADOW, LASH_RGB_SCALE
    kept = ajar.image[eye] / np.maximum(rec.texture.image[eye], 1e-6)
    assert kept.min() >= 1.0 - (1.0 - LASH_RGB_SCALE) * EYE_SHADOW - 1e-4 and kept.max() <= 1.0 + 1e-4
    assert np.mean(np.abs(ajar.image[eye] - rec.texture.image[eye]).max(axis=1) < 1e-6) > 0.5


def _lid_gaps(model, verts):
    lm, v = model.landmark_vertices, verts[0].numpy()
    return [float(np.mean([v[lm[u], 1] - v[lm[d], 1] for u, d in pairs]))
            for pairs in (((37, 41), (38, 40)), ((43, 47), (44, 46)))]


def test_blink_closes_the_lids_of_the_fitted_face(ict_model, obama_reconstruction):
    from face3d.expressions import closing_expression, edited_vertices

    fit = obama_reconstruction.fit
    blink = expression_coefficients("blink", ict_model, fit.expression)
    ident = torch.from_numpy(np.asarray(fit.identity, np.float32)[None])
    plain = ict_model.shape(ident, torch.from_numpy(blink[None]))
    # this face's eyes open less than the generic face's: the raw blendshape pushes the upper lid
    # ~2 mm through the lower one; scaled to the face, the lids meet (upper landmark on the lower)
    assert max(_lid_gaps(ict_model, plain)) < -1.0
    assert all(abs(g) < 0.3 for g in _lid_gaps(ict_model, edited_vertices(fit, ict_model, blink)))
    half = expression_coefficients("eyeBlink_L=0.5,eyeBlink_R=0.5", ict_model, fit.expression)
    opened = _lid_gaps(ict_model, edited_vertices(fit, ict_model, expression_coefficients("neutral", ict_model)))
    for g, g0 in zip(_lid_gaps(ict_model, edited_vertices(fit, ict_model, half)), opened):
        assert abs(g - 0.5 * g0) < 0.3                       # half a blink closes half of the opening
    # everything else is the model's own shape: other presets, the fitted expression, the frame
    for spec in ("smile", "surprise", "fitted"):
        beta = expression_coefficients(spec, ict_model, fit.expression)
        np.testing.assert_array_equal(closing_expression(ict_model, beta, fit.expression, fit.identity), beta)
        np.testing.assert_array_equal(edited_vertices(fit, ict_model, beta).numpy(),
                                      ict_model.shape(ident, torch.from_numpy(beta[None])).numpy())
    blink_beta = closing_expression(ict_model, blink, fit.expression, fit.identity)
    names = ict_model.expression_names
    others = [i for i, n in enumerate(names) if not n.startswith("eyeBlink")]
    np.testing.assert_array_equal(blink_beta[others], blink[others])


@pytest.mark.slow
def test_blink_view_closes_the_eyes_for_dlib(data_dir, ict_model):
    """Issue 8's measure on one real photo: dlib's eye aspect ratio of the blink view < half of neutral's."""
    from face3d import Pose
    from face3d.fitting import FitConfig
    from face3d.image_io import load_image
    from face3d.landmarks import detect_faces
    from face3d.pipeline import reconstruct_faces
    from face3d.variants import render_variant

    rec = reconstruct_faces(load_image(data_dir / "faces" / "deepface_jack" / "deepface_img61.jpg"), ict_model,
                            fit_config=FitConfig(dense=False))[0]
    ear = {}
    for name in ("neutral", "blink"):
        v = make_variant(name, rec.fit, ict_model)
        faces = detect_faces(render_variant(v, rec, ict_model, [Pose(0)], 256).images[0])
        assert faces, f"no face found in the {name} view"
        lm = faces[0].landmarks
        ear[name] = 0.5 * (_ear(lm[36:42]) + _ear(lm[42:48]))
    assert ear["blink"] < 0.5 * ear["neutral"], ear


def test_expression_views_keep_the_framing(ict_model, obama_reconstruction):
    from face3d import Pose
    from face3d.variants import render_variant

    rec = obama_reconstruction
    views = {}
    for name in ("neutral", "open-mouth"):
        v = make_variant(name, rec.fit, ict_model)
        views[name] = render_variant(v, rec, ict_model, [Pose(0)], 96)
    n, o = views["neutral"].landmarks[0], views["open-mouth"].landmarks[0]
    assert np.abs(n[36:48] - o[36:48]).max() < 1.0          # eyes stay put (px) ...
    assert o[57][1] - n[57][1] > 5.0                        # ... the chin-side lip drops
    assert not np.array_equal(views["neutral"].images, views["open-mouth"].images)


@pytest.mark.slow
def test_rotate_expression_grid_and_shape_jitter(tmp_path, capsys, obama_path, ict_model):
    from PIL import Image

    from facesynth.cli import main

    out = tmp_path / "out"
    code = main(["rotate", str(obama_path), "--yaw", "0,30", "--size", "64", "--no-dense",
                 "--expression", "neutral,smile", "--shape-jitter", "0.5", "--jitter-samples", "2",
                 "--seed", "3", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    rows = [json.loads(l) for l in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 2 * 2                          # expressions x shapes x poses
    assert len({r["output"] for r in rows}) == len(rows)   # unique names
    for r in rows:
        assert (out / r["output"]).is_file() and f"_expr-{r['expression']}_shape{r['shape_sample']}_" in r["output"]
        assert np.asarray(Image.open(out / r["output"])).shape == (64, 64, 3)
        assert r["shape_jitter"] == 0.5 and r["seed"] == 3
    assert {r["expression"] for r in rows} == {"neutral", "smile"}
    assert all(r["expression_weights"] == {} for r in rows if r["expression"] == "neutral")
    assert all(r["expression_weights"]["mouthSmile_L"] > 0 for r in rows if r["expression"] == "smile")
    assert all(r["expression_split"] for r in rows)        # presets render on the re-split fit
    # the recorded norms are the seeded draws' norms, the same for every expression of a sample
    from face3d.fitting import FitConfig
    from face3d.image_io import load_image
    from face3d.pipeline import reconstruct_faces

    norms = {(r["shape_sample"]): r["shape_jitter_norm"] for r in rows}
    assert len({(r["shape_sample"], r["shape_jitter_norm"]) for r in rows}) == 2
    fit = reconstruct_faces(load_image(obama_path), ict_model, fit_config=FitConfig(dense=False))[0].fit
    expect = shape_samples(fit.identity, ict_model, 0.5, 2, seed=3, key=obama_path.stem)
    for s in expect:
        assert norms[s.index] == pytest.approx(s.norm, abs=1e-3)
    # a second run with the same seed writes identical pixels
    out2 = tmp_path / "out2"
    assert main(["rotate", str(obama_path), "--yaw", "0", "--size", "64", "--no-dense", "--expression", "smile",
                 "--shape-jitter", "0.5", "--jitter-samples", "2", "--seed", "3", "--out", str(out2)]) == 0
    name = "face_recognition_obama_expr-smile_shape1_yaw0_pitch0.png"
    np.testing.assert_array_equal(np.asarray(Image.open(out / name)), np.asarray(Image.open(out2 / name)))


def test_rotate_rejects_bad_expressions(tmp_path, capsys, obama_path, data_dir):
    from facesynth.cli import main

    assert main(["rotate", str(obama_path), "--expression", "smiel", "--out", str(tmp_path / "a")]) == 2
    assert "did you mean smile" in capsys.readouterr().err
    assert main(["rotate", str(obama_path), "--expression", "jawOpn=0.3", "--out", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err
    assert "close matches: jawOpen" in err and "Traceback" not in err
    assert main(["rotate", str(obama_path), "--expression", "pout", "--model",
                 str(data_dir / "3dmm" / "surrey_sfm_3448"), "--out", str(tmp_path / "c")]) == 1
    assert "cannot be expressed" in capsys.readouterr().err
    assert main(["rotate", str(obama_path), "--shape-jitter", "-1", "--out", str(tmp_path / "d")]) == 2


def test_mouth_parts_follow_the_jaw(ict_model, sfm_model):
    """The ICT teeth, gums and tongue share the head's coefficients: jawOpen carries the lower teeth."""
    from face3d.morphable_model import MOUTH_PART_NAMES, load_mouth_parts

    parts = load_mouth_parts(ict_model)
    assert load_mouth_parts(sfm_model) is None
    assert parts.identity_basis.shape[0] == ict_model.num_identity
    assert parts.expression_basis.shape[0] == ict_model.num_expressions
    assert parts.triangles.min() == 0 and parts.triangles.max() == parts.num_vertices - 1
    upper, lower, gums = (parts.part == MOUTH_PART_NAMES.index(n) for n in ("upper_teeth", "lower_teeth", "gums_tongue"))
    assert upper.sum() > 1000 and lower.sum() > 1000 and gums.sum() > 1000
    neutral = parts.shape(np.zeros(10), np.zeros(53))
    beta = expression_coefficients("jawOpen=1", ict_model)
    opened = parts.shape(np.zeros(10), beta)
    np.testing.assert_allclose(opened[upper], neutral[upper], atol=1e-4)        # upper teeth stay on the skull
    assert (opened - neutral)[lower, 1].mean() < -15.0                          # mm: lower teeth drop ...
    assert (opened - neutral)[lower, 2].mean() < -10.0                          # ... and swing back with the jaw
    assert (opened - neutral)[gums, 1].mean() < -5.0                            # the tongue follows
    # the teeth sit inside the mouth: behind the lips, the front teeth between the mouth corners,
    # and the lower ones follow the chin
    lm = ict_model.landmark_vertices
    head = ict_model.mean
    teeth = neutral[upper | lower]
    assert teeth[:, 2].max() < head[lm[[51, 57]], 2].min()
    front = teeth[teeth[:, 2] > teeth[:, 2].max() - 5.0]
    assert head[lm[48], 0] < front[:, 0].min() < front[:, 0].max() < head[lm[54], 0]
    chin = ict_model.expression_basis[ict_model.expression_names.index("jawOpen"), lm[8]]
    assert abs((opened - neutral)[lower, 1].mean() - chin[1]) < 0.35 * abs(chin[1])
    # identity moves the teeth with the face
    ident = np.zeros(ict_model.num_identity, np.float32)
    ident[0] = 2.0
    assert np.abs(parts.shape(ident, None) - neutral).max() > 1.0


def _enamel(pixels):
    """(N, 3) uint8 -> (N,) bool: off-white like the default teeth (bright, red and green alike)."""
    p = pixels.astype(np.float32) / 255.0
    return (p.min(axis=1) > 0.45) & (p[:, 0] - p[:, 1] < 0.07) & (p[:, 0] - p[:, 2] < 0.2)


@pytest.fixture(scope="module")
def closed_mouth_reconstruction(data_dir, ict_model):
    from face3d.fitting import FitConfig
    from face3d.image_io import load_image
    from face3d.pipeline import reconstruct_faces

    return reconstruct_faces(load_image(data_dir / "faces" / "deepface_mark" / "deepface_img13.jpg"), ict_model,
                             fit_config=FitConfig(dense=False))[0]


def test_open_mouth_renders_teeth(ict_model, closed_mouth_reconstruction):
    """A closed-mouth photo opened by an expression shows off-white teeth in a dark-red mouth (not a
    dark hole); views that keep the photo's mouth, or close it, render exactly as without the teeth."""
    from face3d import Pose
    from face3d.expressions import (Variant, edited_vertices, expression_texture, lip_gap, mouth_mesh,
                                    mouth_opens)
    from face3d.render import render_views
    from face3d.variants import render_variant

    rec = closed_mouth_reconstruction
    fit = rec.fit
    gap = {s: lip_gap(ict_model, expression_coefficients(s, ict_model, fit.expression), fit.identity)
           for s in ("neutral", "fitted", "open-mouth", "mouthClose=0.5")}
    assert gap["fitted"] < 2.0 and gap["neutral"] < 2.0                     # mm: the photo's lips are closed
    assert gap["mouthClose=0.5"] < gap["neutral"]                           # lips pressed through count as closed
    assert gap["open-mouth"] > gap["fitted"] + 10.0                         # the preset opens the mouth
    size = 192
    frame = edited_vertices(fit, ict_model, None)

    def render(name):
        spec = parse_expression(name)
        beta = expression_coefficients(spec, ict_model, fit.expression)
        with_parts = render_variant(Variant(spec, beta, None), rec, ict_model, [Pose(0)], size).images[0]
        bare = render_views(fit, expression_texture(rec.texture, ict_model, beta, fit.expression), [Pose(0)],
                            ict_model, size=size, vertices=edited_vertices(fit, ict_model, beta),
                            frame_vertices=frame).images[0]
        return beta, with_parts, bare

    for name in ("neutral", "fitted", "mouthClose=0.5"):                    # closed mouths: no teeth, same pixels
        beta, with_parts, bare = render(name)
        assert not mouth_opens(ict_model, beta, fit.expression, fit.identity)
        assert mouth_mesh(ict_model, beta, fit.identity, fit.expression) is None
        np.testing.assert_array_equal(with_parts, bare)
    # the upper lip raised over an open jaw: the upper teeth show, where the head alone shows the socket
    beta, opened, bare = render("jawOpen=0.5,mouthUpperUp_L=0.7,mouthUpperUp_R=0.7")
    assert mouth_opens(ict_model, beta, fit.expression, fit.identity)
    shown = np.abs(opened.astype(int) - bare.astype(int)).max(axis=2) > 0
    ys, xs = np.nonzero(shown)
    lm = np.asarray(render_views(fit, rec.texture, [Pose(0)], ict_model, size=size,
                                 vertices=edited_vertices(fit, ict_model, beta), frame_vertices=frame).landmarks[0])
    assert lm[48][0] - 2 <= xs.min() and xs.max() <= lm[54][0] + 2          # the mouth parts show in the mouth only
    assert lm[50][1] - 2 <= ys.min() and ys.max() <= lm[57][1] + 2
    teeth = _enamel(opened[shown])
    assert teeth.sum() >= 20, teeth.sum()                                  # off-white teeth ...
    assert _enamel(bare[shown]).sum() == 0                                 # ... where there was a dark hole
    inside = opened[shown][~teeth].astype(np.float32)
    assert len(inside) > 50 and inside.mean() < 90 and inside[:, 0].mean() > 1.3 * inside[:, 2].mean()  # dark red
    # the lower teeth follow the jaw: the mesh drops with jawOpen, the upper teeth do not move
    from face3d.morphable_model import MOUTH_PART_NAMES, load_mouth_parts

    part = load_mouth_parts(ict_model).part
    low, up = {}, {}
    for w in (0.4, 0.9):
        b = expression_coefficients(f"jawOpen={w}", ict_model, fit.expression)
        v = np.asarray(mouth_mesh(ict_model, b, fit.identity, fit.expression).vertices)
        low[w] = v[part == MOUTH_PART_NAMES.index("lower_teeth"), 1].mean()
        up[w] = v[part == MOUTH_PART_NAMES.index("upper_teeth"), 1].mean()
    assert low[0.9] < low[0.4] - 8.0 and abs(up[0.9] - up[0.4]) < 1e-3


def test_expression_split_neutralises_a_smile(ict_model):
    """A synthetic face smiling at 0.8, fitted from its landmarks: the fit keeps much of the smile in
    the identity (its neutral mouth is too wide); the re-split moves it into the expression, so the
    neutral face's mouth is near the true one, while the fitted face itself barely changes."""
    import sys
    from pathlib import Path

    from face3d.fitting import FitConfig, fit_morphable_model

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_expression_split import smiling_face

    lm = ict_model.landmark_vertices
    zero = np.zeros(ict_model.num_expressions, np.float32)

    def width(alpha, beta):
        p = _landmarks(ict_model, beta, np.asarray(alpha, np.float32)[:60])
        return np.linalg.norm(p[48] - p[54])

    wide_fit, wide_split = [], []
    for seed in range(4):
        face = smiling_face(ict_model, np.random.default_rng(seed), smile=0.8)
        fit = fit_morphable_model(None, face["landmarks"], ict_model, FitConfig(dense=False),
                                  image_size=(face["size"],) * 2)
        split = expression_split(fit, ict_model)
        assert split is expression_split(fit, ict_model)                          # cached
        for name in ("rotation", "translation", "landmarks", "sh"):                 # same camera and pose
            np.testing.assert_array_equal(getattr(split, name), getattr(fit, name))
        assert split.focal == fit.focal and not np.array_equal(split.identity, fit.identity)
        truth = width(face["alpha"], zero)
        wide_fit.append(width(fit.identity, zero) / truth - 1)
        wide_split.append(width(split.identity, zero) / truth - 1)
        # the fitted face (identity + expression) keeps its shape at the landmarks, up to the scale
        # that a landmark fit cannot tell from the camera distance
        X = _landmarks(ict_model, split.expression, split.identity)[lm >= 0]
        Y = _landmarks(ict_model, fit.expression, fit.identity)[lm >= 0]
        X0, Y0 = X - X.mean(0), Y - Y.mean(0)
        U, S, Vt = np.linalg.svd(Y0.T @ X0)
        aligned = S.sum() / (X0 ** 2).sum() * X0 @ (U @ Vt).T
        assert np.linalg.norm(aligned - Y0, axis=1).mean() < 2.5
        sm = [ict_model.expression_names.index(n) for n in ("mouthSmile_L", "mouthSmile_R")]
        assert split.expression[sm].mean() > fit.expression[sm].mean() + 0.1
    assert np.mean(wide_fit) > 0.02 and abs(np.mean(wide_split)) < 0.5 * np.mean(wide_fit), (wide_fit, wide_split)


def test_expression_split_keeps_the_fit_on_its_camera(ict_model, obama_reconstruction):
    """The re-split is rendered with the fit's camera, so its shape must sit on the photo's landmarks
    under that camera as the fit does: no size change (a free-camera refit traded size for distance
    and put up to 12% into the identity), and no worse reprojection."""
    from face3d.fitting import landmark_residuals

    fit = obama_reconstruction.fit

    def size(f):
        v = f.vertices(ict_model)[0].numpy()
        return np.linalg.norm(v - v.mean(0), axis=1).mean()

    err = landmark_residuals(fit, ict_model)["landmark_error"]
    split = expression_split(fit, ict_model)
    assert split is not fit
    assert abs(size(split) / size(fit) - 1) < 0.01
    assert landmark_residuals(split, ict_model)["landmark_error"] <= 1.05 * err


def test_reference_from_fit_is_what_fit_reference_makes(ict_model, obama_image, obama_reconstruction):
    """A reference built from a reconstruction's fit (benchmarks fit each photo once) is the one
    fit_reference fits from the same photo and settings: the same re-split expression and pose."""
    from face3d.fitting import FitConfig
    from face3d.reference_face import fit_reference, reference_from_fit

    rec = obama_reconstruction
    made = reference_from_fit(rec.fit, ict_model, "obama.jpg", rec.faces_found, rec.face.box)
    fitted = fit_reference(obama_image, ict_model, "obama.jpg", FitConfig(dense=False))
    np.testing.assert_array_equal(made.expression, fitted.expression)
    assert made == dataclasses.replace(fitted, expression=made.expression)
    assert made.expression.max() > 0.5          # the photo's broad smile, in the re-split expression


def test_expression_split_leaves_models_without_mouth_blendshapes(sfm_model, obama_image):
    from face3d.fitting import FitConfig
    from face3d.pipeline import reconstruct_faces

    fit = reconstruct_faces(obama_image, sfm_model, fit_config=FitConfig(dense=False))[0].fit
    assert expression_split(fit, sfm_model) is fit
    assert make_variant("smile", fit, sfm_model).fit is None


def test_fitted_views_keep_the_fit_and_presets_take_the_split(ict_model, obama_reconstruction):
    fit = obama_reconstruction.fit
    assert make_variant("fitted", fit, ict_model).fit is None
    assert make_variant("fitted+jawOpen=0.3", fit, ict_model).fit is None
    for name in ("neutral", "smile", "jawOpen=0.4"):
        v = make_variant(name, fit, ict_model)
        assert v.fit is expression_split(fit, ict_model)
    s = shape_samples(fit.identity, ict_model, 0.5, 1, seed=2, key="k")[0]
    v = make_variant("neutral", fit, ict_model, s)
    np.testing.assert_allclose(v.shape.identity[:60], v.fit.identity[:60] + s.delta[:60], atol=1e-6)
