"""`facesynth serve`: the web demo through its API (gradio_client) and in a real browser (Playwright + chromium).

One server (a `facesynth serve` subprocess on a free port, 128 px views, landmark-only fits) is shared by
the tests of this module; its TMPDIR is a test folder, checked to be empty once the server has stopped.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SIZE = 128


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """URL of a running `facesynth serve`; stopped (SIGTERM) and checked for leftovers afterwards."""
    base = tmp_path_factory.mktemp("serve")
    tmpdir = base / "tmp"
    tmpdir.mkdir()
    log = base / "server.log"
    port = _free_port()
    env = dict(os.environ, TMPDIR=str(tmpdir), GRADIO_ANALYTICS_ENABLED="False")
    env.pop("GRADIO_TEMP_DIR", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "facesynth.cli", "serve", "--port", str(port),
                                 "--size", str(SIZE), "--no-dense", "--threads", "2"],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            pytest.fail(f"facesynth serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "config", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"facesynth serve did not answer in 120 s:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    yield url
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, log.read_text()[-3000:]
    left = sorted(p.name for p in tmpdir.iterdir())
    assert not [n for n in left if n.startswith("facesynth-serve-") or n == "gradio"], \
        f"the server left files in its TMPDIR: {left}"


def _render(client, photo, yaw_list="", yaw=0.0, expression="fitted", sfs=False, method="3d"):
    from gradio_client import handle_file

    t0 = time.perf_counter()
    gallery, mesh, status = client.predict(handle_file(str(photo)), method, yaw, 0.0, yaw_list, "", expression, sfs,
                                           api_name="/render")
    return gallery, mesh, status, time.perf_counter() - t0


@pytest.mark.slow
def test_api_views_errors_and_zip(server, obama_path, tmp_path):
    from gradio_client import Client

    client = Client(server, verbose=False, download_files=str(tmp_path / "downloads"))

    # bad uploads: one readable line in `status`, no views, and the server goes on
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(grey)
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo")
    truncated = tmp_path / "cut.jpg"
    data = obama_path.read_bytes()
    truncated.write_bytes(data[: len(data) // 3])
    huge = tmp_path / "huge.png"                      # over 100 megapixels, a few kB on disk
    Image.new("1", (10_001, 10_001)).save(huge)
    for path, expected in ((grey, "grey.png: no face found"), (text, "notes.jpg: not a readable image"),
                           (truncated, "cut.jpg: unreadable or truncated image"),
                           (huge, "huge.png: image too large (10001x10001)")):
        gallery, mesh, status, _ = _render(client, path, "0")
        assert gallery == [] and mesh is None
        assert expected in status and "\n" not in status.strip(), status
        assert "Traceback" not in status
    # a file over the 50 MB upload limit is refused before the app reads it; the server goes on (below)
    big = tmp_path / "big.jpg"
    big.write_bytes(data[:2] + bytes(51 * 2**20))
    with pytest.raises(Exception, match="exceeds the maximum file size of 52428800 bytes"):
        _render(client, big, "0")

    # a real photo: three views of the asked size, the mesh, then the identity distances and the zip
    gallery, mesh, status, seconds = _render(client, obama_path, "-30,0,30")
    assert len(gallery) == 3, status
    for item in gallery:
        with Image.open(item["image"]) as im:
            assert im.size == (SIZE, SIZE)
    assert [g["caption"] for g in gallery] == ["yaw -30°, pitch 0°", "yaw 0°, pitch 0°", "yaw 30°, pitch 0°"]
    assert mesh.endswith(".glb") and Path(mesh).stat().st_size > 10_000
    assert "3 view(s)" in status

    table, zpath, status = client.predict(api_name="/score")
    rows = table["data"]
    assert [r[0] for r in rows] == [-30.0, 0.0, 30.0]
    assert float(rows[1][2]) < 0.6, rows          # the frontal view is the same person
    with zipfile.ZipFile(zpath) as z:
        names = set(z.namelist())
        manifest = [json.loads(line) for line in z.read("manifest.jsonl").decode().splitlines()]
        with Image.open(io.BytesIO(z.read(manifest[0]["output"]))) as im:
            assert im.size == (SIZE, SIZE)
    assert len(manifest) == 3 and {r["output"] for r in manifest} | {"manifest.jsonl", manifest[0]["mesh"]} == names
    assert all(r["method"] == "3d" and r["size"] == SIZE and r["source"] == obama_path.name for r in manifest)
    assert all(isinstance(r["identity_distance"], float) or r["identity_error"] == "no face found" for r in manifest)

    # a slider move: the fit is reused and only the one pose is rendered
    gallery, _, status, seconds = _render(client, obama_path, "", yaw=45.0, expression="smile")
    assert len(gallery) == 1 and "fit reused" in status, status
    print(f"re-render with the cached fit: {seconds:.2f} s ({status})")

    # the hybrid method: the same cached fit, the views refined by the shipped refiner
    gallery, _, status, _ = _render(client, obama_path, "-30,30", method="hybrid")
    assert len(gallery) == 2 and "fit reused" in status and "hybrid" in status, status
    _, zpath, _ = client.predict(api_name="/score")
    with zipfile.ZipFile(zpath) as z:
        manifest = [json.loads(line) for line in z.read("manifest.jsonl").decode().splitlines()]
    assert all(r["method"] == "hybrid" and len(r["refiner_sha256"]) == 64 for r in manifest)


@pytest.mark.slow
def test_api_reference_photo(server, data_dir, tmp_path):
    """/render's reference inputs, appended after the older ones (calls without them work: above)."""
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False, download_files=str(tmp_path / "downloads"))
    main = data_dir / "faces" / "deepface_jack" / "deepface_img62.jpg"
    smile = data_dir / "faces" / "biden" / "face_recognition_biden2.jpg"
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(grey)
    gallery, mesh, status = client.predict(handle_file(str(main)), "3d", 0.0, 0.0, "0,30", "", "fitted", False,
                                           handle_file(str(grey)), True, False, api_name="/render")
    assert gallery == [] and mesh is None
    assert status == "**Error:** reference photo grey.png: no face found", status

    gallery, mesh, status = client.predict(handle_file(str(main)), "3d", 0.0, 0.0, "0,30", "", "fitted", False,
                                           reference=handle_file(str(smile)), reference_pose=True, api_name="/render")
    assert len(gallery) == 3 and mesh.endswith(".glb"), status
    captions = [g["caption"] for g in gallery]
    assert captions[0].startswith("reference pose: yaw "), captions
    assert captions[1].startswith("yaw 0°, pitch ") and captions[2].startswith("yaw 30°, pitch "), captions
    assert "reference **face_recognition_biden2.jpg**" in status and "expression and head pose from it" in status
    _, zpath, status = client.predict(api_name="/score")
    with zipfile.ZipFile(zpath) as z:
        manifest = [json.loads(line) for line in z.read("manifest.jsonl").decode().splitlines()]
    assert all(r["expression_from"] == r["pose_from"] == smile.name for r in manifest)
    assert "identity distances" in status


def _browser_args() -> list[str]:
    return ["--no-sandbox", "--disable-dev-shm-usage", "--enable-unsafe-swiftshader", "--use-angle=swiftshader"]


@pytest.mark.slow
def test_browser_upload_slider_gallery(server, data_dir, tmp_path):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("no chromium executable (apt-get install chromium); Playwright cannot download its own browser here")
    from playwright.sync_api import sync_playwright

    shot = (REPO / "assets" / "figures" / "serve_demo.png" if os.environ.get("FACESYNTH_SAVE_SCREENSHOT") == "1"
            else tmp_path / "serve_demo.png")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=_browser_args())
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(server)
                       else route.abort())          # offline: nothing but the demo itself
            page.goto(server)
            status = page.locator("#status")
            page.locator("#yaw_list textarea, #yaw_list input").first.fill("-45,0,45")
            # the bundled public-domain photo: this screenshot is the README's
            page.locator("#photo input[type=file]").set_input_files(str(REPO / "assets" / "astronaut.png"))
            page.wait_for_function("document.querySelector('#status').innerText.includes('3 view(s)')", timeout=60_000)

            # move the yaw slider: the one pose it shows is rendered with the cached fit
            box = page.locator("#yaw input[type=range]").bounding_box()
            page.mouse.click(box["x"] + 0.75 * box["width"], box["y"] + box["height"] / 2)
            page.wait_for_function("document.querySelector('#status').innerText.includes('1 view(s)')", timeout=30_000)
            assert "fit reused" in status.inner_text()

            # a preset row of poses fills the gallery for the screenshot
            page.get_by_role("button", name="yaw -60..60 in 9 steps").click()
            page.wait_for_function("document.querySelector('#status').innerText.includes('9 view(s)') && "
                                   "document.querySelector('#status').innerText.includes('identity distances')",
                                   timeout=60_000)
            page.wait_for_function("""() => {
                const imgs = [...document.querySelectorAll('#gallery img')];
                return imgs.length >= 9 && imgs.every(i => i.complete && i.naturalWidth > 0);
            }""", timeout=30_000)
            loaded = page.evaluate("[...document.querySelectorAll('#gallery img')].filter(i => i.naturalWidth > 0).length")
            assert loaded > 0
            assert "no face found" in page.locator("#identity").inner_text() or \
                any(c.isdigit() for c in page.locator("#identity").inner_text())
            page.wait_for_timeout(1500)      # let the mesh viewer draw
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), full_page=True)

            # a reference photo: its expression by default, then its head pose too (one more view, first)
            page.locator("#reference input[type=file]").set_input_files(
                str(data_dir / "faces" / "biden" / "face_recognition_biden2.jpg"))
            page.wait_for_function("document.querySelector('#status').innerText.includes('expression from it')",
                                   timeout=60_000)
            page.locator("#reference_pose input[type=checkbox]").check()
            page.wait_for_function("document.querySelector('#status').innerText.includes('10 view(s)') && "
                                   "document.querySelector('#status').innerText.includes('head pose from it')",
                                   timeout=60_000)
            assert "Error" not in status.inner_text()
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000


def test_serve_cli_errors(capsys):
    from facesynth.cli import main

    assert main(["serve", "--port", "http"]) == 2
    assert main(["serve", "--port", "70000"]) == 2
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"facesynth: error: cannot listen on 127.0.0.1:{port}: already in use (choose another --port)"
    assert not any("Traceback" in line for line in err)


def test_rotate_does_not_import_gradio():
    code = "import sys; from facesynth.cli import build_parser; build_parser(); assert 'gradio' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def _server_pid(url: str) -> int:
    """The pid of the `server` fixture's process: this test process's child serving `url`'s port."""
    port = url.rstrip("/").rsplit(":", 1)[1]
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and b"serve" in argv and port.encode() in argv:
            return int(d.name)
    raise AssertionError(f"no child process serves port {port}")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.slow
def test_api_refuses_huge_angle_ranges_at_once(server, obama_path, tmp_path):
    from gradio_client import Client

    client = Client(server, verbose=False, download_files=str(tmp_path / "downloads"))
    pid = _server_pid(server)
    gallery, _, status, _ = _render(client, obama_path, "abc")   # warms the client and the upload path
    assert gallery == [] and "yaw expects comma-separated degrees" in status, status
    before = _rss_mb(pid)
    gallery, mesh, status, seconds = _render(client, obama_path, "-90:90:1.8e-7")     # 10^9 + 1 views
    grew = _rss_mb(pid) - before
    print(f"10^9 yaw angles refused in {seconds:.2f} s; server RSS {before:.0f} MB, grew by {grew:.1f} MB")
    assert gallery == [] and mesh is None
    assert status == ("**Error:** yaw angles -90:90:1.8e-7 would give 1000000001 angles; "
                      "at most 37 views per request"), status
    assert seconds < 3.0, seconds
    assert grew < 50, f"the server grew by {grew:.0f} MB"
    # each list within the cap, their product over it: refused before the poses are made
    from gradio_client import handle_file

    gallery, _, status = client.predict(handle_file(str(obama_path)), "3d", 0.0, 0.0, "-90:90:5", "-10,10",
                                        "fitted", False, api_name="/render")
    assert gallery == [] and status == "**Error:** yaw x pitch: 37 x 2 = 74 poses; at most 37 views per request", status
