# SPDX-License-Identifier: GPL-3.0-or-later
"""Radiance fields, their frame, and how they are saved.

Two models, one interface (``forward(u, dirs) -> (sigma [N], rgb [N, 3])``, ``density(u)``,
``u`` points in the encoding's unit cube, ``dirs`` unit world directions):

- :class:`NGPField` (``"hashgrid"``): Instant-NGP's NeRF: the hash-grid encoding
  (:mod:`.hashgrid`), a density MLP (32 -> 64 -> 16, the first output is log-density,
  activated by a truncated exponential), a colour MLP on the 16 outputs and the view
  direction in real spherical harmonics of degree 4 (32 -> 64 -> 64 -> 3, sigmoid); no
  biases, as tiny-cuda-nn's fully fused MLPs. On CUDA with tiny-cuda-nn it runs tiny-cuda-nn's
  encoding and fused MLPs on the same parameters (:class:`TcnnNGP`).
- :class:`PENeRF` (``"mlp"``): the original NeRF (Mildenhall et al. 2020): positional
  encoding (10 frequencies for positions, 4 for directions), 8 x 256 ReLU layers with the
  input concatenated again after the 4th, density head, a 128-wide view-dependent colour
  layer; a coarse and a fine network.

:class:`SceneFrame` maps world points into the unit cube: a box (``"box"``, points outside
have no density) or, for unbounded scenes, a centre and radius followed by the L-infinity
contraction of mip-NeRF 360 / nerfstudio (``"contracted"``: the cube ``|y| <= 1`` maps
linearly into the middle half of the unit cube, everything beyond into the rest).

A trained field is a folder: ``field.json`` (what it is: the model settings, the frame,
near/far, background, training summary) and ``field.npz`` (the parameters by name and the
occupancy grid), plus ``optimizer.npz`` (the optimiser's state, for resuming).
:func:`load_field` reads it back; ``Field.density(points_world)`` evaluates the density at
world points (for extracting meshes).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError
from .hashgrid import HashGrid, HashGridConfig

FORMAT = "recon-nerf"
FORMAT_VERSION = 1
FIELD_JSON = "field.json"
FIELD_NPZ = "field.npz"
OPTIMIZER_NPZ = "optimizer.npz"
KINDS = ("hashgrid", "mlp")


# -- the frame ------------------------------------------------------------------------------
@dataclass(frozen=True)
class SceneFrame:
    """World (the scene's frame, its units) to the encoding's unit cube ``[0, 1]^3``."""

    kind: str  # "box" or "contracted"
    center: tuple[float, float, float]
    half_size: tuple[float, float, float]  # box: half extents; contracted: the inner radius on every axis

    def __post_init__(self) -> None:
        if self.kind not in ("box", "contracted"):
            raise ValueError(f"unknown frame kind {self.kind!r}")

    @property
    def contracted(self) -> bool:
        return self.kind == "contracted"

    def to_unit(self, points: Tensor) -> Tensor:  # [N, 3] world -> [N, 3]
        center = torch.tensor(self.center, dtype=points.dtype, device=points.device)
        half = torch.tensor(self.half_size, dtype=points.dtype, device=points.device)
        y = (points - center) / half
        if not self.contracted:
            return y * 0.5 + 0.5
        norm = y.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12)
        y = torch.where(norm <= 1.0, y, (2.0 - 1.0 / norm) * (y / norm))
        return y * 0.25 + 0.5

    def inside(self, u: Tensor) -> Tensor:  # [N, 3] -> [N] bool
        return ((u >= 0.0) & (u <= 1.0)).all(dim=-1)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "center": list(self.center), "half_size": list(self.half_size),
                "unit_from_world": ("u = (x - center) / half_size / 2 + 0.5" if not self.contracted else
                                    "y = (x - center) / half_size; y <- (2 - 1/|y|inf) y/|y|inf where |y|inf > 1; "
                                    "u = y / 4 + 0.5")}

    @classmethod
    def from_dict(cls, data: dict) -> SceneFrame:
        return cls(str(data["kind"]), tuple(float(v) for v in data["center"]),
                   tuple(float(v) for v in data["half_size"]))


# -- encodings -----------------------------------------------------------------------------
def spherical_harmonics_4(dirs: Tensor) -> Tensor:  # [N, 3] unit -> [N, 16]
    """Real spherical harmonics of degree 4 (16 values) with tiny-cuda-nn's constants and signs."""
    x, y, z = dirs.unbind(-1)
    xy, xz, yz = x * y, x * z, y * z
    x2, y2, z2 = x * x, y * y, z * z
    return torch.stack([
        torch.full_like(x, 0.28209479177387814),
        -0.48860251190291987 * y,
        0.48860251190291987 * z,
        -0.48860251190291987 * x,
        1.0925484305920792 * xy,
        -1.0925484305920792 * yz,
        0.94617469575755997 * z2 - 0.31539156525251999,
        -1.0925484305920792 * xz,
        0.54627421529603959 * x2 - 0.54627421529603959 * y2,
        0.59004358992664352 * y * (-3.0 * x2 + y2),
        2.8906114426405538 * xy * z,
        0.45704579946446572 * y * (1.0 - 5.0 * z2),
        0.3731763325901154 * z * (5.0 * z2 - 3.0),
        0.45704579946446572 * x * (1.0 - 5.0 * z2),
        1.4453057213202769 * z * (x2 - y2),
        0.59004358992664352 * x * (-x2 + 3.0 * y2),
    ], dim=-1)


def positional_encoding(x: Tensor, frequencies: int) -> Tensor:  # [N, D] -> [N, D * (1 + 2 * frequencies)]
    """NeRF's ``[x, sin(2^k pi x), cos(2^k pi x)]`` for ``k < frequencies``."""
    scales = (2.0 ** torch.arange(frequencies, dtype=x.dtype, device=x.device)) * math.pi
    angles = (x[..., None, :] * scales[:, None]).flatten(-2)  # [N, frequencies * D]
    return torch.cat([x, torch.sin(angles), torch.cos(angles)], dim=-1)


class _TruncExp(torch.autograd.Function):
    """``exp`` whose gradient uses ``exp(min(x, 15))`` (Instant-NGP's density activation)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(max=15.0))


def trunc_exp(x: Tensor) -> Tensor:
    return _TruncExp.apply(x)


class _LinearPlusPerRay(torch.autograd.Function):
    """``geo @ weight.T`` plus one row of ``per_ray [H, D]`` for each ray's ``K / H``
    consecutive samples, the sum written into the product's own buffer (no second
    ``[K, D]`` tensor); the backward sums the gradient over each ray's samples."""

    @staticmethod
    def forward(ctx, geo: Tensor, weight: Tensor, per_ray: Tensor) -> Tensor:  # [K, G], [D, G], [H, D] -> [K, D]
        out = geo @ weight.T
        out.view(per_ray.shape[0], -1, out.shape[1]).add_(per_ray[:, None])
        ctx.save_for_backward(geo, weight)
        ctx.rays = per_ray.shape[0]
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        geo, weight = ctx.saved_tensors
        grad_geo = grad @ weight if ctx.needs_input_grad[0] else None
        grad_weight = grad.T @ geo if ctx.needs_input_grad[1] else None
        grad_per_ray = grad.view(ctx.rays, -1, grad.shape[1]).sum(1) if ctx.needs_input_grad[2] else None
        return grad_geo, grad_weight, grad_per_ray


# -- models --------------------------------------------------------------------------------
@dataclass(frozen=True)
class FieldConfig:
    """What a field is (``field.json``'s ``model``)."""

    kind: str = "hashgrid"  # "hashgrid" (Instant-NGP) or "mlp" (the original NeRF)
    hashgrid: HashGridConfig = field(default_factory=HashGridConfig)
    hidden: int = 64  # hashgrid: MLP width
    geo_features: int = 16  # hashgrid: density MLP outputs (the first is log-density)
    color_layers: int = 2  # hashgrid: hidden layers of the colour MLP
    pe_position: int = 10  # mlp: frequencies of the position encoding
    pe_direction: int = 4  # mlp: frequencies of the direction encoding
    mlp_width: int = 256
    mlp_depth: int = 8

    def to_dict(self) -> dict:
        data = asdict(self)
        data["hashgrid"] = self.hashgrid.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> FieldConfig:
        data = dict(data)
        grid = {k: v for k, v in data.pop("hashgrid", {}).items() if k in HashGridConfig.__dataclass_fields__}
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(hashgrid=HashGridConfig(**grid), **known)


def _mlp(sizes: list[int], bias: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1], bias=bias))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class NGPField(nn.Module):
    """Instant-NGP's NeRF network (see the module's docstring)."""

    def __init__(self, config: FieldConfig, generator: torch.Generator | None = None, backend: str = "auto") -> None:
        super().__init__()
        self.config = config
        self.encoding = HashGrid(config.hashgrid, backend=backend, generator=generator)
        self.density_net = _mlp([self.encoding.output_dim, config.hidden, config.geo_features])
        self.color_net = _mlp([16 + config.geo_features] + [config.hidden] * config.color_layers + [3])

    def geometry(self, u: Tensor) -> Tensor:  # [N, 3] -> [N, geo_features]
        return self.density_net(self.encoding(u))

    def density(self, u: Tensor) -> Tensor:  # [N, 3] -> [N]
        return trunc_exp(self.geometry(u)[:, 0])

    @torch.no_grad()
    def prepass(self, u: Tensor) -> tuple[Tensor | None, Tensor]:  # [N, 3] -> features [N, L * F], sigma [N]
        """Density without gradients, and the encoding to pass back to ``forward(encoded=...)``."""
        encoded = self.encoding(u)
        return encoded, trunc_exp(self.density_net(encoded)[:, 0])

    def prepass_geometry(self, u: Tensor) -> tuple[Tensor, Tensor]:  # [N, 3] -> features [N, L * F], geo [N, G]
        """The encoding and the density MLP's outputs of every point, differentiable when
        gradients are enabled (the renderer keeps them when most points go on to the colour
        MLP, and evaluates only those again otherwise)."""
        encoded = self.encoding(u)
        return encoded, self.density_net(encoded)

    def color(
        self,
        geo: Tensor,  # [K, geo_features]
        dirs: Tensor,  # [K, 3]; or [H, 3] per ray, with ray_index or, without, K / H samples of each ray in turn
        ray_index: Tensor | None = None,  # [K] row of each sample's ray in dirs
    ) -> Tensor:  # [K, 3]
        """The colour MLP; its first layer's direction half is evaluated once per ray."""
        first = self.color_net[0]
        w_dir, w_geo = first.weight[:, :16], first.weight[:, 16:]
        from_dir = spherical_harmonics_4(dirs) @ w_dir.T
        if ray_index is not None:
            from_dir = from_dir.index_select(0, ray_index)
        if from_dir.shape[0] != geo.shape[0] and geo.shape[0] % max(1, from_dir.shape[0]) == 0:
            # S samples per ray: a broadcast add, whose backward is a sum rather than a scatter
            h = _LinearPlusPerRay.apply(geo, w_geo, from_dir)
        else:
            h = torch.addmm(from_dir, geo, w_geo.T)
        for layer in self.color_net[1:]:
            h = layer(h)
        return torch.sigmoid(h)

    def forward(
        self,
        u: Tensor,  # [N, 3]
        dirs: Tensor,  # [N, 3], or [H, 3] per ray with ray_index
        encoded: Tensor | None = None,  # [N, L * F] from prepass(u)
        ray_index: Tensor | None = None,  # [N]
    ) -> tuple[Tensor, Tensor]:  # sigma [N], rgb [N, 3]
        features = self.encoding(u) if encoded is None else self.encoding.reconnect(encoded, u)
        geo = self.density_net(features)
        return trunc_exp(geo[:, 0]), self.color(geo, dirs, ray_index)


class PEMLP(nn.Module):
    """One network of the original NeRF."""

    def __init__(self, config: FieldConfig) -> None:
        super().__init__()
        in_pos = 3 * (1 + 2 * config.pe_position)
        in_dir = 3 * (1 + 2 * config.pe_direction)
        width, self.skip = config.mlp_width, config.mlp_depth // 2 + 1  # nerf-pytorch's skips=[4]: into layer 5
        self.config = config
        self.layers = nn.ModuleList(
            [nn.Linear(in_pos if i == 0 else width + (in_pos if i == self.skip else 0), width)
             for i in range(config.mlp_depth)])
        self.sigma = nn.Linear(width, 1)
        self.feature = nn.Linear(width, width)
        self.view = nn.Linear(width + in_dir, width // 2)
        self.rgb = nn.Linear(width // 2, 3)

    def trunk(self, u: Tensor) -> Tensor:
        encoded = positional_encoding(u * 2.0 - 1.0, self.config.pe_position)
        h = encoded
        for i, layer in enumerate(self.layers):
            if i == self.skip:
                h = torch.cat([h, encoded], dim=-1)
            h = F.relu(layer(h))
        return h

    def density(self, u: Tensor) -> Tensor:
        return F.relu(self.sigma(self.trunk(u))[:, 0])

    def forward(self, u: Tensor, dirs: Tensor) -> tuple[Tensor, Tensor]:
        h = self.trunk(u)
        sigma = F.relu(self.sigma(h)[:, 0])
        v = F.relu(self.view(torch.cat([self.feature(h), positional_encoding(dirs, self.config.pe_direction)], -1)))
        return sigma, torch.sigmoid(self.rgb(v))


class PENeRF(nn.Module):
    """The original NeRF: a coarse and a fine :class:`PEMLP`; ``forward`` and ``density`` are the fine one's."""

    def __init__(self, config: FieldConfig) -> None:
        super().__init__()
        self.config = config
        self.coarse = PEMLP(config)
        self.fine = PEMLP(config)

    def density(self, u: Tensor) -> Tensor:
        return self.fine.density(u)

    def forward(self, u: Tensor, dirs: Tensor) -> tuple[Tensor, Tensor]:
        return self.fine(u, dirs)


def build_model(config: FieldConfig, seed: int = 0, device: str | torch.device = "cpu") -> nn.Module:
    """A freshly initialised model of ``config`` (tiny-cuda-nn's on CUDA where it imports)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    if config.kind == "hashgrid":
        model = NGPField(config, generator=generator)
        model = model.to(device)
        if torch.device(device).type == "cuda" and tcnn_available():
            return TcnnNGP(model)
        return model
    if config.kind == "mlp":
        return PENeRF(config).to(device)
    raise ValueError(f"unknown field kind {config.kind!r}")


# -- tiny-cuda-nn --------------------------------------------------------------------------
def tcnn_available() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        import tinycudann  # noqa: F401
    except ImportError:
        return False
    return True


def _tcnn_mlp_config(hidden: int, layers: int, output_activation: str) -> dict:
    return {"otype": "FullyFusedMLP", "activation": "ReLU", "output_activation": output_activation,
            "n_neurons": hidden, "n_hidden_layers": layers}


def torch_mlp_to_tcnn_params(linears: list[nn.Linear], padded_out: int) -> Tensor:
    """tiny-cuda-nn's parameter vector of a fully fused MLP: each layer's weight matrix,
    ``[out, in]`` row-major, one after the other; the last layer's outputs padded to a
    multiple of 16 with zero rows."""
    parts = []
    for i, linear in enumerate(linears):
        weight = linear.weight.detach()
        if i == len(linears) - 1 and weight.shape[0] < padded_out:
            weight = torch.cat([weight, weight.new_zeros(padded_out - weight.shape[0], weight.shape[1])])
        parts.append(weight.reshape(-1))
    return torch.cat(parts)


def tcnn_params_to_torch_mlp(params: Tensor, linears: list[nn.Linear]) -> None:
    """The inverse of :func:`torch_mlp_to_tcnn_params`, written into ``linears``."""
    offset = 0
    for i, linear in enumerate(linears):
        out_dim, in_dim = linear.weight.shape
        rows = out_dim if i < len(linears) - 1 else ((out_dim + 15) // 16) * 16
        block = params[offset:offset + rows * in_dim].reshape(rows, in_dim)
        linear.weight.data.copy_(block[:out_dim].to(linear.weight.dtype))
        offset += rows * in_dim


class TcnnNGP(nn.Module):
    """:class:`NGPField` run by tiny-cuda-nn (CUDA): its hash-grid encoding (same table layout
    as ours: level-major rows of ``F`` features) and fully fused MLPs (half precision).
    ``to_ngp()`` writes the parameters back into an :class:`NGPField` for saving."""

    def __init__(self, model: NGPField) -> None:
        super().__init__()
        import tinycudann as tcnn

        config = model.config
        self.config = config
        self.template = model
        self.encoding = tcnn.Encoding(3, config.hashgrid.tcnn_config(), dtype=torch.float32)
        self.encoding.params.data.copy_(model.encoding.table.detach().reshape(-1).to(self.encoding.params))
        self.density_net = tcnn.Network(model.encoding.output_dim, config.geo_features,
                                        _tcnn_mlp_config(config.hidden, 1, "None"))
        self.color_net = tcnn.Network(16 + config.geo_features, 3,
                                      _tcnn_mlp_config(config.hidden, config.color_layers, "Sigmoid"))
        for net, torch_net in ((self.density_net, model.density_net), (self.color_net, model.color_net)):
            linears = [m for m in torch_net if isinstance(m, nn.Linear)]
            net.params.data.copy_(torch_mlp_to_tcnn_params(linears, 16).to(net.params))

    def geometry(self, u: Tensor) -> Tensor:
        return self.density_net(self.encoding(u)).float()

    def density(self, u: Tensor) -> Tensor:
        return trunc_exp(self.geometry(u)[:, 0])

    @torch.no_grad()
    def prepass(self, u: Tensor) -> tuple[Tensor | None, Tensor]:
        return None, self.density(u)

    def forward(self, u: Tensor, dirs: Tensor, encoded: Tensor | None = None,
                ray_index: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if ray_index is not None:
            dirs = dirs.index_select(0, ray_index)
        geo = self.geometry(u)
        rgb = self.color_net(torch.cat([spherical_harmonics_4(dirs), geo], dim=-1)).float()
        return trunc_exp(geo[:, 0]), rgb

    def to_ngp(self) -> NGPField:
        model = self.template
        model.encoding.table.data.copy_(self.encoding.params.detach().reshape(model.encoding.table.shape))
        for net, torch_net in ((self.density_net, model.density_net), (self.color_net, model.color_net)):
            tcnn_params_to_torch_mlp(net.params.detach().float(), [m for m in torch_net if isinstance(m, nn.Linear)])
        return model


# -- a field with its frame, saved and loaded ---------------------------------------------
@dataclass
class Field:
    """A trained (or training) field: the model, its frame, and how to render it."""

    config: FieldConfig
    model: nn.Module
    frame: SceneFrame
    near: float
    far: float
    background: tuple[float, float, float]
    occupancy: object | None = None  # render.OccupancyGrid, for "hashgrid"
    info: dict = field(default_factory=dict)  # field.json's "training" section

    def plain_model(self) -> nn.Module:
        return self.model.to_ngp() if isinstance(self.model, TcnnNGP) else self.model

    @torch.no_grad()
    def density(
        self,
        points_world: Tensor | np.ndarray,  # [N, 3] in the scene's frame
        chunk: int = 1 << 18,
    ) -> Tensor:  # [N] float32 density (per world unit); 0 outside the box
        """The volume density at world points, evaluated in chunks without gradients."""
        points = torch.as_tensor(np.asarray(points_world) if isinstance(points_world, np.ndarray) else points_world,
                                 dtype=torch.float32)
        device = next(self.model.parameters()).device
        out = torch.zeros(points.shape[0], dtype=torch.float32)
        for start in range(0, points.shape[0], chunk):
            u = self.frame.to_unit(points[start:start + chunk].to(device))
            inside = self.frame.inside(u)
            sigma = torch.zeros(u.shape[0], device=device)
            if inside.any():
                sigma[inside] = self.model.density(u[inside]).float()
            out[start:start + chunk] = sigma.cpu()
        return out

    def describe(self) -> dict:
        return {
            "format": FORMAT, "version": FORMAT_VERSION, "model": self.config.to_dict(),
            "frame": self.frame.to_dict(), "near": self.near, "far": self.far,
            "background": list(self.background), "parameters": FIELD_NPZ,
            "density": "sigma per world unit along a ray: alpha = 1 - exp(-sigma * distance)",
            "training": self.info,
        }

    def state_arrays(self) -> dict[str, np.ndarray]:
        arrays = {f"model.{k}": v.detach().cpu().numpy() for k, v in self.plain_model().state_dict().items()}
        if self.occupancy is not None:
            arrays.update({f"occupancy.{k}": v for k, v in self.occupancy.state_arrays().items()})
        return arrays


def save_field(folder: str | Path, fld: Field, optimizer_state: dict[str, np.ndarray] | None = None) -> None:
    """Write ``field.npz`` (and ``optimizer.npz``) and then ``field.json``, each atomically."""
    from ..geometry.io import write_npz
    from ..protocol import write_json_atomic

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_npz(folder / FIELD_NPZ, **fld.state_arrays())
    if optimizer_state is not None:
        write_npz(folder / OPTIMIZER_NPZ, **optimizer_state)
    write_json_atomic(folder / FIELD_JSON, fld.describe())


def read_field_json(folder: str | Path) -> dict:
    folder = Path(folder)
    path = folder / FIELD_JSON if folder.is_dir() else folder
    if not path.is_file():
        raise InputError(f"{folder} holds no trained field (no {FIELD_JSON}).",
                         "Give the folder a 'nerf' job wrote (its --out).")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"Could not read {path}: {exc}", "Train the field again.") from exc
    if data.get("format") != FORMAT or int(data.get("version", 0)) > FORMAT_VERSION:
        raise InputError(f"{path} is not a Recon radiance field (format {data.get('format')!r}, "
                         f"version {data.get('version')!r}).", "Give the folder a 'nerf' job wrote.")
    return data


def load_field(folder: str | Path, device: str | torch.device = "cpu") -> Field:
    """The field saved in ``folder`` (``field.json`` + ``field.npz``), ready to render."""
    from .render import OccupancyGrid

    folder = Path(folder)
    if folder.is_file():
        folder = folder.parent
    meta = read_field_json(folder)
    config = FieldConfig.from_dict(meta["model"])
    npz = folder / meta.get("parameters", FIELD_NPZ)
    if not npz.is_file():
        raise InputError(f"{folder} has a {FIELD_JSON} but no {npz.name}.", "Train the field again.")
    with np.load(npz) as data:
        arrays = {k: data[k] for k in data.files}
    model = build_model(config, device="cpu")
    state = {k[len("model."):]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith("model.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise InputError(f"{npz} does not match its {FIELD_JSON}: {exc}", "Train the field again.") from exc
    occupancy = None
    occ = {k[len("occupancy."):]: v for k, v in arrays.items() if k.startswith("occupancy.")}
    if occ:
        occupancy = OccupancyGrid.from_arrays(occ)
    model = model.to(device)
    if torch.device(device).type == "cuda" and config.kind == "hashgrid" and tcnn_available():
        model = TcnnNGP(model)
    return Field(config, model, SceneFrame.from_dict(meta["frame"]), float(meta["near"]), float(meta["far"]),
                 tuple(float(v) for v in meta.get("background", (1.0, 1.0, 1.0))), occupancy,
                 dict(meta.get("training", {})))
