"""dlib's face-recognition ResNet in PyTorch, read straight from dlib's ``.dat`` file.

The network is the one from dlib's ``dnn_face_recognition_ex.cpp``
(``dlib_face_recognition_resnet_model_v1.dat``, shipped by the registry package
``face_recognition_models``; 99.38% on LFW). The weights are read from dlib's own serialisation
every time (no converted copy is stored anywhere), the architecture is rebuilt in torch, and the
face alignment of ``dlib.get_face_chip(img, shape, size=150, padding=0.25)`` is reproduced with a
differentiable warp, so that identity distances can be used both as a metric (under
``torch.no_grad()``) and as a loss (gradients flow to the image pixels and to the landmarks).

Public API
----------
- :data:`SAME_PERSON_THRESHOLD` -- dlib's decision threshold (0.6) on the Euclidean distance.
- :class:`IdentityEncoder` -- ``IdentityEncoder.load(path=None)`` (cached, once per process),
  ``embed(images, landmarks)``, ``embed_chips(chips)``, ``distance(a, b)``.
- :func:`align_faces` -- the dlib-compatible 150x150 chips, differentiable.
- :func:`read_dlib_network` -- the ``.dat`` reader (returns the layer records in forward order).

Format facts (see ``shared/notes/dlib-face-recognition-format.md`` and dlib's ``serialize.h``,
``dnn/core.h``, ``dnn/layers.h``, ``dnn/input.h``): integers are a control byte (bit 7 = sign,
low nibble = byte count) then little-endian magnitude; floats outside tensors are an int64
mantissa then an int16 exponent; tensors are a version (2), four dimensions and raw float32 data.
Every layer is stored as ``version, sub-network, record``, so the file opens with the nested
version integers (outermost first) and the records then follow in forward order.
"""
from __future__ import annotations

import copy
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from face3d.errors import FaceSynthError
from face3d.landmarks import model_file

#: dlib's same-person threshold on the Euclidean distance between two descriptors.
SAME_PERSON_THRESHOLD = 0.6
#: Side of the aligned chip the network takes, and dlib's padding for it.
CHIP_SIZE = 150
CHIP_PADDING = 0.25
#: File name of the weights inside face_recognition_models/models/.
MODEL_NAME = "dlib_face_recognition_resnet_model_v1.dat"

# ----------------------------------------------------------------------------------------------
# Reading dlib's serialisation
# ----------------------------------------------------------------------------------------------


class _FormatError(Exception):
    """Internal: the byte stream is not what dlib's serialisation would have written."""


class _Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise _FormatError(f"file ends early (wanted {n} bytes at offset {self.pos}, size {len(self.data)})")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def int(self) -> int:
        ctrl = self._take(1)[0]
        size = ctrl & 0x0F
        if ctrl & 0x70 or not 1 <= size <= 8:
            raise _FormatError(f"bad integer control byte 0x{ctrl:02x} at offset {self.pos - 1}")
        value = int.from_bytes(self._take(size), "little")
        return -value if ctrl & 0x80 else value

    def float(self) -> float:
        mantissa = self.int()
        exponent = self.int()
        if exponent >= 32000:  # dlib's encoding of non-finite values
            return {32000: math.inf, 32001: -math.inf}.get(exponent, math.nan)
        return math.ldexp(mantissa, exponent)

    def string(self, max_len: int = 256) -> str:
        n = self.int()
        if not 0 <= n <= max_len:
            raise _FormatError(f"implausible string length {n} at offset {self.pos}")
        try:
            return self._take(n).decode("ascii")
        except UnicodeDecodeError:
            raise _FormatError(f"non-text string at offset {self.pos - n}") from None

    def bool(self) -> bool:
        c = self._take(1)
        if c not in (b"0", b"1"):
            raise _FormatError(f"bad bool byte {c!r} at offset {self.pos - 1}")
        return c == b"1"

    def tensor(self) -> np.ndarray:
        version = self.int()
        if version != 2:
            raise _FormatError(f"unknown tensor version {version} at offset {self.pos}")
        dims = [self.int() for _ in range(4)]
        if any(d < 0 for d in dims):
            raise _FormatError(f"negative tensor dimension {dims}")
        count = int(np.prod(dims, dtype=np.int64))
        raw = self._take(4 * count)
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(dims)

    def alias_shape(self) -> tuple[int, int, int, int]:
        version = self.int()
        if version != 1:
            raise _FormatError(f"unknown alias_tensor version {version} at offset {self.pos}")
        return tuple(self.int() for _ in range(4))  # type: ignore[return-value]

    def floats(self, n: int) -> list[float]:
        return [self.float() for _ in range(n)]


@dataclass
class LayerRecord:
    """One entry of the network in forward order. ``kind`` is dlib's record name without its
    version suffix ("con", "affine", "relu", "max_pool", "avg_pool", "fc", "add_prev"), or
    "tag_or_skip" for the wiring layers, which the file stores without a record."""

    kind: str
    params: dict = field(default_factory=dict)


@dataclass
class DlibNetwork:
    input_means: tuple[float, float, float]
    input_size: tuple[int, int]
    loss: dict
    layers: list[LayerRecord]


def _read_layer_record(r: _Reader) -> LayerRecord:
    name = r.string()
    if name == "con_4":
        params = r.tensor()
        num_filters, nr, nc, stride_y, stride_x, pad_y, pad_x = (r.int() for _ in range(7))
        wshape = r.alias_shape()
        bshape = r.alias_shape()
        r.floats(4)  # learning-rate and weight-decay multipliers
        nw = int(np.prod(wshape))
        nb = int(np.prod(bshape))
        if params.size != nw + nb or wshape[0] != num_filters or wshape[2:] != (nr, nc) or nb != num_filters:
            raise _FormatError(f"inconsistent con_4 record: {params.size} values for filters {wshape} + biases {bshape}")
        flat = params.reshape(-1)
        return LayerRecord("con", dict(weight=flat[:nw].reshape(wshape), bias=flat[nw:].reshape(num_filters),
                                       stride=(stride_y, stride_x), padding=(pad_y, pad_x)))
    if name == "affine_":
        params = r.tensor()
        gshape = r.alias_shape()
        bshape = r.alias_shape()
        mode = r.int()
        k = int(np.prod(gshape))
        if params.size != 2 * k or int(np.prod(bshape)) != k or mode != 0:
            raise _FormatError(f"unsupported affine_ record (mode {mode}, {params.size} values for {gshape})")
        flat = params.reshape(-1)
        return LayerRecord("affine", dict(gamma=flat[:k].copy(), beta=flat[k:].copy()))
    if name == "relu_":
        return LayerRecord("relu")
    if name in ("max_pool_2", "avg_pool_2"):
        nr, nc, stride_y, stride_x, pad_y, pad_x = (r.int() for _ in range(6))
        return LayerRecord(name[:-2], dict(size=(nr, nc), stride=(stride_y, stride_x), padding=(pad_y, pad_x)))
    if name == "fc_2":
        outputs = r.int()
        inputs = r.int()
        params = r.tensor()
        wshape = r.alias_shape()
        bshape = r.alias_shape()
        bias_mode = r.int()
        r.floats(4)
        if wshape[:2] != (inputs, outputs) or bias_mode != 1 or params.size != inputs * outputs:
            raise _FormatError(f"unsupported fc_2 record (weights {wshape}, bias mode {bias_mode})")
        return LayerRecord("fc", dict(weight=params.reshape(-1)[: inputs * outputs].reshape(inputs, outputs).copy()))
    if name == "add_prev_":
        return LayerRecord("add_prev")
    raise _FormatError(f"unsupported layer record {name!r} at offset {r.pos}")


def _read_layer_trailer(r: _Reader) -> None:
    for _ in range(3):
        r.bool()
    for _ in range(3):
        t = r.tensor()
        if t.size:
            raise _FormatError("expected an empty gradient/output tensor")


def _parse(data: bytes) -> DlibNetwork:
    r = _Reader(data)
    if r.int() != 1:
        raise _FormatError("not a dlib loss-layer network (version integer)")
    loss_name = r.string()
    if loss_name != "loss_metric_2":
        raise _FormatError(f"expected loss_metric_2, found {loss_name!r}")
    margin, threshold = r.floats(2)
    # The nested layers: a run of version integers, outermost first. 2 = layer with a record,
    # 1 = tag/skip (no record), 3 = the innermost layer holding the input layer.
    stack: list[int] = []
    while True:
        v = r.int()
        if v == 3:
            break
        if v not in (1, 2):
            raise _FormatError(f"unexpected layer version {v} at offset {r.pos}")
        stack.append(v)
        if len(stack) > 10_000:
            raise _FormatError("implausibly deep network")
    input_name = r.string()
    if input_name != "input_rgb_image_sized":
        raise _FormatError(f"expected input_rgb_image_sized, found {input_name!r}")
    means = tuple(r.floats(3))
    nr, nc = r.int(), r.int()
    layers = [_read_layer_record(r)]
    _read_layer_trailer(r)
    if r.int() != 1:
        raise _FormatError("unexpected sample expansion factor")
    for v in reversed(stack):
        if v == 1:
            layers.append(LayerRecord("tag_or_skip"))
        else:
            layers.append(_read_layer_record(r))
            _read_layer_trailer(r)
    if r.pos != len(data):
        raise _FormatError(f"{len(data) - r.pos} unexpected trailing bytes")
    return DlibNetwork(means, (nr, nc), dict(name=loss_name, margin=margin, threshold=threshold), layers)  # type: ignore[arg-type]


def read_dlib_network(path: str | os.PathLike) -> DlibNetwork:
    """Parse a dlib ``loss_metric`` network file; any problem is a one-line FaceSynthError."""
    p = Path(path)
    if not p.is_file():
        raise FaceSynthError(f"{path}: no such file (dlib face-recognition weights)")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise FaceSynthError(f"{path}: cannot read ({exc.strerror or type(exc).__name__})") from None
    try:
        return _parse(data)
    except (_FormatError, ValueError, OverflowError, IndexError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FaceSynthError(f"{path}: not a valid dlib face-recognition network ({msg})") from None


# ----------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------

# (filters, downsampling) per residual block, in forward order: dlib's alevel4 .. alevel0.
_BLOCKS: tuple[tuple[int, bool], ...] = (
    (32, False), (32, False), (32, False),
    (64, True), (64, False), (64, False), (64, False),
    (128, True), (128, False), (128, False),
    (256, True), (256, False), (256, False),
    (256, True),
)


def _expected_kinds() -> list[str]:
    kinds = ["con", "affine", "relu", "max_pool"]
    for _, down in _BLOCKS:
        body = ["con", "affine", "relu", "con", "affine"]
        if down:  # add_prev2<avg_pool<skip1<tag2<block<tag1<...>>>>>>
            kinds += ["tag_or_skip", *body, "tag_or_skip", "tag_or_skip", "avg_pool", "add_prev", "relu"]
        else:  # add_prev1<block<tag1<...>>>
            kinds += ["tag_or_skip", *body, "add_prev", "relu"]
    return kinds + ["avg_pool", "fc"]


def _add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: the output takes the larger size on every axis, each input is placed at
    the top-left corner and zeros fill the rest. ``a`` (a block's fresh output) may be reused."""
    if a.shape == b.shape:
        return a.add_(b)  # a is always a fresh conv output (autograd-safe in place)
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return pad(a) + pad(b)


class _Block(nn.Module):
    """conv(3x3, stride) + affine + relu + conv(3x3) + affine, with the shortcut and final relu.
    Each conv and the affine after it are folded into one conv with bias (same arithmetic up to
    float rounding)."""

    def __init__(self, cin: int, cout: int, down: bool):
        super().__init__()
        self.down = down
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=2 if down else 1, padding=0 if down else 1)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu_(self.conv1(x)))
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu_(_add_prev(y, shortcut))


class DlibFaceResNet(nn.Module):
    """dlib's ``anet_type`` (dnn_face_recognition_ex.cpp): (B,3,150,150) RGB 0..255 -> (B,128).

    The descriptor is the raw fc output (not L2-normalised), exactly like dlib's."""

    def __init__(self, means: Sequence[float] = (122.782, 117.001, 104.298)):
        super().__init__()
        self.register_buffer("means", torch.tensor(list(means), dtype=torch.float32).view(1, 3, 1, 1))
        self.stem = nn.Conv2d(3, 32, 7, stride=2, padding=0)
        blocks, cin = [], 32
        for cout, down in _BLOCKS:
            blocks.append(_Block(cin, cout, down))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(256, 128, bias=False)

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        return self.descriptor(self.features(chips))

    def descriptor(self, features: list[torch.Tensor]) -> torch.Tensor:
        """(B,128) descriptors from `features`' last map: its mean over the image, then the fc layer."""
        return self.fc(features[-1].mean(dim=(2, 3)))

    def features(self, chips: torch.Tensor) -> list[torch.Tensor]:
        """The activations of (B,3,150,150) chips after the stem's pooling and after the last block
        of each resolution: six maps, 32 channels at 35 px (the stem's and its blocks'), 64 at 17, 128
        at 8, 256 at 4 and at 2; the layers a perceptual loss compares, the last one what the
        descriptor pools."""
        x = (chips - self.means) / 256.0  # dlib's input_rgb_image: (value - mean)/256
        x = F.max_pool2d(F.relu_(self.stem(x)), 3, 2)
        out = [x]
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i + 1 == len(self.blocks) or _BLOCKS[i + 1][1]:
                out.append(x)
        return out

    @classmethod
    def from_dlib(cls, net: DlibNetwork) -> "DlibFaceResNet":
        kinds = [layer.kind for layer in net.layers]
        if kinds != _expected_kinds():
            raise _FormatError("layer sequence differs from dnn_face_recognition_ex's ResNet")
        if tuple(net.input_size) != (CHIP_SIZE, CHIP_SIZE):
            raise _FormatError(f"input size {net.input_size}, expected 150x150")
        model = cls(net.input_means)
        convs = [model.stem] + [c for b in model.blocks for c in (b.conv1, b.conv2)]
        records = iter(net.layers)
        ci = 0
        for rec in records:
            if rec.kind != "con":
                if rec.kind == "fc":
                    if rec.params["weight"].shape != (256, 128):
                        raise _FormatError(f"fc weight shape {rec.params['weight'].shape}")
                    model.fc.weight.data.copy_(torch.from_numpy(rec.params["weight"].T.copy()))
                continue
            aff = next(records)
            conv = convs[ci]
            ci += 1
            w, b = rec.params["weight"], rec.params["bias"]
            if tuple(w.shape) != tuple(conv.weight.shape):
                raise _FormatError(f"conv weight shape {w.shape}, expected {tuple(conv.weight.shape)}")
            if rec.params["stride"] != conv.stride or rec.params["padding"] != conv.padding:
                raise _FormatError(f"conv stride/padding {rec.params['stride']}/{rec.params['padding']} "
                                   f"differ from {conv.stride}/{conv.padding}")
            g = aff.params["gamma"].astype(np.float64)
            beta = aff.params["beta"].astype(np.float64)
            if g.shape[0] != w.shape[0]:
                raise _FormatError("affine size does not match its conv")
            conv.weight.data.copy_(torch.from_numpy((w.astype(np.float64) * g[:, None, None, None]).astype(np.float32)))
            conv.bias.data.copy_(torch.from_numpy((b.astype(np.float64) * g + beta).astype(np.float32)))
        for rec in net.layers:  # pooling geometry as the architecture assumes it
            if rec.kind == "max_pool" and (rec.params["size"], rec.params["stride"], rec.params["padding"]) != ((3, 3), (2, 2), (0, 0)):
                raise _FormatError(f"unexpected max_pool {rec.params}")
            if rec.kind == "avg_pool" and rec.params["size"] != (0, 0) and (
                    rec.params["size"], rec.params["stride"], rec.params["padding"]) != ((2, 2), (2, 2), (0, 0)):
                raise _FormatError(f"unexpected avg_pool {rec.params}")
        model.requires_grad_(False)
        # channels-last convolutions are ~15% faster on CPU (oneDNN); results are unchanged
        # up to float rounding, and inputs in either layout are accepted.
        model.to(memory_format=torch.channels_last)
        return model.eval()


# ----------------------------------------------------------------------------------------------
# dlib-compatible alignment: get_face_chip_details + extract_image_chip, differentiable
# ----------------------------------------------------------------------------------------------

# dlib's mean face (points 17..67 of the iBUG 68), from get_face_chip_details.
_MEAN_FACE_X = (
    0.000213256, 0.0752622, 0.18113, 0.29077, 0.393397, 0.586856, 0.689483, 0.799124,
    0.904991, 0.98004, 0.490127, 0.490127, 0.490127, 0.490127, 0.36688, 0.426036,
    0.490127, 0.554217, 0.613373, 0.121737, 0.187122, 0.265825, 0.334606, 0.260918,
    0.182743, 0.645647, 0.714428, 0.793132, 0.858516, 0.79751, 0.719335, 0.254149,
    0.340985, 0.428858, 0.490127, 0.551395, 0.639268, 0.726104, 0.642159, 0.556721,
    0.490127, 0.423532, 0.338094, 0.290379, 0.428096, 0.490127, 0.552157, 0.689874,
    0.553364, 0.490127, 0.42689)
_MEAN_FACE_Y = (
    0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891,
    0.0187482, 0.038915, 0.106454, 0.203352, 0.307009, 0.409805, 0.515625, 0.587326,
    0.609345, 0.628106, 0.609345, 0.587326, 0.216423, 0.178758, 0.179852, 0.231733,
    0.245099, 0.244077, 0.231733, 0.179852, 0.178758, 0.216423, 0.244077, 0.245099,
    0.780233, 0.745405, 0.727388, 0.742578, 0.727388, 0.745405, 0.780233, 0.864805,
    0.902192, 0.909281, 0.902192, 0.864805, 0.784792, 0.778746, 0.785343, 0.778746,
    0.784792, 0.824182, 0.831803, 0.824182)
# 68 points: the eyebrows (17-26) and the lower lip (55-59, 65-67) are ignored.
_IDX68 = [i for i in range(17, 68) if not (17 <= i <= 26 or 55 <= i <= 59 or 65 <= i <= 67)]
_TEMPLATE68 = [(_MEAN_FACE_X[i - 17], _MEAN_FACE_Y[i - 17]) for i in _IDX68]
# dlib's 5-point model (shape_predictor_5_face_landmarks) template.
_TEMPLATE5 = [(0.8595674595992, 0.2134981538014), (0.6460604764104, 0.2289674387677),
              (0.1205750620789, 0.2137274526848), (0.3340850613712, 0.2290642403242),
              (0.4901123135679, 0.6277975316475)]


def _chip_points(n_landmarks: int, size: int, padding: float) -> tuple[list[int], torch.Tensor]:
    if n_landmarks == 68:
        idx, tpl = _IDX68, _TEMPLATE68
    elif n_landmarks == 5:
        idx, tpl = list(range(5)), _TEMPLATE5
    else:
        raise FaceSynthError(f"face alignment needs 68 or 5 landmarks, got {n_landmarks}")
    pts = torch.tensor(tpl, dtype=torch.float64, device="cpu")
    return idx, (padding + pts) / (2 * padding + 1) * size


def _similarity(src: torch.Tensor, dst: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Least-squares similarity dst ~ s*R*src + t (Umeyama, no reflection), closed form in 2-D.
    Returns (a, b, t) with s*R = [[a, -b], [b, a]]."""
    ms, md = src.mean(0), dst.mean(0)
    S, D = src - ms, dst - md
    denom = (S * S).sum()
    a = (S[:, 0] * D[:, 0] + S[:, 1] * D[:, 1]).sum() / denom
    b = (S[:, 0] * D[:, 1] - S[:, 1] * D[:, 0]).sum() / denom
    t = md - torch.stack([a * ms[0] - b * ms[1], b * ms[0] + a * ms[1]])
    return a, b, t


_PYR_KERNEL_1D = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])


def _floor_ste(x: torch.Tensor) -> torch.Tensor:
    """floor() in the forward pass, identity gradient (dlib stores every stage as uint8)."""
    return x + (torch.floor(x) - x).detach()


def _pyramid_down(img: torch.Tensor, quantize: bool) -> torch.Tensor:
    """dlib's pyramid_down<2> on an RGB image: 5x5 [1 4 6 4 1]^2/256 filter at the top-left
    of every 2x2 step, output ((H-3)/2, (W-3)/2), truncated to integers."""
    k1 = _PYR_KERNEL_1D.to(img.dtype).to(img.device)
    k = (k1[:, None] * k1[None, :] / 256.0).expand(3, 1, 5, 5)
    out = F.conv2d(img[None], k, stride=2, groups=3)[0]
    return _floor_ste(out) if quantize else out


@dataclass
class _ChipPlan:
    """Everything discrete about one face's chip extraction (bounding box, pyramid depth)."""

    box: tuple[int, int, int, int]  # left, top, right, bottom (inclusive), in the image
    depth: int  # pyramid_down<2> steps applied to the cropped box


def _plan_chip(cx: float, cy: float, width: float, angle: float, img_w: int, img_h: int, size: int) -> _ChipPlan:
    """Mirror of dlib's extract_image_chips: pyramid depth and the cropped bounding box."""
    half = (width - 1) / 2  # centered_drect(p, w, h) spans p +- (w-1)/2
    l, t, r, b = cx - half, cy - half, cx + half, cy + half
    depth, grow = 0, 2.0

    def down(rect):
        l, t, r, b = rect
        return (l / 2 - 1.25, t / 2 - 0.75, r / 2 - 1.25, b / 2 - 0.75)

    def area(rect):
        l, t, r, b = rect
        return 0.0 if (t > b or l > r) else (r - l + 1) * (b - t + 1)

    rect = down((l, t, r, b))
    while area(rect) > size * size:
        rect = down(rect)
        depth += 1
        grow = grow * 2 + 2
    c, s = math.cos(angle), math.sin(angle)
    xs, ys = [], []
    for px, py in ((l, t), (r, t), (l, b), (r, b)):
        dx, dy = px - cx, py - cy
        xs.append(c * dx - s * dy + cx)
        ys.append(s * dx + c * dy + cy)
    gl, gt = max(min(xs) - grow, 0.0), max(min(ys) - grow, 0.0)
    gr, gb = min(max(xs) + grow, img_w - 1.0), min(max(ys) + grow, img_h - 1.0)
    if gl > gr or gt > gb:  # the chip lies entirely outside the image
        return _ChipPlan((0, 0, -1, -1), depth)
    rnd = lambda v: int(math.floor(v + 0.5))  # noqa: E731  drectangle -> rectangle
    return _ChipPlan((rnd(gl), rnd(gt), rnd(gr), rnd(gb)), depth)


def _align_one(image: torch.Tensor, landmarks: torch.Tensor, size: int, padding: float,
               quantize: bool) -> torch.Tensor:
    """One (3,H,W) float image and its (68|5, 2) landmarks -> (3, size, size) chip."""
    idx, chip_pts = _chip_points(landmarks.shape[0], size, padding)
    lm = landmarks.to(torch.float64)
    a, b, t = _similarity(chip_pts.to(lm.device), lm[idx])
    scale = torch.sqrt(a * a + b * b)
    cos, sin = a / scale, b / scale
    half = torch.tensor(size / 2.0, dtype=torch.float64, device=lm.device)
    cx = a * half - b * half + t[0]
    cy = b * half + a * half + t[1]
    width = size * scale
    H, W = image.shape[-2:]
    fx = lambda v: float(v.detach())  # noqa: E731  the discrete plan takes no gradient
    plan = _plan_chip(fx(cx), fx(cy), fx(width), math.atan2(fx(b), fx(a)), W, H, size)
    l0, t0, r0, b0 = plan.box
    if r0 < l0 or b0 < t0:
        return image.new_zeros(3, size, size)
    level = image[:, t0:b0 + 1, l0:r0 + 1]
    if quantize:
        level = _floor_ste(level)  # dlib works on uint8 pixels
    for _ in range(plan.depth):
        if min(level.shape[-2:]) <= 8:
            break
        level = _pyramid_down(level, quantize)
    # The chip rectangle in the level's coordinates (translate, then point_down per level).
    half_w = (width - 1) / 2
    rl, rt, rr, rb = cx - half_w - l0, cy - half_w - t0, cx + half_w - l0, cy + half_w - t0
    for _ in range(plan.depth):
        rl, rt, rr, rb = rl / 2 - 1.25, rt / 2 - 0.75, rr / 2 - 1.25, rb / 2 - 0.75
    ccx, ccy = (rl + rr) / 2, (rt + rb) / 2
    ext_x, ext_y = rr - rl, rb - rt
    # Chip pixel (c, r) -> rotated rectangle corner interpolation, as find_affine_transform
    # from the chip's tl/tr/bl corners to the rotated rectangle's corners gives.
    g = torch.arange(size, dtype=torch.float64, device=lm.device) / (size - 1) - 0.5
    u = g[None, :].expand(size, size) * ext_x  # columns
    v = g[:, None].expand(size, size) * ext_y  # rows
    px = ccx + cos * u - sin * v
    py = ccy + sin * u + cos * v
    hl, wl = level.shape[-2:]
    inside = ((torch.floor(px) >= 0) & (torch.floor(py) >= 0) & (torch.floor(px) + 1 < wl)
              & (torch.floor(py) + 1 < hl)).detach()
    grid = torch.stack([2 * px / max(wl - 1, 1) - 1, 2 * py / max(hl - 1, 1) - 1], dim=-1)
    chip = F.grid_sample(level[None], grid[None].to(level.dtype), mode="bilinear",
                         padding_mode="zeros", align_corners=True)[0]
    chip = chip * inside.to(chip.dtype)
    return _floor_ste(chip) if quantize else chip


def _as_chw_tensor(img) -> torch.Tensor:
    if isinstance(img, np.ndarray):
        if img.ndim == 3 and img.shape[2] == 3 and img.shape[0] != 3:
            img = img.transpose(2, 0, 1)
        img = torch.from_numpy(np.array(img, copy=True, order="C"))
    if not torch.is_tensor(img) or img.ndim != 3 or img.shape[0] != 3:
        raise FaceSynthError("images must be (3, H, W) RGB tensors (or uint8 (H, W, 3) arrays)")
    return img if img.is_floating_point() else img.float()


def image_tensor(image: np.ndarray) -> torch.Tensor:
    """A uint8 RGB (H,W,3) array (as ``face3d.image_io.load_image`` returns) -> (3,H,W) float 0..255."""
    return torch.from_numpy(np.array(image, dtype=np.float32, copy=True)).permute(2, 0, 1).contiguous()


def _landmark_tensor(landmarks) -> torch.Tensor:
    """A tensor as it is (its device, its graph); anything else as a CPU tensor."""
    return landmarks if torch.is_tensor(landmarks) else torch.as_tensor(np.asarray(landmarks), device="cpu")


def align_faces(images, landmarks, size: int = CHIP_SIZE, padding: float = CHIP_PADDING,
                quantize: bool = True) -> torch.Tensor:
    """dlib's ``get_face_chip(img, shape, size, padding)`` for a batch, differentiable.

    ``images``: a float tensor (B,3,H,W) with RGB values in 0..255, or a list of B images of
    different sizes, each a (3,H,W) tensor (uint8 (H,W,3) numpy arrays are accepted too).
    ``landmarks``: (B,68,2) or (B,5,2) pixel x,y (tensor or array; a list of (N,2) works too).
    Returns (B,3,size,size) float chips. Reproduces dlib's similarity transform, its image
    pyramid (pyramid_down<2>) for large faces, its bilinear sampling and, with ``quantize``
    (default), its uint8 truncation of each stage (straight-through gradients).
    """
    if torch.is_tensor(images) and images.ndim == 4:
        imgs = list(images.unbind(0))
    elif isinstance(images, np.ndarray) and images.ndim == 4:
        imgs = [images[i] for i in range(images.shape[0])]
    else:
        imgs = list(images)
    imgs = [_as_chw_tensor(im) for im in imgs]
    if torch.is_tensor(landmarks) or isinstance(landmarks, np.ndarray):
        lm_all = _landmark_tensor(landmarks)
        lms = list(lm_all.unbind(0)) if lm_all.ndim == 3 else [lm_all]
    else:
        lms = [_landmark_tensor(lm) for lm in landmarks]
    if len(lms) != len(imgs):
        raise FaceSynthError(f"{len(imgs)} images but {len(lms)} landmark sets")
    chips = [_align_one(im, lm.to(im.device), size, padding, quantize) for im, lm in zip(imgs, lms)]
    return torch.stack(chips) if chips else torch.zeros(0, 3, size, size)


# ----------------------------------------------------------------------------------------------
# Public encoder
# ----------------------------------------------------------------------------------------------

_CACHE: dict[str, "IdentityEncoder"] = {}
_CACHE_LOCK = threading.Lock()


class IdentityEncoder(nn.Module):
    """dlib's 128-d face descriptor as a frozen torch module.

    Use :meth:`load` (cached: the file is parsed once per process). Works batched, under
    ``torch.no_grad()`` for metrics and with autograd for identity-preserving losses (the
    weights never require gradients; gradients flow to images and landmarks).
    """

    def __init__(self, net: DlibFaceResNet, path: str = ""):
        super().__init__()
        self.net = net
        self.path = path

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, device: torch.device | str = "cpu") -> "IdentityEncoder":
        """The encoder for ``path`` (default: face_recognition_models' model file) on ``device``,
        parsed once per process (and moved once per device). A missing or corrupt file is a one-line
        FaceSynthError naming the path."""
        if path is None:
            path = model_file(MODEL_NAME)
        name = str(Path(path).resolve())
        device = torch.device(device)
        key = name if device.type == "cpu" else f"{name}|{device}"
        with _CACHE_LOCK:
            enc = _CACHE.get(key)
            if enc is None and device.type != "cpu" and name in _CACHE:
                enc = cls(copy.deepcopy(_CACHE[name].net).to(device), name)
                _CACHE[key] = enc
            if enc is None:
                net = read_dlib_network(path)
                try:
                    with torch.device("cpu"):        # built from the file on the CPU, then moved
                        model = DlibFaceResNet.from_dlib(net)
                except _FormatError as exc:
                    raise FaceSynthError(f"{path}: not dlib's face-recognition ResNet ({exc})") from None
                enc = cls(model.to(device), name)
                _CACHE[key] = enc
            return enc

    @property
    def device(self) -> torch.device:
        """Where the network's weights are (its inputs are moved there; outputs stay there)."""
        return next(self.net.parameters()).device

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        return self.embed_chips(chips)

    def embed_chips(self, chips: torch.Tensor) -> torch.Tensor:
        """(B,3,150,150) aligned RGB chips, values 0..255 -> (B,128) descriptors."""
        if chips.ndim == 3:
            chips = chips[None]
        if chips.ndim != 4 or tuple(chips.shape[1:]) != (3, CHIP_SIZE, CHIP_SIZE):
            raise FaceSynthError(f"chips must be (B,3,{CHIP_SIZE},{CHIP_SIZE}), got {tuple(chips.shape)}")
        if not chips.is_floating_point():
            chips = chips.float()
        return self.net(chips.to(self.device))

    def embed(self, images, landmarks, quantize: bool = True) -> torch.Tensor:
        """Descriptors of faces in full images: (B,128).

        ``images``: float tensor (B,3,H,W), RGB 0..255, or a list of (3,H,W) tensors of
        different sizes (uint8 (H,W,3) arrays accepted). ``landmarks``: (B,68,2) (or (B,5,2))
        pixel x,y from dlib's shape predictor. The faces are aligned like dlib's
        ``get_face_chip(img, shape, 150, 0.25)`` (see :func:`align_faces`) and encoded in one batch.
        """
        return self.embed_chips(align_faces(images, landmarks, quantize=quantize))

    def features(self, images, landmarks, quantize: bool = True) -> list[torch.Tensor]:
        """`DlibFaceResNet.features` of faces in full images, aligned as :meth:`embed` aligns them."""
        return self.net.features(align_faces(images, landmarks, quantize=quantize).to(self.device))

    @staticmethod
    def distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Euclidean distance between descriptors (last axis), as dlib compares them."""
        return torch.linalg.vector_norm(a - b, dim=-1)

    @staticmethod
    def same_person(a: torch.Tensor, b: torch.Tensor, threshold: float = SAME_PERSON_THRESHOLD) -> torch.Tensor:
        return IdentityEncoder.distance(a, b) < threshold
