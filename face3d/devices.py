"""Where the torch stages run: `--device auto|cpu|cuda[:N]` resolved to a `torch.device`.

The stages that are mostly tensor arithmetic take a device: the rasterizer (it follows its inputs),
`render_views`, the dense photometric fit (`FitConfig.device`), the refiner and the identity
network. The rest stays on the CPU wherever it runs: dlib's detector and landmarks, the landmark
fit (68 points: a GPU would only add transfers), the texture extraction and the whole-photo
background (NumPy and OpenCV). Results come back as NumPy arrays or CPU tensors either way.

`auto` takes the first CUDA GPU when torch sees one, else the CPU; `cuda` without one is an error
(one line), never a silent fallback.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from face3d.errors import FaceSynthError

if TYPE_CHECKING:   # annotations only
    import torch  # deferred: loaded where a device is resolved

#: What `--device` accepts (besides `cuda:N`, a GPU by index).
DEVICE_CHOICES = ("auto", "cpu", "cuda")
DEFAULT_DEVICE = "auto"


def valid_device_name(text: str) -> bool:
    """Whether `text` is a device name `resolve_device` reads (auto, cpu, cuda or cuda:N), whatever
    this machine has."""
    t = str(text).strip().lower()
    return t in DEVICE_CHOICES or (t.startswith("cuda:") and t[5:].isdigit())


def resolve_device(name: "str | torch.device | None" = DEFAULT_DEVICE) -> "torch.device":
    """The torch device that `name` (auto, cpu, cuda or cuda:N; None: auto) names here. Raises
    FaceSynthError (one line) for an unknown name, or a CUDA device this machine's torch lacks."""
    import torch  # deferred: the CLI parser checks device names without loading torch

    if isinstance(name, torch.device):
        name = str(name)
    text = str(name or DEFAULT_DEVICE).strip().lower()
    if text == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if valid_device_name(text):     # cuda or cuda:N
        index = text[5:]
        if not torch.cuda.is_available():
            raise FaceSynthError(f"device {text}: torch {torch.__version__} sees no CUDA GPU here "
                                 f"(use --device cpu or auto)")
        count = torch.cuda.device_count()
        if index and int(index) >= count:
            raise FaceSynthError(f"device {text}: torch sees {count} CUDA GPU(s) (cuda:0..cuda:{count - 1})")
        return torch.device(text)
    raise FaceSynthError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")


def device_name(device: "torch.device") -> str:
    """A record of the device for manifests and benchmark JSON: 'cpu', or the GPU's own name."""
    import torch  # deferred: the CLI parser checks device names without loading torch

    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)
