"""Export the fitted head with its photo texture through trimesh (OBJ + MTL + PNG, PLY, GLB)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from face3d.image_io import atomic_write_bytes as _atomic
from face3d.morphable_model import MorphableModel
from face3d.texture import Texture


def textured_mesh(vertices: np.ndarray, model: MorphableModel, texture: Texture):
    """A trimesh.Trimesh whose vertices are split along UV seams, with the atlas as its texture (mm units)."""
    # deferred: trimesh costs ~0.8 s to import (measured) and facesynth.rotate_job imports this
    # module for every run, not only those that export a mesh
    import trimesh

    tri = model.triangles
    uv = model.face_uvs.reshape(-1, 2)
    vid = tri.reshape(-1)
    # one output vertex per distinct (vertex, uv) pair, so seams keep their two UVs
    key = np.round(uv * 65536).astype(np.int64)
    combo = vid * (1 << 34) + key[:, 0] * (1 << 17) + key[:, 1]
    uniq, first, inverse = np.unique(combo, return_index=True, return_inverse=True)
    verts = vertices[vid[first]]
    faces = inverse.reshape(-1, 3)
    img = Image.fromarray(np.clip(texture.image * 255 + 0.5, 0, 255).astype(np.uint8))
    material = trimesh.visual.material.SimpleMaterial(image=img)
    visual = trimesh.visual.TextureVisuals(uv=uv[first], image=img, material=material)
    return trimesh.Trimesh(vertices=verts, faces=faces, visual=visual, process=False)


def export_mesh(path: str | os.PathLike, vertices: np.ndarray, model: MorphableModel, texture: Texture) -> list[Path]:
    """Write the mesh; the format follows the suffix (.obj with .mtl and .png beside it, .ply, .glb)."""
    import trimesh  # deferred: as in textured_mesh

    path = Path(path)
    mesh = textured_mesh(vertices, model, texture)
    fmt = path.suffix.lower().lstrip(".")
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    if fmt == "obj":
        text, files = trimesh.exchange.obj.export_obj(mesh, include_texture=True, return_texture=True, mtl_name=path.stem + ".mtl")
        for name, data in files.items():
            _atomic(path.parent / name, data)
            written.append(path.parent / name)
        _atomic(path, text.encode())
    elif fmt == "ply":
        # PLY has no standard texture binding: bake the atlas into vertex colours
        colours = mesh.visual.to_color().vertex_colors
        mesh = mesh.copy()
        mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=colours)
        _atomic(path, mesh.export(file_type="ply"))
    elif fmt == "glb":
        _atomic(path, mesh.export(file_type="glb"))
    else:
        raise ValueError(f"unknown mesh format {fmt!r}")
    written.append(path)
    return written
