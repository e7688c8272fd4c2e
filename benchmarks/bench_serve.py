"""`facesynth serve`: how long a slider move takes once the photo is fitted (issue 9: well under 1 s
with --method 3d). Starts the server as a user would (256-px views, default dense fit), uploads one
photo through gradio_client, then moves the yaw slider N times; prints the round trip as the client
sees it and the server's own render time (from the status line), for 3d and hybrid.

Target (issue 9, "well under a second"): the median round trip of a slider move with --method 3d
< 1 s; the run exits 1 when it is missed (hybrid has no target)."""
from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np

from _common import RESULTS, ROOT, Targets, add_target_option, face_photos


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--moves", type=int, default=10)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--json", default=str(RESULTS / "serve.json"))
    add_target_option(ap)
    args = ap.parse_args()
    targets = Targets.from_args(args)
    from gradio_client import Client, handle_file

    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, TMPDIR=tmp, GRADIO_ANALYTICS_ENABLED="False")
        proc = subprocess.Popen([sys.executable, "-m", "facesynth.cli", "serve", "--port", str(port), "--size", str(args.size),
                                 "--threads", "2"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}/"
            t_start = time.perf_counter()
            while True:
                try:
                    urllib.request.urlopen(url + "config", timeout=2)
                    break
                except OSError:
                    time.sleep(0.3)
            startup = time.perf_counter() - t_start
            client = Client(url, verbose=False)
            photo = [p for p in face_photos() if p.name == "face_recognition_obama.jpg"][0]
            out = {"size": args.size, "server_startup_seconds": startup}
            t0 = time.perf_counter()
            client.predict(handle_file(str(photo)), "3d", 0.0, 0.0, "", "", "fitted", False, api_name="/render")
            out["first_request_seconds"] = time.perf_counter() - t0
            print(f"server up in {startup:.1f} s; first request (upload + fit + 1 view) {out['first_request_seconds']:.2f} s")
            for method in ("3d", "hybrid"):
                rt, server = [], []
                for i in range(args.moves):
                    yaw = float(-60 + 120 * i / max(1, args.moves - 1))
                    t0 = time.perf_counter()
                    _, _, status = client.predict(handle_file(str(photo)), method, yaw, 0.0, "", "", "fitted", False,
                                                  api_name="/render")
                    rt.append(time.perf_counter() - t0)
                    m = re.search(r"rendered in ([0-9.]+) s", status)
                    server.append(float(m.group(1)) if m else float("nan"))
                out[method] = {"round_trip_median": float(np.median(rt)), "render_median": float(np.nanmedian(server)),
                               "round_trips": rt}
                print(f"slider move, --method {method:6s}: {np.median(rt):.2f} s round trip (median of {args.moves}), "
                      f"of which rendering {np.nanmedian(server):.3f} s")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    targets.check("slider_move_3d_round_trip_seconds", out["3d"]["round_trip_median"], "<", 1.0, " s")
    return targets.finish(args.json, out)


if __name__ == "__main__":
    sys.exit(main())
