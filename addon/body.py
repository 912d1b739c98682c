# SPDX-License-Identifier: GPL-3.0-or-later
"""The ``body`` and ``body_shape`` jobs from Blender: photos (image datablocks, files, or
cameras with background photos) in; a rigged human out, built from ``body.npz`` (its layout
is documented in ``backend/jobs/body.py``), and its shape changed in place afterwards.

What :func:`body_objects` builds from the arrays, in bulk where Blender allows it:

- a mesh (``foreach_set``), with the SMPL pose-corrective offsets as a shape key at value 1
  when they are not zero;
- an armature with the model's bones: rest matrices from ``bone_rest_matrices`` (Blender
  keeps a bone as head, tail and roll, so the rest comes back to float precision), parents,
  and the fitted pose as each pose bone's ``matrix_basis``;
- one vertex group per bone holding the skin weights (one ``VertexGroup.add`` per distinct
  weight of a bone, not per vertex), an Armature modifier, the mesh parented to the armature;
- the photo's camera where the fit put it (exact intrinsics, the photo as background) when
  the fit made its own world (one photo); with given cameras the body joins their world;
- on the armature object: ``recon_body_model``, ``recon_body_rig``, ``recon_body_model_file``,
  ``recon_shape_names`` and one ``recon_shape_<name>`` slider per shape parameter (the
  applied values also in ``recon_body_shape``), and the fit's keypoint error.

Errors for the artist are ``ValueError``; a failed import leaves no datablock behind.
"""

from __future__ import annotations

import io
from contextlib import contextmanager
from pathlib import Path

import bpy
import numpy as np

from ..backend.protocol import write_bytes_atomic
from . import converters, photo_inputs, scene_export, settings
from .jobs import Job, manager

MODEL_ITEMS = [
    ("ANNY", "Anny", "Anny, the free body model shipped with the backend (Apache-2.0 code, CC0 assets)"),
    ("FILE", "SMPL File", "An SMPL, SMPL-H or SMPL-X model file you have a licence for (.npz or .pkl)"),
]
RIG_ITEMS = [
    ("default", "Anny", "Anny's own skeleton"),
    ("mixamo", "Mixamo", "Mixamo's bone names, so the body takes Mixamo animations"),
    ("game_engine", "Game Engine", "A game engine's bone names (Unreal-style)"),
]
FLIP_ITEMS = [
    ("auto", "When Ambiguous", "Also try the body facing the other way when the shoulders are ambiguous"),
    ("always", "Always", "Always try both facings"),
    ("never", "Never", "Keep the facing the keypoints suggest"),
]
CORRECTIVES_KEY = "Pose Correctives"
SHAPE_PREFIX = "recon_shape_"
ANNY_RANGE = (0.0, 1.0)  # Anny's phenotypes
BETA_RANGE = (-3.0, 3.0)  # SMPL betas, in standard deviations (the fit's bounds)


def settings_properties() -> dict:
    """The fit's settings as bpy properties: the names and defaults of ``backend/jobs/body.py``'s
    Config, with the model as a choice plus a file."""
    P = bpy.props
    return {
        "model": P.EnumProperty(name="Body Model", items=MODEL_ITEMS, default="ANNY"),
        "model_file": P.StringProperty(
            name="Model File", subtype="FILE_PATH",
            description="SMPL, SMPL-H or SMPL-X model file (.npz or .pkl); empty: the one in Recon's preferences",
        ),
        "rig": P.EnumProperty(name="Rig", items=RIG_ITEMS, default="default",
                              description="Anny's skeleton: its own, or Mixamo's or a game engine's bone names"),
        "keypoints": P.StringProperty(
            name="Keypoints", subtype="FILE_PATH",
            description="A COCO or OpenPose keypoint JSON (or a folder of them) to fit instead of detecting people",
        ),
        "num_betas": P.IntProperty(name="Shape Components", default=10, min=1, max=300,
                                   description="SMPL-family models: shape components fitted"),
        "focal_35mm": P.FloatProperty(
            name="Focal Length (35 mm)", default=0.0, min=0.0, soft_max=300.0,
            description="35 mm-equivalent focal length of a photo without a camera (0: from its EXIF, else 35 mm)",
        ),
        "iterations": P.IntProperty(name="Iterations", default=120, min=4, soft_max=1000,
                                    description="Optimisation steps of the body stages"),
        "camera_iterations": P.IntProperty(name="Placement Iterations", default=25, min=0, soft_max=200,
                                           description="Optimisation steps placing the body from the torso"),
        "fit_shape": P.BoolProperty(name="Fit Shape", default=True,
                                    description="Fit the body's shape (else keep the model's average adult)"),
        "flip": P.EnumProperty(name="Try Other Facing", items=FLIP_ITEMS, default="auto"),
        "metric_cameras": P.BoolProperty(
            name="Metric Cameras", default=False,
            description="The selected cameras are in metres (else the body's scale in their world is fitted)",
        ),
        "min_confidence": P.FloatProperty(name="Min Confidence", default=0.3, min=0.0, max=1.0,
                                          description="Keypoints less confident than this are ignored"),
        "max_people": P.IntProperty(name="Max People", default=3, min=1, soft_max=10,
                                    description="People to look for in each photo (the largest is fitted)"),
    }


SETTING_NAMES = tuple(settings_properties())
CONFIG_NAMES = tuple(name for name in SETTING_NAMES if name not in ("model", "model_file", "keypoints"))


# Submitting ----------------------------------------------------------------------------------


def model_spec(model: str, model_file: str) -> str:
    """The backend's ``model`` setting: "anny", or the absolute path of the SMPL-family file
    (``model_file``, else the preferences' body model file). Raises ValueError when none is set."""
    if model == "ANNY":
        return "anny"
    path = model_file
    if not path:
        prefs = settings.preferences()
        path = getattr(prefs, "body_model_file", "") if prefs is not None else ""
    if not path:
        raise ValueError("No SMPL model file chosen. Set the Model File (an SMPL, SMPL-H or SMPL-X .npz or .pkl), "
                         "or choose the Anny body model.")
    file = Path(bpy.path.abspath(path))
    if not file.is_file():
        raise ValueError(f"The body model file '{file}' does not exist. Check the Model File path.")
    return str(file)


def camera_photos(cameras: list[bpy.types.Object]) -> list[tuple[bpy.types.Object, bpy.types.Image]]:
    """(camera, its background photo) of each camera; raises ValueError naming cameras
    without one."""
    pairs, without = [], []
    for obj in cameras:  # per camera
        image = next((b.image for b in obj.data.background_images if b.image is not None), None)
        if image is None:
            without.append(obj.name)
        else:
            pairs.append((obj, image))
    if without:
        raise ValueError(f"The camera(s) {', '.join(repr(n) for n in without)} show no photo. Fit the body to cameras "
                         "with background images (from Solve Cameras), or to the photos' images.")
    return pairs


def selected_cameras(context) -> list[bpy.types.Object]:
    return [obj for obj in getattr(context, "selected_objects", None) or () if obj.type == "CAMERA"]


def prepare(
    context,
    config: dict,
    *,
    images: list[bpy.types.Image] | None = None,
    cameras: list[bpy.types.Object] | None = None,
    photo_path: str = "",
    keypoints: str = "",
    model: str = "ANNY",
    model_file: str = "",
) -> Job:
    """The ``body`` job for photos from image datablocks (``images``), from cameras with
    background photos (``cameras``: their cameras go into ``inputs/cameras.npz``, so the photos
    are fitted jointly in the cameras' world), or a photo file or folder (``photo_path``).
    Raises ValueError with an artist-facing message; nothing is submitted then."""
    spec = model_spec(model, model_file)
    if keypoints:
        keypoints = str(Path(bpy.path.abspath(keypoints)))
        if not Path(keypoints).exists():
            raise ValueError(f"The keypoint file '{keypoints}' does not exist. Check the Keypoints path, or clear it "
                             "to detect the people in the photos.")
    if cameras:
        pairs = camera_photos(cameras)
        images = list(dict.fromkeys(image for _, image in pairs))
    if images:
        file_names = photo_inputs.image_file_names(images)  # refuses non-photos before a job folder exists
        if cameras and len(images) < len(cameras):
            raise ValueError("Two of the selected cameras show the same photo; select one camera per photo.")
        job = manager().new_job("body", {**config, "model": spec})
        folder = photo_inputs.photos_from_images(images, job.dir / "inputs" / "photos")
        job.inputs["images"] = str(folder)
        job.backgrounds = {file: name for name, file in file_names.items()}
        job.title = Path(file_names[images[0].name]).stem
        if cameras:
            arrays = converters.camera_arrays_from_objects([obj for obj, _ in pairs], context.scene)
            arrays["names"] = np.array([file_names[image.name] for _, image in pairs])
            arrays["distortion"] = scene_export.distortion_columns(arrays["model"], arrays["params"])  # lens kept
            _write_npz(job.dir / "inputs" / "cameras.npz", **arrays)
            job.inputs["cameras"] = str(job.dir / "inputs" / "cameras.npz")
    elif photo_path:
        path = Path(bpy.path.abspath(photo_path))
        if not path.exists():
            raise ValueError(f"The photo '{path}' does not exist. Choose a photo of a person, or a folder of them.")
        job = manager().new_job("body", {**config, "model": spec})
        job.inputs["images"] = str(path)
        job.title = path.stem
    else:
        raise ValueError("No photos: select the photos' images (Outliner, Blender File view), image empties, or "
                         "cameras with background photos.")
    if keypoints:
        job.inputs["keypoints"] = keypoints
    return job


def _write_npz(path: Path, **arrays: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_bytes_atomic(path, buffer.getvalue())


def load_arrays(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def import_result(job: Job, scene: bpy.types.Scene) -> tuple[bpy.types.Object, bpy.types.Object, list[bpy.types.Object]]:
    """The fitted body of a succeeded ``body`` job in a new collection ``Recon Body <title>``;
    see :func:`body_objects`."""
    body = load_arrays(job.artifact("body"))
    photos: dict = {file: bpy.data.images[name] for file, name in job.backgrounds.items() if name in bpy.data.images}
    if not photos and "images" in job.inputs:
        source = Path(job.inputs["images"])
        folder = source if source.is_dir() else source.parent
        photos = {str(name): folder / str(name) for name in body.get("photo_names", ())}
    with _nothing_left_on_error():
        collection = bpy.data.collections.new(f"Recon Body {job.title or 'photo'}")
        scene.collection.children.link(collection)
        armature, mesh, cameras = body_objects(body, collection, scene, photos)
        collection["recon_job"] = armature["recon_job"] = job.id
        errors = job.summary.get("fit_error_px") or {}
        if errors:
            armature["recon_fit_error_px"] = float(np.median(list(errors.values())))
    return armature, mesh, cameras


# Building the body ---------------------------------------------------------------------------


_CLEANUP_ORDER = ("objects", "collections", "meshes", "armatures", "cameras", "images", "actions")


@contextmanager
def _nothing_left_on_error():
    """Removes every datablock created inside the block if it raises (objects first, then
    their data), so a failed import leaves the file as it was."""
    before = {name: {block.as_pointer() for block in getattr(bpy.data, name)} for name in _CLEANUP_ORDER}
    try:
        yield
    except BaseException:
        for name in _CLEANUP_ORDER:
            blocks = getattr(bpy.data, name)
            for block in [b for b in blocks if b.as_pointer() not in before[name]]:
                try:
                    blocks.remove(block)
                except ReferenceError:  # went with its owner
                    pass
        raise


def _check(body: dict) -> tuple[int, int]:
    """(vertices, bones) of a body; raises ValueError naming the first array that does not fit."""
    missing = [key for key in ("rest_vertices", "faces", "bone_names", "bone_parents", "bone_rest_matrices",
                               "skin_indices", "skin_weights", "pose_matrices", "model_to_world") if key not in body]
    if missing:
        raise ValueError(f"The body file has no {', '.join(missing)}; it is not a Recon body.npz.")
    V, J = len(body["rest_vertices"]), len(body["bone_names"])
    if np.ndim(body["skin_indices"]) != 2 or len(body["skin_indices"]) != V:
        raise ValueError(f"The body has skin weights for {len(body['skin_indices'])} vertices and {V} vertices.")
    shapes = {
        "rest_vertices": (V, 3), "bone_parents": (J,), "bone_rest_matrices": (J, 4, 4), "pose_matrices": (J, 4, 4),
        "model_to_world": (4, 4), "skin_weights": np.shape(body["skin_indices"]),
    }
    for key, shape in shapes.items():
        if tuple(np.shape(body[key])) != tuple(shape):
            raise ValueError(f"The body's {key} is {np.shape(body[key])}, expected {shape}.")
    parents = np.asarray(body["bone_parents"])
    if J == 0 or (parents >= np.arange(J)).any() or (parents < -1).any():
        raise ValueError("The body's bone parents do not come before their children.")
    if len(body["skin_indices"]) and (body["skin_indices"].min() < 0 or body["skin_indices"].max() >= J):
        raise ValueError("The body's skin weights name bones it does not have.")
    if "pose_offsets" in body and np.shape(body["pose_offsets"]) != (V, 3):
        raise ValueError(f"The body's pose_offsets is {np.shape(body['pose_offsets'])}, expected {(V, 3)}.")
    return V, J


def body_objects(
    body: dict[str, np.ndarray],
    collection: bpy.types.Collection,
    scene: bpy.types.Scene,
    photos: dict | None = None,  # photo name -> an image datablock, or a file, for the camera's background
    make_cameras: bool | None = None,  # None: when the fit made its own world (one photo, world "level")
) -> tuple[bpy.types.Object, bpy.types.Object, list[bpy.types.Object]]:
    """(armature, mesh, cameras) of a body from ``body.npz`` arrays, linked into ``collection``:
    see the module's docstring. Nothing is left behind if this raises."""
    from mathutils import Matrix

    _check(body)
    model = str(body.get("model", "body"))
    title = str(collection.name).removeprefix("Recon Body ") or model
    with _nothing_left_on_error():
        arm_data = bpy.data.armatures.new(f"{title} rig")
        arm_data.display_type = "OCTAHEDRAL"
        armature = bpy.data.objects.new(f"{title} rig", arm_data)
        armature.show_in_front = True
        collection.objects.link(armature)
        armature.matrix_world = Matrix(np.asarray(body["model_to_world"], np.float64).tolist())
        with _edit_bones(armature) as edit_bones:
            for name in body["bone_names"]:  # per bone: Blender creates bones one at a time
                edit_bones.new(str(name))
            bones = list(edit_bones)
            for bone, parent in zip(bones, body["bone_parents"], strict=True):
                bone.parent = bones[parent] if parent >= 0 else None
                bone.use_connect = False
                bone.use_deform = True
            _set_rest(bones, body)
        set_pose(armature, body["bone_names"], body["pose_matrices"])

        mesh_data = converters.mesh_from_arrays(f"{title} body", body["rest_vertices"], body["faces"])
        mesh_data.shade_smooth()
        mesh = bpy.data.objects.new(f"{title} body", mesh_data)
        collection.objects.link(mesh)
        mesh.parent = armature  # identity parent inverse: the mesh's frame is the armature's
        add_skin_weights(mesh, body["bone_names"], body["skin_indices"], body["skin_weights"])
        modifier = mesh.modifiers.new("Armature", "ARMATURE")
        modifier.object = armature
        modifier.use_vertex_groups = True
        modifier.use_deform_preserve_volume = False  # linear blend skinning, as the model
        set_pose_correctives(mesh, body["rest_vertices"], body.get("pose_offsets"))
        set_body_properties(armature, body)

        cameras = []
        if make_cameras is None:
            make_cameras = str(body.get("world", "level")) == "level"
        if make_cameras and "K" in body and len(body["K"]):
            cameras = photo_cameras(body, collection, scene, photos or {})
    return armature, mesh, cameras


@contextmanager
def _edit_bones(armature: bpy.types.Object):
    """The armature's edit bones, in edit mode for the block (Blender creates and moves bones
    only there); the mode, the active object and visibility are restored afterwards."""
    context = bpy.context
    view_layer = context.view_layer
    previous = view_layer.objects.active
    previous_mode = previous.mode if previous is not None else "OBJECT"
    if previous is not None and previous_mode != "OBJECT":
        bpy.ops.object.mode_set(mode="OBJECT")
    linked_here = view_layer.objects.get(armature.name) is None
    if linked_here:  # not in this view layer (another scene, an excluded collection): only while editing
        context.scene.collection.objects.link(armature)
    hidden = armature.hide_get(), armature.hide_viewport
    armature.hide_set(False)
    armature.hide_viewport = False
    view_layer.objects.active = armature
    try:
        bpy.ops.object.mode_set(mode="EDIT")
        yield armature.data.edit_bones
    finally:
        if armature.mode != "OBJECT":
            bpy.ops.object.mode_set(mode="OBJECT")
        armature.hide_viewport = hidden[1]
        armature.hide_set(hidden[0])
        if linked_here:
            context.scene.collection.objects.unlink(armature)
        view_layer.objects.active = previous
        if previous is not None and previous_mode != "OBJECT" and previous.name in view_layer.objects:
            bpy.ops.object.mode_set(mode="EDIT" if previous_mode.startswith("EDIT") else previous_mode)


def _set_rest(edit_bones: list, body: dict) -> None:
    """Each edit bone's head, tail and roll from ``bone_rest_matrices`` (and its length from
    ``bone_tails``, else 10 cm)."""
    from mathutils import Matrix

    rest = np.asarray(body["bone_rest_matrices"], np.float64)
    if "bone_tails" in body:
        lengths = np.linalg.norm(np.asarray(body["bone_tails"], np.float64) - rest[:, :3, 3], axis=1)
    else:
        lengths = np.full(len(rest), 0.1)
    lengths = np.maximum(lengths, 1e-3)  # Blender drops zero-length bones
    heads = rest[:, :3, 3]
    tails = heads + rest[:, :3, 1] * lengths[:, None]
    for bone, matrix, head, tail in zip(edit_bones, rest, heads, tails, strict=True):  # per bone
        bone.head = head.tolist()
        bone.tail = tail.tolist()
        bone.matrix = Matrix(matrix.tolist())  # keeps the length, sets the roll


def set_pose(armature: bpy.types.Object, bone_names, pose_matrices: np.ndarray) -> None:
    """Each named pose bone's ``matrix_basis`` from ``pose_matrices`` [J, 4, 4] (Blender lists
    bones in tree order, not in the model's, so bones are found by name)."""
    from mathutils import Matrix

    bones = armature.pose.bones
    for name, basis in zip(bone_names, np.asarray(pose_matrices, np.float64), strict=True):  # per bone
        bone = bones[str(name)]
        bone.rotation_mode = "QUATERNION"
        bone.matrix_basis = Matrix(basis.tolist())


def add_skin_weights(mesh: bpy.types.Object, bone_names, skin_indices: np.ndarray, skin_weights: np.ndarray) -> None:
    """One vertex group per bone (in bone order) holding the skin weights ``[V, K]``: one
    ``add`` per (bone, distinct weight), an influence listed twice counting once with its
    weights summed."""
    groups = [mesh.vertex_groups.new(name=str(name)) for name in bone_names]
    J = len(groups)
    indices = np.asarray(skin_indices, np.int64)
    weights = np.asarray(skin_weights, np.float32)
    vertex = np.broadcast_to(np.arange(len(indices))[:, None], indices.shape)
    keep = weights > 0
    keys, inverse = np.unique(vertex[keep] * J + indices[keep], return_inverse=True)
    summed = np.bincount(inverse, weights=weights[keep].astype(np.float64)).astype(np.float32)
    vertices, bones = keys // J, keys % J
    order = np.lexsort((summed, bones))
    vertices, bones, summed = vertices[order], bones[order], summed[order]
    starts = np.flatnonzero(np.r_[True, (bones[1:] != bones[:-1]) | (summed[1:] != summed[:-1])])
    ends = np.r_[starts[1:], len(bones)]
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):  # per (bone, weight) run
        groups[bones[start]].add(vertices[start:end].tolist(), float(summed[start]), "REPLACE")


def set_pose_correctives(mesh: bpy.types.Object, rest_vertices: np.ndarray, offsets: np.ndarray | None) -> None:
    """The pose-corrective offsets as a shape key ``Pose Correctives`` at value 1 (its basis the
    rest mesh); without offsets, an existing key is zeroed and none is made."""
    data = mesh.data
    rest = np.ascontiguousarray(rest_vertices, np.float32).ravel()
    data.vertices.foreach_set("co", rest)
    keys = data.shape_keys
    if keys is not None:
        keys.reference_key.data.foreach_set("co", rest)
    has_offsets = offsets is not None and np.any(np.asarray(offsets) != 0)
    key = keys.key_blocks.get(CORRECTIVES_KEY) if keys is not None else None
    if key is None and not has_offsets:
        data.update()
        return
    if key is None:
        if data.shape_keys is None:
            mesh.shape_key_add(name="Basis", from_mix=False)
        key = mesh.shape_key_add(name=CORRECTIVES_KEY, from_mix=False)
    moved = rest + (np.ascontiguousarray(offsets, np.float32).ravel() if has_offsets else 0.0)
    key.data.foreach_set("co", np.ascontiguousarray(moved, np.float32))
    key.slider_min, key.slider_max = 0.0, 1.0
    key.value = 1.0
    data.update()


def shape_range(model: str) -> tuple[float, float]:
    return ANNY_RANGE if model == "anny" else BETA_RANGE


def set_body_properties(armature: bpy.types.Object, body: dict) -> None:
    """The model, rig, model file and shape on the armature object (one slider per shape value)."""
    model = str(body.get("model", ""))
    armature["recon_body_model"] = model
    armature["recon_body_rig"] = str(body.get("rig", ""))
    armature["recon_body_model_file"] = str(body.get("model_file", ""))
    names = [str(n) for n in body.get("shape_names", ())]
    values = [float(v) for v in np.asarray(body.get("shape", ()), np.float64).ravel()]
    armature["recon_shape_names"] = names
    armature["recon_body_shape"] = values
    lo, hi = shape_range(model)
    for name, value in zip(names, values, strict=True):  # per shape parameter
        key = SHAPE_PREFIX + name
        armature[key] = value
        armature.id_properties_ui(key).update(min=lo, max=hi, soft_min=lo, soft_max=hi, default=value,
                                              description=f"{model} shape parameter '{name}' (apply with Set Body Shape)")


def photo_cameras(body: dict, collection: bpy.types.Collection, scene: bpy.types.Scene, photos: dict) -> list:
    """One camera per fitted photo, posed and calibrated as the fit found it, with the photo
    (an image datablock or a file from ``photos``) as its background."""
    names = [str(n) for n in body["photo_names"]]
    cameras = {"names": np.array(names), "K": body["K"], "w2c": body["w2c"], "width": body["width"],
               "height": body["height"]}
    images = {name: photo for name, photo in photos.items() if isinstance(photo, bpy.types.Image)}
    files = [str(photos[name]) if name in photos and name not in images else "" for name in names]
    cameras["paths"] = np.array(files)
    return converters.camera_objects(cameras, collection, scene, backgrounds=images)


# Finding a body ------------------------------------------------------------------------------


def body_armature(obj: bpy.types.Object | None) -> bpy.types.Object | None:
    """The Recon body armature of ``obj``: itself, or the armature its Armature modifier or
    parent is; None when it is no fitted body."""
    if obj is None:
        return None
    candidates = [obj, obj.parent] + [m.object for m in getattr(obj, "modifiers", ()) if m.type == "ARMATURE"]
    return next((c for c in candidates if c is not None and c.type == "ARMATURE" and "recon_body_model" in c), None)


def body_mesh(armature: bpy.types.Object) -> bpy.types.Object | None:
    """The mesh the body armature deforms (its child with an Armature modifier on it)."""
    for child in armature.children:
        if child.type == "MESH" and any(m.type == "ARMATURE" and m.object == armature for m in child.modifiers):
            return child
    return None


def shape_values(armature: bpy.types.Object) -> dict[str, float]:
    """The shape sliders' values, by parameter name."""
    return {str(n): float(armature.get(SHAPE_PREFIX + str(n), 0.0)) for n in armature.get("recon_shape_names", ())}


# Changing the shape --------------------------------------------------------------------------


def prepare_shape(armature: bpy.types.Object, values: dict[str, float] | None = None) -> Job:
    """The ``body_shape`` job for a fitted body: the model, the new shape (``values`` over the
    sliders' values), the armature's rest and its pose now (``inputs/body.npz``). Raises
    ValueError with an artist-facing message."""
    mesh = body_mesh(armature)
    if mesh is None:
        raise ValueError(f"'{armature.name}' deforms no mesh (its body mesh has no Armature modifier pointing to it).")
    names = [str(n) for n in armature.get("recon_shape_names", ())]
    if not names:
        raise ValueError(f"'{armature.name}' keeps no shape parameters; fit it with Fit Body first.")
    shape = shape_values(armature)
    unknown = sorted(set(values or {}) - set(shape))
    if unknown:
        raise ValueError(f"'{armature.name}' has no shape parameter {', '.join(unknown)}; it has {', '.join(names)}.")
    shape.update({k: float(v) for k, v in (values or {}).items()})
    model = str(armature["recon_body_model"])
    model_file = str(armature.get("recon_body_model_file", ""))
    if model != "anny":
        if not model_file or not Path(model_file).is_file():
            raise ValueError(f"The body model file of '{armature.name}' ({model_file or 'none'}) is missing; its shape "
                             "needs that file. Put it back, or set the path in the rig's recon_body_model_file.")
    bones = armature.data.bones
    rest = np.empty(len(bones) * 16, np.float32)
    bones.foreach_get("matrix_local", rest)
    pose_bones = armature.pose.bones
    pose = np.empty(len(pose_bones) * 16, np.float32)
    pose_bones.foreach_get("matrix_basis", pose)
    pose = pose.reshape(-1, 4, 4).transpose(0, 2, 1)  # foreach_get gives Blender's column-major matrices
    by_name = {b.name: i for i, b in enumerate(pose_bones)}
    pose = pose[[by_name[b.name] for b in bones]]  # in the order of the bones (the job reorders by name)
    job = manager().new_job("body_shape", {"model": "anny" if model == "anny" else model_file,
                                           "rig": str(armature.get("recon_body_rig", "")) if model == "anny" else "",
                                           "shape": ""})
    _write_npz(
        job.dir / "inputs" / "body.npz",
        model=np.array(model), rig=np.array(str(armature.get("recon_body_rig", ""))), model_file=np.array(model_file),
        shape_names=np.array(names), shape=np.array([shape[n] for n in names], np.float32),
        bone_names=np.array([b.name for b in bones]),
        bone_rest_matrices=rest.reshape(-1, 4, 4).transpose(0, 2, 1),
        pose_matrices=pose,
        model_to_world=np.array(armature.matrix_world, np.float64),
        vertex_count=np.int64(len(mesh.data.vertices)),
    )
    job.inputs["body"] = str(job.dir / "inputs" / "body.npz")
    job.title = armature.name  # the body the result goes to
    return job


def update_body(armature: bpy.types.Object, body: dict[str, np.ndarray]) -> None:
    """Give a fitted body new rest vertices, bone rest matrices, pose and shape in place (the
    result of a ``body_shape`` job). Checks everything before changing anything."""
    mesh = body_mesh(armature)
    if mesh is None:
        raise ValueError(f"'{armature.name}' deforms no mesh.")
    _check(body)
    V = len(body["rest_vertices"])
    names = [str(n) for n in body["bone_names"]]
    if len(mesh.data.vertices) != V:
        raise ValueError(f"'{mesh.name}' has {len(mesh.data.vertices)} vertices and the new shape {V}; "
                         "the mesh was edited, so it cannot take a new shape.")
    if sorted(b.name for b in armature.data.bones) != sorted(names):
        raise ValueError(f"The bones of '{armature.name}' are not the body model's any more; it cannot take a new shape.")
    with _edit_bones(armature) as edit_bones:
        _set_rest([edit_bones[n] for n in names], body)
    set_pose(armature, names, body["pose_matrices"])
    set_pose_correctives(mesh, body["rest_vertices"], body.get("pose_offsets"))
    set_body_properties(armature, {**body, "model": armature["recon_body_model"],
                                   "rig": armature.get("recon_body_rig", ""),
                                   "model_file": armature.get("recon_body_model_file", "")})


def import_shape_result(job: Job) -> bpy.types.Object:
    """Apply a succeeded ``body_shape`` job to its body; returns the armature."""
    armature = bpy.data.objects.get(job.title)
    if armature is None or body_armature(armature) is not armature:
        raise ValueError(f"The body '{job.title}' is gone; its new shape was not applied.")
    update_body(armature, load_arrays(job.artifact("body")))
    return armature
