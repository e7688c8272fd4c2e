"""`facesynth serve`: start the demo's server on a local port, until Ctrl-C or SIGTERM; then the
app's temporary folder is removed.

    exit_code = serve(ServeOptions(port=7860, size=256))
"""
from __future__ import annotations

import signal
import socket
from dataclasses import dataclass

import torch

from face3d.devices import DEFAULT_DEVICE, resolve_device
from face3d.errors import FaceSynthError
from face3d.morphable_model import load_morphable_model
from facesynth.serve.app import build_app, launch_options


@dataclass(frozen=True)
class ServeOptions:
    """Where the demo listens and how it fits and renders (the `serve` flags)."""

    host: str = "127.0.0.1"
    port: int = 7860
    size: int = 256
    dense: bool = True
    model: str | None = None       # the morphable model's folder; None: the default one
    threads: int | None = None
    device: str = DEFAULT_DEVICE   # face3d.devices: auto, cpu, cuda[:N]


def check_port_free(host: str, port: int) -> None:
    """Refuse, with one line, a host that does not resolve or a port that cannot be listened on."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FaceSynthError(f"--host {host}: cannot resolve it ({exc.strerror or exc})") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as uvicorn does
        try:
            s.bind(addr)
        except OSError as exc:
            why = "already in use" if exc.errno in (98, 48) else (exc.strerror or str(exc))
            raise FaceSynthError(f"cannot listen on {host}:{port}: {why} (choose another --port)") from None


def interrupt(signum, frame):
    """The SIGTERM handler while serving: stop as Ctrl-C does, so the temporary folder is removed."""
    raise KeyboardInterrupt


def serve(options: ServeOptions) -> int:
    """Run the demo until Ctrl-C or SIGTERM; returns the exit code (0)."""
    if options.threads:
        torch.set_num_threads(options.threads)
    device = resolve_device(options.device)   # cuda where torch sees none: one line, before the port
    check_port_free(options.host, options.port)
    model = load_morphable_model(options.model)
    app = build_app(model=model, size=options.size, dense=options.dense, device=str(device))
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        try:
            app.launch(**launch_options(app, options.host, options.port))
        except OSError as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise FaceSynthError(f"cannot listen on {options.host}:{options.port}: {first.split('. ')[0]}") from None
        except KeyboardInterrupt:
            pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        try:
            app.close()
        except Exception:      # a server that never started has nothing to close
            pass
        app.facesynth_cleanup()
    print("facesynth serve: stopped", flush=True)
    return 0


def run_serve(args) -> int:
    """`facesynth serve`: the parsed flags as ServeOptions."""
    return serve(ServeOptions(host=args.host, port=args.port, size=args.size, dense=args.dense, model=args.model,
                              threads=args.threads, device=args.device))
