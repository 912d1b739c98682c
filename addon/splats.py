# SPDX-License-Identifier: GPL-3.0-or-later
"""Gaussian splats as Blender objects that show in the viewport and render in Cycles and
EEVEE, and back out as a standard 3DGS ``.ply``.

One Point Cloud object holds every Gaussian. Its point attributes are the ``.ply``'s raw
values, bit for bit, so an export loses nothing:

==================  ============  =========================================================
attribute           type          value (raw, as in the .ply)
==================  ============  =========================================================
``position``        float vector  x y z (the object's local frame)
``rotation``        quaternion    rot_0..3: w x y z, not normalised (renderers normalise)
``log_scale``       float vector  scale_0..2: natural log of the standard deviations
``logit_opacity``   float         opacity: a logit (the opacity is its sigmoid)
``f_dc``            colour        f_dc_0..2 as red, green, blue (alpha 1): the degree-0 SH
                                  coefficients, not a colour; the colour is 0.5 + C0 * f_dc
``f_rest_0`` ...    float         f_rest_0..K-1 (K = 0, 9, 24, 45), channel-major as in the file
==================  ============  =========================================================

A Geometry Nodes modifier (node group "Recon Gaussian Splats") activates them and puts an
ellipsoid on every point: an icosahedron whose insphere has a radius of sqrt(2 ln 255) =
3.33 standard deviations (where the Gaussian's alpha falls below 1/255, the cut-off of the
3DGS rasteriser), rotated by the normalised quaternion and scaled by exp(log_scale). Each
instance carries ``splat_opacity`` (the sigmoid) and ``splat_color`` (the DC colour, see
below) for the material.

The material ("Recon Gaussian Splat") gives each ellipsoid the 3DGS alpha. In the
instance's own space the Gaussian is the unit normal distribution, so the ray through a
pixel meets it with a peak density of exp(-d^2 / 2), d being the ray's closest distance to
the centre there: ``d^2 = |p|^2 - (p . v)^2`` for the hit point p and the unit ray direction
v, both in object space. That is the exact form of what the rasteriser's projected 2D
Gaussian approximates (EWA splatting linearises the projection), so the falloff matches in
screen space without knowing the camera. Alpha is ``min(0.99, opacity * exp(-d^2 / 2))``,
zero below 1/255 and on back faces (each Gaussian counts once per ray; but where the
camera sits inside a Gaussian, as large background Gaussians often enclose it, its back
faces count, for it has no front face in view), shading mixes an
emission of the colour with a transparent BSDF: unlit, composited front to back by the
renderer. Cycles composites in the order a ray meets the ellipsoids' surfaces (a large
Gaussian just behind a small one can come first), EEVEE ("Blended" render method) in the
order of the instances' centres, as the rasteriser does. Only the DC term is shown (no
view-dependent colour); the f_rest values ride along for export.

Colour: 3DGS trains ``0.5 + C0 * f_dc`` against sRGB-encoded photo values, so that colour is
display-referred, and its rasteriser blends those display values. The node group clamps it
to [0, 1] and, by default, decodes it with the sRGB transfer function into scene-linear
``splat_color``: rendered with the Standard view transform (no look, exposure 0, gamma 1)
an opaque splat shows exactly its 3DGS colour, and splats sit among other Blender objects
with the right colours. Blender blends in linear light, though, so soft edges and
semi-transparent overlaps come out brighter than in 3DGS (on a test scene of six
overlapping Gaussians: 19 dB PSNR against the 3DGS formula, 37 dB against the same formula
blended in linear light). The modifier's "Display Blending" input keeps the display values
undecoded instead: with the Raw view transform the render then blends exactly what the
rasteriser blends (the 3DGS look for splats alone; other objects' colours are then off).
:func:`render_settings` sets up a scene for either.
"""

from __future__ import annotations

import math
from pathlib import Path

import bpy
import numpy as np

from . import splat_io
from .converters import rollback_on_error, transform_points

NODE_GROUP = "Recon Gaussian Splats"
MATERIAL = "Recon Gaussian Splat"
MODIFIER = "Gaussian Splats"
VERSION = 2  # of the node group and material; older ones are rebuilt under a new name

POSITION, ROTATION, LOG_SCALE, LOGIT_OPACITY, F_DC = "position", "rotation", "log_scale", "logit_opacity", "f_dc"
INSTANCE_COLOR, INSTANCE_OPACITY = "splat_color", "splat_opacity"
SELECTION = ".selection"  # the point cloud's selection in edit mode
DISPLAY_BLENDING = "Display Blending"  # the modifier's input (see the module docstring)

ALPHA_MIN, ALPHA_MAX = 1.0 / 255.0, 0.99  # the 3DGS rasteriser's clamps
CUTOFF_SIGMA = math.sqrt(2.0 * math.log(255.0))  # where exp(-d^2/2) = 1/255
ICOSAHEDRON_INRADIUS = 0.7946  # of an icosahedron with circumradius 1 (0.79465), rounded down
RENDER_TRANSPARENT_BOUNCES = 256  # Cycles: each Gaussian a ray crosses is two transparent hits

# data_type -> (foreach property, values per element, numpy dtype), for copying attributes
_LAYOUT = {
    "FLOAT": ("value", 1, np.float32), "INT": ("value", 1, np.int32), "BOOLEAN": ("value", 1, bool),
    "FLOAT_VECTOR": ("vector", 3, np.float32), "FLOAT2": ("vector", 2, np.float32),
    "FLOAT_COLOR": ("color", 4, np.float32), "BYTE_COLOR": ("color", 4, np.float32),
    "QUATERNION": ("value", 4, np.float32), "INT32_2D": ("value", 2, np.int32),
    "FLOAT4X4": ("value", 16, np.float32),
}


# -- which objects are splats ----------------------------------------------------------------
def is_splat_object(obj) -> bool:
    """A Point Cloud with the splat attributes (whoever made it)."""
    if obj is None or obj.type != "POINTCLOUD":
        return False
    names = obj.data.attributes.keys()
    return all(name in names for name in (ROTATION, LOG_SCALE, LOGIT_OPACITY, F_DC))


def rest_names(data) -> list[str]:
    """The ``f_rest_i`` attributes in order (0, 9, 24 or 45 of them)."""
    names = set(data.attributes.keys())
    count = 0
    while f"f_rest_{count}" in names:
        count += 1
    return [f"f_rest_{i}" for i in range(count)]


def count_and_degree(obj) -> tuple[int, int]:
    rest = len(rest_names(obj.data))
    return len(obj.data.points), splat_io.sh_degree(rest) if rest in splat_io.REST_COUNTS.values() else -1


# -- arrays <-> a point cloud ------------------------------------------------------------------
def _read(attribute, count: int) -> np.ndarray:
    prop, width, dtype = _LAYOUT[attribute.data_type]
    out = np.empty(count * width, dtype=dtype)
    if count:
        attribute.data.foreach_get(prop, out)
    return out.reshape(count, width) if width > 1 else out


def splat_arrays(obj) -> dict[str, np.ndarray]:
    """The :mod:`.splat_io` arrays of a splat object, read in bulk (local frame, raw values)."""
    data = obj.data
    if not is_splat_object(obj):
        raise ValueError(f"'{obj.name}' is not a splat object (it lacks rotation, log_scale, logit_opacity or f_dc)")
    n = len(data.points)
    attributes = data.attributes
    rest = rest_names(data)
    if len(rest) not in splat_io.REST_COUNTS.values():
        raise ValueError(f"'{obj.name}' has {len(rest)} f_rest attributes; a splat has 0, 9, 24 or 45")
    f_rest = np.empty((len(rest), n), np.float32)
    for i, name in enumerate(rest):  # per attribute
        if n:
            attributes[name].data.foreach_get("value", f_rest[i])
    return splat_io.validate({
        "means": _read(attributes[POSITION], n),
        "f_dc": _read(attributes[F_DC], n)[:, :3],
        "f_rest": f_rest.T,
        "opacities": _read(attributes[LOGIT_OPACITY], n),
        "scales": _read(attributes[LOG_SCALE], n),
        "quats": _read(attributes[ROTATION], n),
    })


def _columns(arrays: dict[str, np.ndarray]) -> list[tuple[str, str, np.ndarray]]:
    """(attribute, data type, flat values) for every splat attribute but the position."""
    n = len(arrays["means"])
    rgba = np.ones((n, 4), np.float32)
    rgba[:, :3] = arrays["f_dc"]
    rest = splat_io.per_coefficient(arrays["f_rest"])  # one contiguous row per attribute
    return [
        (ROTATION, "QUATERNION", arrays["quats"]),
        (LOG_SCALE, "FLOAT_VECTOR", arrays["scales"]),
        (LOGIT_OPACITY, "FLOAT", arrays["opacities"]),
        (F_DC, "FLOAT_COLOR", rgba),
        *((f"f_rest_{i}", "FLOAT", rest[i]) for i in range(len(rest))),
    ]


def _point_cloud_object(name: str, positions: np.ndarray, columns, collection, created: list) -> bpy.types.Object:
    """A Point Cloud object in ``collection`` with these points and attributes, written in
    bulk: a mesh of loose vertices converted (PointCloud has no bulk resize in Python)."""
    mesh = bpy.data.meshes.new(name)
    created.append(mesh)
    mesh.vertices.add(len(positions))
    mesh.vertices.foreach_set("co", np.ascontiguousarray(positions, dtype=np.float32).ravel())
    for attribute, data_type, values in columns:  # per attribute
        prop = _LAYOUT[data_type][0]
        mesh.attributes.new(attribute, data_type, "POINT").data.foreach_set(prop, np.ascontiguousarray(values).ravel())
    obj = bpy.data.objects.new(name, mesh)
    created.append(obj)
    collection.objects.link(obj)
    with bpy.context.temp_override(active_object=obj, object=obj, selected_objects=[obj], selected_editable_objects=[obj]):
        result = bpy.ops.object.convert(target="POINTCLOUD")
    if result != {"FINISHED"} or obj.type != "POINTCLOUD":
        raise RuntimeError(f"could not turn '{name}' into a point cloud ({result})")
    if mesh.users == 0:
        bpy.data.meshes.remove(mesh)
    return obj


def splat_object(name: str, arrays: dict[str, np.ndarray], collection: bpy.types.Collection) -> bpy.types.Object:
    """One Point Cloud object holding every Gaussian (attributes in the module docstring),
    shown as splats by the "Gaussian Splats" modifier. ``arrays``: :mod:`.splat_io`'s.
    Nothing is left behind if this raises."""
    arrays = splat_io.validate(arrays)
    group = _current(bpy.data.node_groups, NODE_GROUP)  # shared by every splat object
    new_group = None
    try:
        with rollback_on_error() as created:
            obj = _point_cloud_object(name, arrays["means"], _columns(arrays), collection, created)
            if group is None:
                material = _current(bpy.data.materials, MATERIAL)
                if material is None:
                    material = splat_material()
                    created.append(material)
                group = new_group = splat_node_group(material)
            modifier = obj.modifiers.new(MODIFIER, "NODES")
            modifier.node_group = group
            obj.visible_shadow = False  # light passes through splats: they are what the camera saw, lit already
    except BaseException:
        if new_group is not None:  # the rollback does not know node groups
            bpy.data.node_groups.remove(new_group)
        raise
    return obj


def import_splats(path, collection: bpy.types.Collection, name: str | None = None) -> bpy.types.Object:
    """A splat object from a 3DGS ``.ply``; raises :class:`.splat_io.SplatFileError` (a
    ValueError naming the file) for anything else, before the scene changes."""
    path = Path(path)
    arrays = splat_io.read_splats(path)
    if len(arrays["means"]) == 0:
        raise splat_io.SplatFileError(f"'{path.name}' holds no Gaussians.")
    return splat_object(name or path.stem, arrays, collection)


def export_splats(obj, path, apply_transform: bool = True) -> Path:
    """Write a splat object's Gaussians as a standard 3DGS ``.ply``: where they stand in the
    scene (``apply_transform``: the object's world matrix applied, see
    :func:`.splat_io.transform_splats`; a ValueError for non-uniform scale) or in the
    object's own frame. An identity transform writes the stored values bit for bit."""
    if obj.mode == "EDIT":
        obj.update_from_editmode()
    arrays = splat_arrays(obj)
    matrix = np.array(obj.matrix_world, dtype=np.float64)
    if apply_transform and not np.array_equal(matrix, np.eye(4)):
        try:
            arrays = splat_io.transform_splats(arrays, matrix)
        except ValueError as exc:
            raise ValueError(f"Cannot apply the transform of '{obj.name}': {exc}; or untick Apply Transform") from None
    return splat_io.write_splats(Path(path), arrays)


# -- deleting and cropping ---------------------------------------------------------------------
def keep_splats(obj, keep: np.ndarray) -> int:
    """Keep the points where ``keep`` ``[n] bool`` is true, with every attribute (object
    mode). The object gets a new Point Cloud datablock; returns how many were removed."""
    data = obj.data
    n = len(data.points)
    keep = np.asarray(keep, dtype=bool).reshape(-1)
    if len(keep) != n:
        raise ValueError(f"{len(keep)} flags for {n} points")
    removed = int(n - keep.sum())
    if removed == 0:
        return 0
    columns = [
        (a.name, a.data_type, _read(a, n)[keep])
        for a in data.attributes
        if a.domain == "POINT" and a.name != POSITION and not a.name.startswith(".") and a.data_type in _LAYOUT
    ]
    positions = _read(data.attributes[POSITION], n)[keep]
    with rollback_on_error() as created:
        scratch = _point_cloud_object(data.name, positions, columns, bpy.context.scene.collection, created)
        new_data = scratch.data
        created.append(new_data)
        bpy.data.objects.remove(scratch)
        for material in data.materials:
            new_data.materials.append(material)
        old, obj.data = data, new_data
    name = old.name
    if old.users == 0:
        bpy.data.pointclouds.remove(old)
        new_data.name = name
    return removed


def selected(obj) -> np.ndarray:
    """``[n] bool``: the points selected in edit mode (none when nothing was ever selected)."""
    attribute = obj.data.attributes.get(SELECTION)
    n = len(obj.data.points)
    if attribute is None or attribute.domain != "POINT" or attribute.data_type not in _LAYOUT:
        return np.zeros(n, bool)
    return _read(attribute, n).reshape(n, -1)[:, 0].astype(bool)


def box_bounds(box) -> tuple[np.ndarray, np.ndarray]:
    """The box an object stands for, in its local frame: an empty's display size (a cube of
    half-size ``empty_display_size``), otherwise its bounding box."""
    if box.type == "EMPTY":
        size = float(box.empty_display_size)
        return np.full(3, -size), np.full(3, size)
    corners = np.array([tuple(c) for c in box.bound_box], dtype=np.float64)
    return corners.min(axis=0), corners.max(axis=0)


def inside_box(obj, box) -> np.ndarray:
    """``[n] bool``: the splat object's Gaussians whose centres lie inside ``box`` (a mesh,
    e.g. a cube, or an empty), wherever both objects stand."""
    n = len(obj.data.points)
    world = transform_points(obj.matrix_world, _read(obj.data.attributes[POSITION], n))
    box_matrix = np.array(box.matrix_world, dtype=np.float64)
    if abs(np.linalg.det(box_matrix[:3, :3])) < 1e-12:
        raise ValueError(f"'{box.name}' is flat (zero scale on an axis), so it holds nothing")
    local = transform_points(np.linalg.inv(box_matrix), world)
    low, high = box_bounds(box)
    return np.all((local >= low) & (local <= high), axis=1)


# -- scene ---------------------------------------------------------------------------------------
def display_blending(obj) -> bool:
    modifier = obj.modifiers.get(MODIFIER)
    key = display_blending_key(modifier)
    return bool(modifier[key]) if key and key in modifier else False


def set_display_blending(obj, on: bool) -> None:
    modifier = obj.modifiers.get(MODIFIER)
    key = display_blending_key(modifier)
    if key is None:
        raise ValueError(f"'{obj.name}' has no '{MODIFIER}' modifier with a '{DISPLAY_BLENDING}' input")
    modifier[key] = bool(on)
    obj.update_tag()


def display_blending_key(modifier) -> str | None:
    """The modifier's custom-property key of the "Display Blending" input (for ``layout.prop``)."""
    group = getattr(modifier, "node_group", None)
    if group is None:
        return None
    item = group.interface.items_tree.get(DISPLAY_BLENDING)
    return getattr(item, "identifier", None)


def render_settings(scene: bpy.types.Scene, display_blending: bool = False) -> list[str]:
    """Set what splats need to render as trained (see the module docstring): the Standard
    view transform (Raw for display blending), no look, exposure 0, gamma 1, and enough
    transparent bounces for Cycles. Returns what changed, in words, for the report."""
    changed = []
    view = scene.view_settings
    transform = "Raw" if display_blending else "Standard"
    if view.view_transform != transform or view.look != "None" or view.exposure != 0.0 or view.gamma != 1.0:
        view.view_transform, view.look, view.exposure, view.gamma = transform, "None", 0.0, 1.0
        changed.append(f"view transform {transform}")
    cycles = getattr(scene, "cycles", None)
    if cycles is not None and cycles.transparent_max_bounces < RENDER_TRANSPARENT_BOUNCES:
        cycles.transparent_max_bounces = RENDER_TRANSPARENT_BOUNCES
        changed.append(f"Cycles transparent bounces {RENDER_TRANSPARENT_BOUNCES}")
    return changed


# -- the node group and the material -----------------------------------------------------------
def _current(blocks, name: str):
    """The datablock ``name`` made by this version of this module, or None."""
    block = blocks.get(name)
    if block is not None and block.get("recon_version") == VERSION:
        return block
    return next((b for b in blocks if b.name.startswith(name) and b.get("recon_version") == VERSION), None)


class _Nodes:
    """A small builder: ``add(kind, *inputs, **properties)`` links sockets and sets plain values."""

    def __init__(self, tree):
        self.tree = tree
        self.column = 0

    def add(self, kind: str, *inputs, x: int | None = None, y: int = 0, **properties):
        node = self.tree.nodes.new(kind)
        for key, value in properties.items():
            setattr(node, key, value)
        node.location = (x if x is not None else self.column, y)
        sockets = [s for s in node.inputs if s.enabled]
        for socket, value in zip(sockets, inputs, strict=False):
            if value is None:
                continue
            if isinstance(value, bpy.types.NodeSocket):
                self.tree.links.new(value, socket)
            else:
                socket.default_value = value
        return node

    def math(self, operation: str, *inputs, **kw):
        return self.add("ShaderNodeMath", *inputs, operation=operation, **kw).outputs[0]

    def vector(self, operation: str, *inputs, **kw):
        node = self.add("ShaderNodeVectorMath", *inputs, operation=operation, **kw)
        return node.outputs[1] if operation in ("DOT_PRODUCT", "LENGTH", "DISTANCE") else node.outputs[0]


def splat_node_group(material: bpy.types.Material) -> bpy.types.NodeTree:
    """The Geometry Nodes group that turns the splat point attributes into ellipsoid
    instances with ``splat_color`` and ``splat_opacity`` (see the module docstring)."""
    tree = bpy.data.node_groups.new(NODE_GROUP, "GeometryNodeTree")
    tree["recon_version"] = VERSION
    tree.description = "Gaussian splats from a Recon splat point cloud: one ellipsoid per Gaussian"
    tree.interface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    blending = tree.interface.new_socket(DISPLAY_BLENDING, in_out="INPUT", socket_type="NodeSocketBool")
    blending.description = ("Blend display colours as the 3DGS rasteriser does: its exact look under the Raw view "
                            "transform. Off: colours decoded to scene linear, right under the Standard view transform")
    blending.default_value = False
    tree.interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    b = _Nodes(tree)
    group_in = b.add("NodeGroupInput", x=-1400, y=300)

    def attribute(name, data_type, y):
        return b.add("GeometryNodeInputNamedAttribute", name, data_type=data_type, x=-1400, y=y).outputs["Attribute"]

    # rotation: the quaternion normalised
    b.column = -1200
    wxyz = b.add("FunctionNodeRotationToQuaternion", attribute(ROTATION, "QUATERNION", 100), y=100).outputs
    xyz = b.add("ShaderNodeCombineXYZ", wxyz["X"], wxyz["Y"], wxyz["Z"], x=-1000, y=50).outputs[0]
    b.column = -800
    length2 = b.math("MULTIPLY_ADD", wxyz["W"], wxyz["W"], b.vector("DOT_PRODUCT", xyz, xyz, y=0), y=100)
    inverse = b.math("INVERSE_SQRT", length2, x=-600, y=100)
    w = b.math("MULTIPLY", wxyz["W"], inverse, x=-400, y=150)
    v = b.add("ShaderNodeSeparateXYZ", b.vector("SCALE", xyz, inverse, x=-400, y=50), x=-200, y=50).outputs
    rotation = b.add("FunctionNodeQuaternionToRotation", w, v[0], v[1], v[2], x=0, y=100).outputs[0]
    # scale: exp(log_scale)
    scale = b.vector("POWER", (math.e,) * 3, attribute(LOG_SCALE, "FLOAT_VECTOR", -150), x=0, y=-150)
    # opacity: sigmoid(logit)
    b.column = -1200
    expo = b.math("EXPONENT", b.math("MULTIPLY", attribute(LOGIT_OPACITY, "FLOAT", -350), -1.0, y=-350), x=-1000, y=-350)
    opacity = b.math("DIVIDE", 1.0, b.math("ADD", expo, 1.0, x=-800, y=-350), x=-600, y=-350)
    # colour: 0.5 + C0 f_dc, clamped, sRGB-decoded to scene linear
    b.column = -1200
    rgb = b.vector("MULTIPLY_ADD", attribute(F_DC, "FLOAT_COLOR", -550), (splat_io.C0,) * 3, (0.5,) * 3, y=-550)
    rgb = b.vector("MINIMUM", b.vector("MAXIMUM", rgb, (0.0,) * 3, x=-1000, y=-550), (1.0,) * 3, x=-800, y=-550)
    low = b.vector("SCALE", rgb, 1.0 / 12.92, x=-600, y=-500)
    high = b.vector("POWER", b.vector("MULTIPLY_ADD", rgb, (1 / 1.055,) * 3, (0.055 / 1.055,) * 3, x=-600, y=-650), (2.4,) * 3, x=-400, y=-650)
    step = b.vector("SIGN", b.vector("SUBTRACT", rgb, (0.04045,) * 3, x=-600, y=-800), x=-400, y=-800)
    step = b.vector("MULTIPLY_ADD", step, (0.5,) * 3, (0.5,) * 3, x=-200, y=-800)
    mix = b.add("ShaderNodeMix", data_type="VECTOR", factor_mode="NON_UNIFORM", x=0, y=-600)
    tree.links.new(step, mix.inputs[1])
    tree.links.new(low, mix.inputs[4])
    tree.links.new(high, mix.inputs[5])
    switch = b.add("GeometryNodeSwitch", input_type="VECTOR", x=200, y=-550)
    tree.links.new(group_in.outputs[DISPLAY_BLENDING], switch.inputs[0])
    tree.links.new(mix.outputs[1], switch.inputs[1])  # off: scene-linear
    tree.links.new(rgb, switch.inputs[2])  # on: the display values themselves
    color = switch.outputs[0]
    # the ellipsoids
    radius = CUTOFF_SIGMA / ICOSAHEDRON_INRADIUS
    shape = b.add("GeometryNodeMeshIcoSphere", radius, 1, x=0, y=500).outputs["Mesh"]
    shape = b.add("GeometryNodeSetMaterial", shape, None, material, x=200, y=500).outputs[0]
    instances = b.add("GeometryNodeInstanceOnPoints", x=400, y=300)
    for socket, value in (("Points", group_in.outputs[0]), ("Instance", shape), ("Rotation", rotation), ("Scale", scale)):
        tree.links.new(value, instances.inputs[socket])
    b.column = 600
    stored = b.add("GeometryNodeStoreNamedAttribute", instances.outputs[0], None, INSTANCE_COLOR, color,
                   data_type="FLOAT_COLOR", domain="INSTANCE", y=300)
    stored = b.add("GeometryNodeStoreNamedAttribute", stored.outputs[0], None, INSTANCE_OPACITY, opacity,
                   data_type="FLOAT", domain="INSTANCE", x=800, y=300)
    group_out = b.add("NodeGroupOutput", x=1000, y=300)
    tree.links.new(stored.outputs[0], group_out.inputs[0])
    return tree


def splat_material() -> bpy.types.Material:
    """The material of the ellipsoids: 3DGS alpha from the ray's closest approach to the
    Gaussian's centre, the instance's ``splat_color`` as emission (see the module docstring)."""
    material = bpy.data.materials.new(MATERIAL)
    material["recon_version"] = VERSION
    if material.node_tree is None:  # Blender < 5 makes materials without nodes
        material.use_nodes = True
    tree = material.node_tree
    tree.nodes.clear()
    b = _Nodes(tree)
    p = b.add("ShaderNodeTexCoord", x=-1400, y=200).outputs["Object"]  # in units of standard deviations
    geometry = b.add("ShaderNodeNewGeometry", x=-1400, y=-100).outputs
    toward_viewer = b.add("ShaderNodeVectorTransform", geometry["Incoming"], vector_type="VECTOR",
                          convert_from="WORLD", convert_to="OBJECT", x=-1200, y=-100).outputs[0]
    b.column = -1000
    direction = b.vector("NORMALIZE", toward_viewer, y=-100)
    along = b.vector("DOT_PRODUCT", p, direction, x=-800, y=0)
    d2 = b.math("SUBTRACT", b.vector("DOT_PRODUCT", p, p, x=-800, y=200), b.math("MULTIPLY", along, along, x=-600, y=0), x=-400, y=100)
    falloff = b.math("EXPONENT", b.math("MULTIPLY", d2, -0.5, x=-200, y=100), x=0, y=100)
    opacity = b.add("ShaderNodeAttribute", attribute_type="INSTANCER", attribute_name=INSTANCE_OPACITY, x=0, y=350).outputs[2]
    alpha = b.math("MINIMUM", b.math("MULTIPLY", opacity, falloff, x=200, y=200), ALPHA_MAX, x=400, y=200)
    alpha = b.math("MULTIPLY", alpha, b.math("GREATER_THAN", alpha, ALPHA_MIN, x=600, y=100), x=800, y=200)
    # front faces only, so that each Gaussian counts once per ray; but a Gaussian around the camera
    # has no front face in view: its back faces count (the rasteriser draws it when its centre is ahead)
    camera = b.add("ShaderNodeVectorTransform", (0.0, 0.0, 0.0), vector_type="POINT", convert_from="CAMERA",
                   convert_to="OBJECT", x=400, y=-100).outputs[0]
    inside = b.math("LESS_THAN", b.vector("LENGTH", camera, x=600, y=-100), CUTOFF_SIGMA, x=800, y=-200)
    counted = b.math("MAXIMUM", b.math("SUBTRACT", 1.0, geometry["Backfacing"], x=800, y=-100), inside, x=900, y=-150)
    alpha = b.math("MULTIPLY", alpha, counted, x=1000, y=100)
    color = b.add("ShaderNodeAttribute", attribute_type="INSTANCER", attribute_name=INSTANCE_COLOR, x=800, y=-300).outputs[0]
    emission = b.add("ShaderNodeEmission", color, 1.0, x=1000, y=-300).outputs[0]
    transparent = b.add("ShaderNodeBsdfTransparent", x=1000, y=-150).outputs[0]
    shader = b.add("ShaderNodeMixShader", alpha, transparent, emission, x=1200, y=0).outputs[0]
    output = b.add("ShaderNodeOutputMaterial", x=1400, y=0)
    tree.links.new(shader, output.inputs["Surface"])
    material.cycles.emission_sampling = "NONE"  # millions of emissive triangles: no light tree
    material.use_backface_culling = True  # EEVEE: front faces only, as the shader does for Cycles
    # EEVEE: sorted by instance centre, as the rasteriser sorts; "DITHERED" is order-independent and
    # cheaper with millions of splats, but noisy until many samples accumulate
    material.surface_render_method = "BLENDED"
    material.diffuse_color = (0.6, 0.6, 0.6, 1.0)
    return material
