# SPDX-License-Identifier: GPL-3.0-or-later
"""Anny (PyPI ``anny``: Apache-2.0 code, CC0 MakeHuman assets inside its wheel) as a
:class:`~backend.body.model.BodyModel`.

Shape parameters are Anny's six phenotypes (gender, age, muscle, weight, height,
proportions), each in 0..1. Rigs: ``default`` (Anny's own 104-bone skeleton), ``mixamo``
(Mixamo bone names, so standard animations retarget) and ``game_engine`` (Unreal-style
names).

The first construction of a rig on a machine builds Anny's model data from its assets
(2.5 to 3 minutes on 2 cores, 0.8 GB of intermediate files) and caches it; later ones load
the cache in about a second. The cache goes to ``$RECON_CACHE_DIR/anny`` when
``RECON_CACHE_DIR`` is set, else to ``$ANNY_CACHE_DIR`` when that is set, else to
``~/.cache/recon/anny``. In a folder of Recon's own (not ``$ANNY_CACHE_DIR``) only the
compact model data Anny loads later is kept (50 MB per rig); the intermediates are removed.
Skinning runs in PyTorch (``skinning_method="lbs"``), so NVIDIA Warp is never imported and
compiles nothing.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError, require
from .model import COCO17_NAMES, BodyModel

log = logging.getLogger("recon.body")

RIGS = {"default": "anny", "mixamo": "mixamo", "game_engine": "game_engine"}

_SIDES = {"l": ("L", "Left", "l"), "r": ("R", "Right", "r")}


def _joint_map(rig: str) -> dict[str, str]:
    """MAP_JOINTS name -> bone name, for one of :data:`RIGS`."""
    names: dict[str, str] = {}
    for side, (dot, word, low) in _SIDES.items():
        if rig == "default":
            names.update({f"collar_{side}": f"clavicle.{dot}", f"shoulder_{side}": f"upperarm01.{dot}",
                          f"elbow_{side}": f"lowerarm01.{dot}", f"wrist_{side}": f"wrist.{dot}",
                          f"hip_{side}": f"upperleg01.{dot}", f"knee_{side}": f"lowerleg01.{dot}",
                          f"ankle_{side}": f"foot.{dot}"})
        elif rig == "mixamo":
            names.update({f"collar_{side}": f"mixamorig:{word}Shoulder", f"shoulder_{side}": f"mixamorig:{word}Arm",
                          f"elbow_{side}": f"mixamorig:{word}ForeArm", f"wrist_{side}": f"mixamorig:{word}Hand",
                          f"hip_{side}": f"mixamorig:{word}UpLeg", f"knee_{side}": f"mixamorig:{word}Leg",
                          f"ankle_{side}": f"mixamorig:{word}Foot"})
        else:
            names.update({f"collar_{side}": f"clavicle_{low}", f"shoulder_{side}": f"upperarm_{low}",
                          f"elbow_{side}": f"lowerarm_{low}", f"wrist_{side}": f"hand_{low}",
                          f"hip_{side}": f"thigh_{low}", f"knee_{side}": f"calf_{low}", f"ankle_{side}": f"foot_{low}"})
    if rig == "default":
        names.update(root="root", spine_lower="spine05", spine_mid="spine03", spine_upper="spine01",
                     neck="neck01", head="head")
    elif rig == "mixamo":
        names.update(root="mixamorig:Hips", spine_lower="mixamorig:Spine", spine_mid="mixamorig:Spine1",
                     spine_upper="mixamorig:Spine2", neck="mixamorig:Neck", head="mixamorig:Head")
    else:
        names.update(root="Root", spine_lower="spine_01", spine_mid="spine_02", spine_upper="spine_03",
                     neck="neck_01", head="head")
    return names


def cache_dir() -> tuple[Path, bool]:
    """Where Anny's built model data is cached (see the module's docstring), and whether
    the folder is Recon's own (so its intermediates may be removed)."""
    if os.environ.get("RECON_CACHE_DIR"):
        return Path(os.environ["RECON_CACHE_DIR"]).expanduser() / "anny", True
    if os.environ.get("ANNY_CACHE_DIR"):
        return Path(os.environ["ANNY_CACHE_DIR"]).expanduser(), False
    return Path.home() / ".cache" / "recon" / "anny", True


KEPT = "build_compact_model_data_"  # what Anny loads once a rig is built


def _prune(folder: Path) -> None:
    """Remove the intermediate files of Anny's builds (it only reads the compact data back;
    a build keeps what it needs in memory)."""
    for path in folder.rglob("*.safetensors"):
        if not path.name.startswith(KEPT):
            try:
                path.unlink()
            except OSError as exc:
                log.warning("could not remove Anny's intermediate file %s: %s", path, exc)


def adult_default() -> dict[str, float]:
    """The shape the fit starts from and is regularised towards: an adult of middle build."""
    return {"gender": 0.5, "age": 0.75, "muscle": 0.5, "weight": 0.5, "height": 0.45, "proportions": 0.5}


class PhenotypeCoefficients:
    """Anny's phenotype values [B, 6] to its blend-shape coefficients [B, C], as
    ``Anny._get_phenotype_blendshape_coefficients`` computes them (without local changes or
    facial actions), in a dozen tensor operations instead of a few hundred: every
    phenotype's anchors are evenly spaced, so the segment a value falls in is an index
    computed directly, and the phenotypes Recon leaves at their defaults (race, cup size,
    firmness) fold into constants. On an anchor, the gradient is the lower segment's, as in
    Anny (a value of 0.5 sits on an anchor of muscle and weight: a hat function would have
    no gradient there). A fit calls this at every step."""

    def __init__(self, module) -> None:
        from anny.models.model_data import PHENOTYPE_VARIATIONS
        from anny.models.phenotype import make_phenotype_anchors

        labels = list(module.phenotype_labels)
        anchors = make_phenotype_anchors(torch.float64)
        mask = module.stacked_phenotype_blend_shapes_mask.double()  # [K, N variations]
        column, position, count, spacing, lo, constant = [], [], [], [], [], []
        for feature, variations in PHENOTYPE_VARIATIONS.items():
            for k in range(len(variations)):
                if feature == "race":
                    constant.append(1.0 / 3.0)  # african, asian, caucasian all at 0.5: a third each
                    column.append(-1)
                    position.append(k), count.append(len(variations)), spacing.append(1.0), lo.append(0.0)
                    continue
                a = anchors[feature]
                step = float(a[1] - a[0])
                if feature in labels:
                    column.append(labels.index(feature))
                    constant.append(float("nan"))
                else:  # fixed at 0.5
                    column.append(-1)
                    constant.append(max(0.0, 1.0 - abs(0.5 - float(a[k])) / step))
                position.append(k), count.append(len(a)), spacing.append(step), lo.append(float(a[0]))
        column = np.array(column)
        free = column >= 0
        fixed = torch.tensor([c for c, f in zip(constant, free, strict=True) if not f], dtype=torch.float64)
        fixed_mask = mask[:, ~free]
        self.constant = torch.prod(fixed[None] * fixed_mask + (1 - fixed_mask), -1).float()  # [K]
        self.mask = mask[:, free].float()  # [K, n]
        self.column = torch.as_tensor(column[free])
        self.position = torch.tensor(position, dtype=torch.float32)[free]  # the anchor's index in its phenotype
        self.last = torch.tensor(count, dtype=torch.float32)[free] - 1  # the phenotype's last anchor index
        self.spacing = torch.tensor(spacing, dtype=torch.float32)[free]
        self.lo = torch.tensor(lo, dtype=torch.float32)[free]
        projection = module.phenotype_blendshape_projection
        self.projection = None if projection is None else projection.float()
        if module.extrapolate_phenotypes or module.local_change_labels or module.facial_action_labels:
            raise ValueError("PhenotypeCoefficients covers phenotypes only, without extrapolation")

    def __call__(self, shape: torch.Tensor) -> torch.Tensor:
        t = (shape[:, self.column] - self.lo) / self.spacing  # [B, n] in anchor steps
        # clamped with where, as Anny does: a value on a range's end keeps its one-sided gradient
        t = torch.where(t < 0, torch.zeros_like(t), t)
        t = torch.where(t > self.last, self.last.expand_as(t), t)
        segment = (torch.ceil(t.detach()) - 1).clamp(min=0)  # values on an anchor take the segment below
        segment = torch.minimum(segment, self.last - 1)
        alpha = t - segment
        weights = torch.where(self.position == segment, 1 - alpha, torch.zeros_like(alpha))
        weights = weights + torch.where(self.position == segment + 1, alpha, torch.zeros_like(alpha))
        coeffs = self.constant * torch.prod(weights[:, None, :] * self.mask + (1 - self.mask), -1)  # [B, K]
        return coeffs if self.projection is None else coeffs @ self.projection


@functools.lru_cache(maxsize=4)
def load_anny(rig: str = "default") -> BodyModel:
    """The Anny body model with one of :data:`RIGS`; cached per process."""
    if rig not in RIGS:
        raise InputError(f"Unknown Anny rig {rig!r}.", f"Use one of: {', '.join(RIGS)}.")
    require("anny", "The Anny body model")
    import anny
    import anny.paths

    folder, ours = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    anny.paths.set_anny_cache_path(folder)
    started = time.perf_counter()
    module = anny.Anny(rig=RIGS[rig], skinning_method="lbs").float()
    if ours:
        _prune(folder)
    module.requires_grad_(False)
    seconds = time.perf_counter() - started
    log.info("Anny (%s rig) ready in %.1f s (cache %s)", rig, seconds, folder)

    bone_names = list(module.bone_labels)
    parents = np.asarray(module.bone_parents, dtype=np.int64)
    parents[0] = -1
    index = {name: i for i, name in enumerate(bone_names)}
    joint_map = {key: index[name] for key, name in _joint_map(rig).items()}

    regressors = torch.load(anny.paths.get_anny_root_dir() / "data" / "keypoints" / "coco.pth", weights_only=True)
    base = module.base_mesh_vertex_indices
    vertex_regressor = torch.stack([regressors[name][base].float() for name in COCO17_NAMES])
    vertex_regressor = vertex_regressor / vertex_regressor.sum(1, keepdim=True)

    weights = module.vertex_bone_weights.float()
    weights = weights / weights.sum(1, keepdim=True)
    labels = list(module.phenotype_labels)
    default = adult_default()
    J = len(bone_names)

    shape_to_coeffs = PhenotypeCoefficients(module)

    def rest_frames(coeffs: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
        return module.get_rest_model(coeffs)["rest_bone_poses"][..., :3, :3]

    return BodyModel(
        name="anny",
        rig=rig,
        bone_names=bone_names,
        parents=parents,
        faces=module.faces.numpy().astype(np.int64),
        template=module.template_vertices.float(),
        shape_dirs=module.blendshapes.float(),
        joint_template=module.template_bone_heads.float(),
        joint_dirs=module.bone_heads_blendshapes.float(),
        skin_indices=module.vertex_bone_indices.long(),
        skin_weights=weights,
        keypoint_vertex_regressor=vertex_regressor,
        keypoint_joint_regressor=torch.zeros(17, J),
        keypoint_valid=torch.ones(17, dtype=torch.bool),
        shape_names=labels,
        shape_lo=torch.zeros(len(labels)),
        shape_hi=torch.ones(len(labels)),
        shape_default=torch.tensor([default.get(label, 0.5) for label in labels]),
        shape_to_coeffs=shape_to_coeffs,
        joint_map=joint_map,
        rest_frames=rest_frames,
        info={"version": getattr(anny, "__version__", ""), "load_seconds": round(seconds, 2), "cache": str(folder)},
    )
