"""The Python API: `facesynth.rotate` gives the same pictures as the `rotate` command, takes a
photo as a path or an array, and refuses bad requests with one-line errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import facesynth
from face3d.errors import FaceSynthError
from face3d.image_io import load_image
from facesynth.cli import main


@pytest.mark.slow
@pytest.mark.parametrize("method", ["3d", "hybrid"])
def test_rotate_api_matches_the_command(tmp_path, capsys, obama_path, method):
    out = tmp_path / method
    assert main(["rotate", str(obama_path), "--yaw", "-30,30", "--pitch", "10", "--size", "64", "--no-dense",
                 "--method", method, "--expression", "smile", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    views = facesynth.rotate(str(obama_path), poses=[(-30, 10, 0), (30, 10, 0)], method=method, size=64, dense=False,
                             expressions=facesynth.api.parse_expressions("smile"))
    assert len(views) == 1 and views[0].images.shape == (2, 64, 64, 3)
    for row, img in zip(rows, views[0].images):
        assert np.array_equal(np.asarray(Image.open(out / row["output"])), img)
        assert {k: row[k] for k in views[0].record} == views[0].record


@pytest.mark.slow
def test_rotate_api_takes_an_array(obama_path):
    image = load_image(obama_path)
    a = facesynth.rotate(image, yaws=[20], method="3d", size=64, dense=False)
    b = facesynth.rotate(obama_path, yaws=[20], method="3d", size=64, dense=False)
    assert np.array_equal(a[0].images, b[0].images)


@pytest.mark.parametrize("kwargs, message", [
    ({"yaws": [100]}, "[-90, 90]"),
    ({"yaws": [0], "method": "magic"}, "unknown method"),
    ({"yaws": [0], "method": "gan", "sfs": True}, "not available with --method gan"),
    ({"yaws": [0], "size": 8}, "size"),
    ({"yaws": list(np.linspace(-90, 90, 1001))}, "at most"),
])
def test_rotate_api_refuses_bad_requests_before_work(kwargs, message, tmp_path):
    with pytest.raises(FaceSynthError, match=None) as err:
        facesynth.rotate(tmp_path / "no_photo_needed_to_refuse.jpg", **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)
