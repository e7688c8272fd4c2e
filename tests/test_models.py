"""Morphable model loading: both models through one interface, cache, and corrupt files."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from face3d.errors import FaceSynthError
from face3d.morphable_model import load_morphable_model


def test_ict_model_contents(ict_model):
    m = ict_model
    assert m.name == "ict_facekit"
    V = m.num_vertices
    assert m.mean.shape == (V, 3) and m.mean.dtype == np.float32
    assert m.identity_basis.shape == (100, V, 3)
    assert m.expression_basis.shape[0] == 53 and "jawOpen" in m.expression_names
    assert (m.landmark_vertices >= 0).all()
    # millimetres: the outer eye corners are ~89 mm apart
    lm = m.landmark_vertices
    assert 80 < np.linalg.norm(m.mean[lm[36]] - m.mean[lm[45]]) < 100
    # triangles are counter-clockwise seen from outside: skin normals point away from the head centre
    tri = m.triangles
    n = np.cross(m.mean[tri[:, 1]] - m.mean[tri[:, 0]], m.mean[tri[:, 2]] - m.mean[tri[:, 0]])
    skin = m.skin[tri].all(1)
    out = np.einsum("fc,fc->f", n[skin], m.mean[tri[skin]].mean(1) - m.mean.mean(0))
    assert (out > 0).mean() > 0.8  # nostrils, ears and eye sockets are concave
    assert out[out > 0].sum() > 10 * -out[out < 0].sum()
    assert m.face_uvs.shape == (tri.shape[0], 3, 2) and m.face_uvs.min() >= 0 and m.face_uvs.max() <= 1
    # the mirror map pairs symmetric vertices of the (symmetric) mean head
    err = np.abs(m.mean[m.mirror_vertex] * [-1, 1, 1] - m.mean).max(1)
    assert np.median(err[m.skin]) < 1.0


def test_identity_modes_are_unit_variance(ict_model):
    # the modes are pre-scaled: N(0,1) coefficients give plausible heads (a few mm to cm of change)
    a = torch.zeros(1, 100)
    a[0, 0] = 1.0
    d = (ict_model.shape(a) - ict_model.shape(torch.zeros(1, 100))).norm(dim=-1)
    assert 5 < float(d.max()) < 60


def test_sfm_loads_through_same_interface(sfm_model):
    m = sfm_model
    assert m.name == "surrey_sfm_3448"
    assert m.mean.shape == (3448, 3) and m.identity_basis.shape == (63, 3448, 3)
    assert m.expression_names == ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]
    assert (m.landmark_vertices >= 0).sum() == 50
    lm = m.landmark_vertices
    assert 85 < np.linalg.norm(m.mean[lm[36]] - m.mean[lm[45]]) < 100
    # eigenvalue-scaled basis: the first mode's norm^2 is its variance (56502.4 in the provenance)
    assert float((m.identity_basis[0] ** 2).sum()) == pytest.approx(56502.4, rel=1e-3)
    v = m.shape(torch.zeros(1, 10), torch.zeros(1, 6))
    assert torch.allclose(v[0], torch.from_numpy(m.mean))


def test_truncated_sfm_is_rejected(tmp_path, data_dir):
    src = data_dir / "3dmm" / "surrey_sfm_3448" / "sfm_shape_3448.bin"
    d = tmp_path / "sfm"
    d.mkdir()
    (d / "sfm_shape_3448.bin").write_bytes(src.read_bytes()[:100000])
    with pytest.raises(FaceSynthError, match="corrupt model file .*truncated"):
        load_morphable_model(d)


def test_missing_model_folder_says_where(tmp_path):
    with pytest.raises(FaceSynthError, match=str(tmp_path / "nowhere")):
        load_morphable_model(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FaceSynthError, match="no morphable model in"):
        load_morphable_model(tmp_path / "empty")


def test_corrupt_ict_cache_is_rebuilt_not_trusted(tmp_path, monkeypatch, data_dir, ict_model):
    # a copy of the cache that is damaged must not load garbage; it is rebuilt from the archive
    import face3d.morphable_model as mm

    cache = tmp_path / "cache"
    monkeypatch.setenv("FACESYNTH_CACHE", str(cache))
    name = f"ict_facekit_{mm._file_fingerprint(data_dir / '3dmm' / 'ict_facekit' / 'FaceXModel.tar.xz')}.npz"
    cache.mkdir()
    (cache / name).write_bytes(b"PK\x03\x04 broken")
    mm._LOADED.clear()
    try:
        m = mm.load_morphable_model(data_dir / "3dmm" / "ict_facekit")
        assert np.array_equal(m.mean, ict_model.mean)
        assert (cache / name).stat().st_size > 1_000_000
    finally:
        mm._LOADED.clear()
