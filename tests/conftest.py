"""Shared fixtures: the real data in ../shared/data (read where it lies) and the default model."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from face3d.morphable_model import default_data_dir

# Under pytest-xdist (`make test` runs two workers on two cores) each worker takes one torch thread.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, torch.get_num_threads()))

# Tests that start a local Ray cluster: they must not run at the same time on two workers, so the
# one in test_orphans.py joins test_augment.py's worker.
RAY_TESTS = {"test_ray_backend_matches_local", "test_killed_ray_augment_leaves_no_ray_processes"}


def pytest_collection_modifyitems(config, items):
    """With `--dist loadgroup`, keep each test file on one worker and the Ray tests together."""
    for item in items:
        group = "test_augment.py" if item.originalname in RAY_TESTS else item.path.name
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = default_data_dir()
    if d is None or not (d / "faces").is_dir():
        pytest.fail("../shared/data is missing: the tests read the shared data where it lies")
    return d


@pytest.fixture(scope="session")
def lfw_images(data_dir) -> Path:
    """LFW's images folder (`<identity>/<identity>_NNNN.jpg`) in the shared data."""
    d = data_dir / "lfw" / "images"
    if not d.is_dir():
        pytest.fail("LFW is missing: the tests read ../shared/data/lfw/images where it lies")
    return d


@pytest.fixture(scope="session")
def face_photos(data_dir) -> list[Path]:
    return sorted((data_dir / "faces").glob("*/*.jpg"))


@pytest.fixture(scope="session")
def ict_model():
    from face3d.morphable_model import load_morphable_model

    return load_morphable_model()


@pytest.fixture(scope="session")
def sfm_model(data_dir):
    from face3d.morphable_model import load_morphable_model

    return load_morphable_model(data_dir / "3dmm" / "surrey_sfm_3448")


@pytest.fixture(scope="session")
def obama_path(data_dir) -> Path:
    return data_dir / "faces" / "obama" / "face_recognition_obama.jpg"


@pytest.fixture(scope="session")
def obama_image(obama_path) -> np.ndarray:
    from face3d.image_io import load_image

    return load_image(obama_path)


@pytest.fixture(scope="session")
def obama_reconstruction(obama_image, ict_model):
    from face3d.fitting import FitConfig
    from face3d.pipeline import reconstruct_faces

    return reconstruct_faces(obama_image, ict_model, fit_config=FitConfig(dense=False))[0]


@pytest.fixture(scope="session")
def augment_options():
    """A factory of the small, fast `augment` runs the tests make: `make(inp, out, **kw)` gives the
    AugmentOptions of INPUT -> OUTPUT at yaw -30/30, 64 px, landmark-only fit, originals kept, seed
    3, no progress bar, `kw` overriding any of them."""
    from facesynth.augment import AugmentOptions

    def make(inp, out, **kw) -> AugmentOptions:
        base = dict(input=str(inp), output=str(out), yaw=[-30.0, 30.0], size=64, dense=False, keep_original=True,
                    seed=3, progress=False)
        base.update(kw)
        return AugmentOptions(**base)

    return make
