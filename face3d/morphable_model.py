"""3D Morphable Models behind one interface: the ICT FaceKit (default, MIT) and the Surrey SFM.

A model is a linear shape space

    S(alpha, beta) = mean + sum_i alpha_i * U_i + sum_j beta_j * E_j          (V, 3), millimetres

with identity coefficients alpha ~ N(0, 1) (each mode U_i is pre-scaled by its standard deviation)
and expression weights beta (ICT: ARKit blendshapes in [0, 1]; SFM: six emotions). Both models
are converted to millimetres, +y up, +z toward the viewer, subject's right eye at -x.

Neither model has an albedo basis: colour comes from the photo through the model's UVs, packed
into one texture atlas (`face_uvs`, per triangle corner, so UV seams survive).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import tarfile
from dataclasses import dataclass, field
from lzma import LZMAError  # not an OSError: caught beside them for a corrupt .tar.xz
from pathlib import Path

import numpy as np
import torch

from face3d.errors import FaceSynthError

CACHE_VERSION = 4
ENV_MODEL = "FACESYNTH_MODEL"
ENV_DATA = "FACESYNTH_DATA"


@dataclass
class MorphableModel:
    """A linear 3D face model (all arrays float32 / int64 numpy; torch views made on demand)."""

    name: str
    source: str
    mean: np.ndarray                      # (V, 3) mm
    identity_basis: np.ndarray            # (K, V, 3), coefficients ~ N(0, 1)
    expression_basis: np.ndarray          # (E, V, 3)
    expression_names: list[str]
    triangles: np.ndarray                 # (F, 3) int64, counter-clockwise seen from outside
    face_uvs: np.ndarray                  # (F, 3, 2) atlas UVs in [0, 1], v up
    landmark_vertices: np.ndarray         # (68,) int64 iBUG order, -1 where the model has no fixed vertex
    contour_candidates: tuple[np.ndarray, np.ndarray]  # vertices on the subject's right / left cheek outline
    skin: np.ndarray                      # (V,) bool: face skin used by the dense term and the texture
    mirror_vertex: np.ndarray             # (V,) int64: the vertex nearest to the x-mirrored position
    expression_range: tuple[float, float] = (0.0, 1.0)
    mouth_interior: np.ndarray | None = None  # (V,) bool: mouth socket (gets a default colour where unseen)
    _torch_cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def num_vertices(self) -> int:
        return self.mean.shape[0]

    @property
    def num_identity(self) -> int:
        return self.identity_basis.shape[0]

    @property
    def num_expressions(self) -> int:
        return self.expression_basis.shape[0]

    def tensors(self, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """Torch copies of the arrays that the differentiable stages use (cached per device)."""
        key = str(device)
        if key not in self._torch_cache:
            self._torch_cache[key] = {
                "mean": torch.from_numpy(self.mean).to(device),
                "identity_basis": torch.from_numpy(self.identity_basis).to(device),
                "expression_basis": torch.from_numpy(self.expression_basis).to(device),
                "triangles": torch.from_numpy(self.triangles).to(device),
                "face_uvs": torch.from_numpy(self.face_uvs).to(device),
            }
        return self._torch_cache[key]

    def shape(self, identity: torch.Tensor, expression: torch.Tensor | None = None,
              vertices: torch.Tensor | None = None) -> torch.Tensor:
        """Vertex positions (B, V', 3) for identity (B, K') and expression (B, E) coefficients.

        K' <= K uses the leading modes only. `vertices` (an index tensor) evaluates a subset, which
        keeps landmark-only fitting cheap.
        """
        t = self.tensors(identity.device)
        k = identity.shape[-1]
        mean, ub, eb = t["mean"], t["identity_basis"][:k], t["expression_basis"]
        if vertices is not None:
            mean, ub, eb = mean[vertices], ub[:, vertices], eb[:, vertices]
        out = mean + torch.einsum("bk,kvc->bvc", identity, ub)
        if expression is not None and expression.shape[-1] > 0:
            out = out + torch.einsum("be,evc->bvc", expression, eb[: expression.shape[-1]])
        return out


# --------------------------------------------------------------------------------------------
# Locating models


def default_data_dir() -> Path | None:
    """`$FACESYNTH_DATA`, else `../shared/data` beside the project checkout or the working directory."""
    env = os.environ.get(ENV_DATA)
    if env:
        return Path(env)
    here = Path(__file__).resolve().parents[1]
    for base in (here, Path.cwd()):
        cand = base.parent / "shared" / "data"
        if cand.is_dir():
            return cand
    return None


def resolve_model_dir(model: str | os.PathLike | None = None) -> Path:
    """The model folder: the `--model` flag, else `$FACESYNTH_MODEL`, else the ICT FaceKit in the data folder."""
    if model:
        return Path(model)
    if os.environ.get(ENV_MODEL):
        return Path(os.environ[ENV_MODEL])
    data = default_data_dir()
    if data is None:
        raise FaceSynthError(
            "no morphable model found: pass --model DIR or set FACESYNTH_MODEL "
            "(looked for ../shared/data/3dmm/ict_facekit beside the project and the working directory)")
    return data / "3dmm" / "ict_facekit"


def cache_dir() -> Path:
    base = os.environ.get("FACESYNTH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "facesynth")
    return Path(base)


_LOADED: dict[str, MorphableModel] = {}


def load_morphable_model(model: str | os.PathLike | None = None) -> MorphableModel:
    """Load the model in `model` (a folder holding the ICT `FaceXModel.tar.xz` or the SFM `sfm_shape_3448.bin`)."""
    folder = resolve_model_dir(model)
    key = str(folder.resolve()) if folder.exists() else str(folder)
    if key in _LOADED:
        return _LOADED[key]
    if not folder.is_dir():
        raise FaceSynthError(f"morphable model folder not found: {folder}")
    if (folder / "FaceXModel.tar.xz").is_file():
        m = _load_ict(folder)
    elif (folder / "sfm_shape_3448.bin").is_file():
        m = _load_sfm(folder)
    else:
        raise FaceSynthError(
            f"no morphable model in {folder} (expected FaceXModel.tar.xz or sfm_shape_3448.bin)")
    _LOADED[key] = m
    return m


# --------------------------------------------------------------------------------------------
# ICT FaceKit

# Parts kept from the 17 ICT geometries: vertex range, polygon range, atlas placement of its UV tile.
# Atlas: 5 units wide, 2 high (in UV tiles of the original layout, scaled): face tile 0 gets a 2x2
# block, head/neck and mouth socket (tile 1) a 2x2 block, each eyeball a 1x1 block.
ICT_PARTS = [
    # name, (v0, v1), (p0, p1), (atlas offset u, offset v, scale), tile to subtract
    ("face", (0, 9408), (0, 9229), (0.0, 0.0, 2.0), 0),
    ("head", (9409, 11247), (9230, 11143), (2.0, 0.0, 2.0), 1),
    ("mouth", (11248, 13293), (11144, 13225), (2.0, 0.0, 2.0), 1),
    ("eye_left", (21451, 23020), (21496, 23093), (4.0, 1.0, 1.0), 0),
    ("eye_right", (23021, 24590), (23094, 24691), (4.0, 0.0, 1.0), 0),
]
_ATLAS_W, _ATLAS_H = 5.0, 2.0
_ICT_RIGHT_EXT_JAW = [1280, 1278, 1275, 1272, 1248, 12, 820, 1834, 1902, 243, 844, 781, 1673, 2199, 801, 1447, 800]
_ICT_LEFT_EXT_JAW = [3041, 3661, 3042, 4390, 3880, 3022, 3085, 2484, 4102, 4036, 3061, 2253, 3466, 3490, 3493, 3496, 3498]


def _parse_obj_vertices(text: str) -> np.ndarray:
    start = text.find("\nv ")
    end = text.find("\nvt ")
    if start < 0 or end < 0:
        raise ValueError("no vertex block")
    block = text[start:end].replace("v ", " ")
    return np.array(block.split(), dtype=np.float64).reshape(-1, 3)


def _parse_obj_topology(text: str):
    vt, polys = [], []
    for line in text.splitlines():
        if line.startswith("vt "):
            vt.append(line.split()[1:3])
        elif line.startswith("f "):
            polys.append([tuple(int(x) - 1 for x in tok.split("/")[:2]) for tok in line.split()[1:]])
    return np.array(vt, dtype=np.float64), polys


def _file_fingerprint(path: Path) -> str:
    st = path.stat()
    return hashlib.sha1(f"{path.resolve()}:{st.st_size}:{int(st.st_mtime)}:{CACHE_VERSION}".encode()).hexdigest()[:16]


def _load_ict(folder: Path) -> MorphableModel:
    archive = folder / "FaceXModel.tar.xz"
    cache = cache_dir() / f"ict_facekit_{_file_fingerprint(archive)}.npz"
    if cache.is_file():
        try:
            return _from_npz(cache, source=str(folder))
        except Exception:
            cache.unlink(missing_ok=True)  # a corrupt cache is rebuilt, not trusted
    try:
        arrays = _build_ict(archive)
    except FaceSynthError:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError, KeyError, json.JSONDecodeError, LZMAError) as exc:
        raise FaceSynthError(f"corrupt ICT FaceKit model file {archive}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    save_cache_npz(cache, arrays)
    return _from_arrays(arrays, source=str(folder))


def _build_ict(archive: Path) -> dict:
    members: dict[str, bytes] = {}
    with tarfile.open(archive, "r:xz") as tar:
        for m in tar:
            if m.isfile() and (m.name.endswith(".obj") or m.name.endswith(".json")):
                members[os.path.basename(m.name)] = tar.extractfile(m).read()
    if "generic_neutral_mesh.obj" not in members or "vertex_indices.json" not in members:
        raise FaceSynthError(f"corrupt ICT FaceKit model file {archive}: neutral mesh or vertex_indices.json missing")
    meta = json.loads(members["vertex_indices.json"])
    neutral_text = members["generic_neutral_mesh.obj"].decode()
    neutral = _parse_obj_vertices(neutral_text)
    vt, polys = _parse_obj_topology(neutral_text)

    keep_v = np.concatenate([np.arange(a, b + 1) for _, (a, b), _, _, _ in ICT_PARTS])
    remap = -np.ones(neutral.shape[0], dtype=np.int64)
    remap[keep_v] = np.arange(keep_v.size)
    tris, uvs = [], []
    for _, _, (p0, p1), (ou, ov, sc), tile in ICT_PARTS:
        for poly in polys[p0 : p1 + 1]:
            vids = [remap[v] for v, _ in poly]
            if min(vids) < 0:
                raise ValueError("polygon references a dropped vertex")
            tuv = [(((vt[t, 0] - tile) * sc + ou) / _ATLAS_W, (vt[t, 1] * sc + ov) / _ATLAS_H) for _, t in poly]
            for k in range(1, len(poly) - 1):  # fan-split quads into triangles
                tris.append([vids[0], vids[k], vids[k + 1]])
                uvs.append([tuv[0], tuv[k], tuv[k + 1]])
    tris = np.array(tris, dtype=np.int64)
    uvs = np.clip(np.array(uvs, dtype=np.float32), 0.0, 1.0)

    scale = 10.0  # cm -> mm
    mean = neutral[keep_v] * scale

    def deltas(names):
        out = np.empty((len(names), keep_v.size, 3), dtype=np.float32)
        for i, n in enumerate(names):
            if n + ".obj" not in members:
                raise KeyError(f"{n}.obj")
            out[i] = (_parse_obj_vertices(members[n + ".obj"].decode())[keep_v] * scale - mean)
        return out

    identity = deltas([f"identity{i:03d}" for i in range(100)])
    expr_names = list(meta["expressions"])
    expression = deltas(expr_names)

    landmarks = remap[np.array(meta["idx_to_landmark_verts"], dtype=np.int64)]
    right, left = remap[_ICT_RIGHT_EXT_JAW], remap[_ICT_LEFT_EXT_JAW]
    # Outline candidates: the skin vertices of the lower face on each side; the fitting picks the
    # one on the occluding contour at each jaw landmark's height.
    part = np.concatenate([np.full(b - a + 1, i) for i, (_, (a, b), _, _, _) in enumerate(ICT_PARTS)])
    skin = part == 0
    return {
        "name": np.array("ict_facekit"), "mean": mean.astype(np.float32), "identity_basis": identity,
        "expression_basis": expression, "expression_names": np.array(expr_names), "triangles": tris,
        "face_uvs": uvs, "landmark_vertices": landmarks, "contour_right": right, "contour_left": left,
        "skin": skin, "mirror_vertex": _mirror_vertices(mean, part), "mouth_interior": part == 2,
        "expression_range": np.array([0.0, 1.0], dtype=np.float32),
    }


def _mirror_vertices(mean: np.ndarray, part: np.ndarray | None = None) -> np.ndarray:
    """Nearest vertex to each vertex's mirror image (x -> -x), within the same kind of part."""
    # deferred: scipy.spatial costs ~0.12 s to import even with scipy.sparse loaded (~0.75-1 s
    # without; measured) and only building a model's cache needs it
    from scipy.spatial import cKDTree

    mirrored = mean * np.array([-1.0, 1.0, 1.0])
    out = np.empty(mean.shape[0], dtype=np.int64)
    if part is None:
        part = np.zeros(mean.shape[0], dtype=np.int64)
    groups = {0: [0], 1: [1], 2: [2], 3: [3, 4], 4: [3, 4]}
    for p in np.unique(part):
        src = np.nonzero(part == p)[0]
        tgt = np.nonzero(np.isin(part, groups.get(int(p), [p])))[0]
        _, j = cKDTree(mean[tgt]).query(mirrored[src])
        out[src] = tgt[j]
    return out


# --------------------------------------------------------------------------------------------
# ICT FaceKit teeth, gums and tongue (loaded on demand, apart from the head model)

#: The ICT geometries inside the mouth, not part of `MorphableModel` (whose vertex list, atlas and
#: caches stay as they are): name, vertex range, polygon range (README.upstream.md's tables).
_ICT_MOUTH_PARTS = [
    ("gums_tongue", (14062, 17038), (14034, 17005)),
    ("upper_teeth", (17039, 19246), (17006, 19249)),   # teeth #0-#15
    ("lower_teeth", (19247, 21450), (19250, 21495)),   # teeth #16-#31
]
MOUTH_PART_NAMES = tuple(n for n, _, _ in _ICT_MOUTH_PARTS)


@dataclass
class MouthParts:
    """The teeth, gums and tongue of the ICT FaceKit as a linear model sharing the head's coefficients.

    The same identity and expression coefficients as the head apply (the upstream blendshapes move
    these parts too: jawOpen carries the lower teeth, gums and tongue with the jaw, the upper teeth
    stay on the skull). Millimetres, the head model's axes.
    """

    mean: np.ndarray                      # (Vm, 3)
    identity_basis: np.ndarray            # (K, Vm, 3)
    expression_basis: np.ndarray          # (E, Vm, 3), same order as the head's expression_names
    triangles: np.ndarray                 # (Fm, 3) int64, counter-clockwise seen from outside
    part: np.ndarray                      # (Vm,) int64 index into MOUTH_PART_NAMES

    @property
    def num_vertices(self) -> int:
        return self.mean.shape[0]

    def shape(self, identity: np.ndarray, expression: np.ndarray | None = None) -> np.ndarray:
        """Vertex positions (Vm, 3) for the head's identity (K',) and expression (E',) coefficients."""
        a = np.asarray(identity, np.float32).reshape(-1)[: self.identity_basis.shape[0]]
        out = self.mean + np.einsum("k,kvc->vc", a, self.identity_basis[: a.size])
        if expression is not None:
            b = np.asarray(expression, np.float32).reshape(-1)[: self.expression_basis.shape[0]]
            out = out + np.einsum("e,evc->vc", b, self.expression_basis[: b.size])
        return out.astype(np.float32)


def load_mouth_parts(model: MorphableModel) -> MouthParts | None:
    """The teeth, gums and tongue of `model` (ICT FaceKit only; None for models without them).

    Read from the model's FaceXModel.tar.xz on first use and cached beside the head model's cache.
    """
    if model.name != "ict_facekit":
        return None
    key = ("mouth_parts",)
    if key in model._torch_cache:
        return model._torch_cache[key]
    archive = Path(model.source) / "FaceXModel.tar.xz"
    if not archive.is_file():
        return None
    cache = cache_dir() / f"ict_mouth_parts_{_file_fingerprint(archive)}.npz"
    arrays = None
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except Exception:
            cache.unlink(missing_ok=True)
    if arrays is None:
        try:
            arrays = _build_ict_mouth_parts(archive, list(model.expression_names), model.num_identity)
        except (tarfile.TarError, EOFError, OSError, ValueError, KeyError, LZMAError) as exc:
            raise FaceSynthError(f"corrupt ICT FaceKit model file {archive}: {type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
        save_cache_npz(cache, arrays)
    parts = MouthParts(mean=arrays["mean"], identity_basis=arrays["identity_basis"],
                       expression_basis=arrays["expression_basis"],
                       triangles=arrays["triangles"].astype(np.int64), part=arrays["part"].astype(np.int64))
    model._torch_cache[key] = parts
    return parts


def _build_ict_mouth_parts(archive: Path, expression_names: list[str], num_identity: int) -> dict:
    wanted = {"generic_neutral_mesh.obj"} | {f"identity{i:03d}.obj" for i in range(num_identity)} | {
        n + ".obj" for n in expression_names}
    members: dict[str, bytes] = {}
    with tarfile.open(archive, "r:xz") as tar:
        for m in tar:
            base = os.path.basename(m.name)
            if m.isfile() and base in wanted:
                members[base] = tar.extractfile(m).read()
    neutral_text = members["generic_neutral_mesh.obj"].decode()
    neutral = _parse_obj_vertices(neutral_text)
    _, polys = _parse_obj_topology(neutral_text)
    keep_v = np.concatenate([np.arange(a, b + 1) for _, (a, b), _ in _ICT_MOUTH_PARTS])
    remap = -np.ones(neutral.shape[0], dtype=np.int64)
    remap[keep_v] = np.arange(keep_v.size)
    tris = []
    for _, _, (p0, p1) in _ICT_MOUTH_PARTS:
        for poly in polys[p0 : p1 + 1]:
            vids = [remap[v] for v, _ in poly]
            if min(vids) < 0:
                raise ValueError("mouth polygon references a vertex outside the mouth parts")
            for k in range(1, len(poly) - 1):
                tris.append([vids[0], vids[k], vids[k + 1]])
    scale = 10.0  # cm -> mm
    mean = neutral[keep_v] * scale

    def deltas(names):
        out = np.empty((len(names), keep_v.size, 3), dtype=np.float32)
        for i, n in enumerate(names):
            out[i] = _parse_obj_vertices(members[n + ".obj"].decode())[keep_v] * scale - mean
        return out

    part = np.concatenate([np.full(b - a + 1, i) for i, (_, (a, b), _) in enumerate(_ICT_MOUTH_PARTS)])
    return {"mean": mean.astype(np.float32),
            "identity_basis": deltas([f"identity{i:03d}" for i in range(num_identity)]),
            "expression_basis": deltas(expression_names), "triangles": np.array(tris, dtype=np.int64),
            "part": part.astype(np.int64)}


# --------------------------------------------------------------------------------------------
# Surrey Face Model (eos cereal binary format, version 1; see the data folder's PROVENANCE.md)


class _Reader:
    def __init__(self, data: bytes, path: Path):
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise FaceSynthError(f"corrupt model file {self.path}: truncated at byte {self.pos}")
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return b

    def u32(self):
        return struct.unpack("<I", self.take(4))[0]

    def i32(self):
        return struct.unpack("<i", self.take(4))[0]

    def u64(self):
        return struct.unpack("<Q", self.take(8))[0]

    def matrix(self) -> np.ndarray:
        rows, cols = self.i32(), self.i32()
        if rows < 0 or cols < 0 or rows * cols > 50_000_000:
            raise FaceSynthError(f"corrupt model file {self.path}: bad matrix size {rows}x{cols}")
        return np.frombuffer(self.take(4 * rows * cols), dtype="<f4").reshape((rows, cols), order="F")

    def triangles(self) -> np.ndarray:
        n = self.u64()
        if n > 10_000_000:
            raise FaceSynthError(f"corrupt model file {self.path}: bad triangle count {n}")
        return np.frombuffer(self.take(12 * n), dtype="<i4").reshape(n, 3).astype(np.int64)


def _read_sfm_pca(r: _Reader):
    mean, basis, eig = r.matrix(), r.matrix(), r.matrix()
    return mean[:, 0] if mean.size else mean, basis, eig[:, 0] if eig.size else eig, r.triangles()


def _load_sfm(folder: Path) -> MorphableModel:
    path = folder / "sfm_shape_3448.bin"
    r = _Reader(path.read_bytes(), path)
    version = r.u32()
    if version != 1:
        raise FaceSynthError(f"unsupported eos model version {version} in {path} (only version 1)")
    mean, basis, eig, tris = _read_sfm_pca(r)
    _read_sfm_pca(r)  # empty colour model
    n_uv = r.u64()
    uv = np.frombuffer(r.take(16 * n_uv), dtype="<f8").reshape(n_uv, 2)
    if r.pos != len(r.data):
        raise FaceSynthError(f"corrupt model file {path}: {len(r.data) - r.pos} trailing bytes")
    v = mean.size // 3
    if basis.shape[0] != mean.size or uv.shape[0] != v or tris.max() >= v:
        raise FaceSynthError(f"corrupt model file {path}: inconsistent sizes")
    mean3 = mean.reshape(v, 3).astype(np.float32)
    identity = (basis * np.sqrt(np.maximum(eig, 0))[None, :]).T.reshape(-1, v, 3).astype(np.float32)

    names, expr = [], []
    bpath = folder / "expression_blendshapes_3448.bin"
    if bpath.is_file():
        b = _Reader(bpath.read_bytes(), bpath)
        for _ in range(b.u64()):
            names.append(b.take(b.u64()).decode())
            expr.append(b.matrix()[:, 0].reshape(v, 3))
    expression = np.array(expr, dtype=np.float32).reshape(len(expr), v, 3)

    landmarks = -np.ones(68, dtype=np.int64)
    lpath = folder / "ibug_to_sfm.txt"
    if lpath.is_file():
        for k, val in re.findall(r"^\s*(\d+)\s*=\s*(\d+)", lpath.read_text(), flags=re.M):
            landmarks[int(k) - 1] = int(val)
    cpath = folder / "sfm_model_contours.json"
    right = left = np.zeros(0, dtype=np.int64)
    if cpath.is_file():
        c = json.loads(cpath.read_text())["model_contour"]
        right = np.array(c["right_contour"], dtype=np.int64)
        left = np.array(c["left_contour"], dtype=np.int64)
    # eos flips v (texture rows start at the top); store v up like the ICT atlas.
    face_uvs = np.stack([uv[:, 0], 1.0 - uv[:, 1]], axis=1).astype(np.float32)[tris]
    return MorphableModel(
        name="surrey_sfm_3448", source=str(folder), mean=mean3, identity_basis=identity,
        expression_basis=expression, expression_names=names, triangles=tris, face_uvs=face_uvs,
        landmark_vertices=landmarks, contour_candidates=(right, left),
        skin=np.ones(v, dtype=bool), mirror_vertex=_mirror_vertices(mean3),
        expression_range=(0.0, 1.0),
    )


# --------------------------------------------------------------------------------------------
# Cache


def save_cache_npz(path: Path, arrays: dict) -> None:
    """Write a cache file atomically (temp file + rename), so a killed process leaves no half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def _from_npz(path: Path, source: str) -> MorphableModel:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return _from_arrays(arrays, source)


def _from_arrays(a: dict, source: str) -> MorphableModel:
    rng = a["expression_range"]
    return MorphableModel(
        name=str(a["name"]), source=source, mean=a["mean"], identity_basis=a["identity_basis"],
        expression_basis=a["expression_basis"], expression_names=[str(x) for x in a["expression_names"]],
        triangles=a["triangles"].astype(np.int64), face_uvs=a["face_uvs"],
        landmark_vertices=a["landmark_vertices"].astype(np.int64),
        contour_candidates=(a["contour_right"].astype(np.int64), a["contour_left"].astype(np.int64)),
        skin=a["skin"].astype(bool), mirror_vertex=a["mirror_vertex"].astype(np.int64),
        expression_range=(float(rng[0]), float(rng[1])), mouth_interior=a["mouth_interior"].astype(bool),
    )
