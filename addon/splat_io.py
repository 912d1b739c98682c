# SPDX-License-Identifier: GPL-3.0-or-later
"""The standard 3D Gaussian splatting ``.ply`` in and out: numpy and the standard library
only, no Blender, so a test can call it on its own.

The layout is the one every splat viewer reads (Kerbl et al. 2023, ``GaussianModel.save_ply``):
one ``vertex`` element, binary little-endian float32 properties in this order::

    x y z  nx ny nz  f_dc_0 f_dc_1 f_dc_2  f_rest_0 .. f_rest_{K-1}  opacity  scale_0 scale_1 scale_2  rot_0 rot_1 rot_2 rot_3

Values are stored raw, as the optimiser keeps them: ``opacity`` is a logit (the opacity is
``sigmoid(opacity)``), ``scale_*`` are natural logs of the standard deviations along the
Gaussian's axes, ``rot_*`` is a quaternion ``w x y z`` (not necessarily of unit length:
renderers normalise it). ``f_dc_*`` are the degree-0 spherical-harmonic coefficients of
red, green and blue (the colour is ``0.5 + C0 * f_dc``); ``f_rest`` holds K = 0, 9, 24 or 45
higher coefficients (SH degree 0 to 3), channel-major: the m = K / 3 coefficients of red,
then of green, then of blue. Normals are written as zeros and ignored on reading.

Arrays (a plain ``dict``, every value float32, n Gaussians)::

    means      [n, 3]    x y z
    f_dc       [n, 3]    f_dc_0..2
    f_rest     [n, K]    f_rest_0..K-1 in file order (channel-major)
    opacities  [n]       logits
    scales     [n, 3]    log standard deviations
    quats      [n, 4]    w x y z, raw

:func:`read_splats` returns ``f_rest`` as the transpose of a C-contiguous ``[K, n]`` array
(one contiguous run per coefficient, the way Blender stores attributes); the others are
C-contiguous.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

C0 = 0.28209479177387814  # the degree-0 real spherical harmonic, 1 / (2 sqrt(pi))
REST_COUNTS = {0: 0, 1: 9, 2: 24, 3: 45}  # SH degree -> number of f_rest values
KEYS = ("means", "f_dc", "f_rest", "opacities", "scales", "quats")
_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
_SPLAT_PROPERTIES = ("opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")
_MAX_HEADER = 1 << 20


class SplatFileError(ValueError):
    """The file is not a 3DGS ``.ply`` (or is damaged); the message names it and says why."""


def property_names(rest_count: int) -> list[str]:
    """The standard property order for ``rest_count`` f_rest values."""
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
            + [f"f_rest_{i}" for i in range(rest_count)]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def sh_degree(rest_count: int) -> int:
    """SH degree (0-3) from the number of f_rest values (0, 9, 24, 45)."""
    for degree, count in REST_COUNTS.items():
        if count == rest_count:
            return degree
    raise ValueError(f"{rest_count} f_rest values is no SH degree (expected 0, 9, 24 or 45)")


def rest_to_coefficients(f_rest: np.ndarray) -> np.ndarray:
    """f_rest ``[n, K]`` (file order, channel-major) -> ``[n, K/3, 3]`` (coefficient, rgb), the
    layout renderers use (gsplat's ``shN``)."""
    n, k = f_rest.shape
    return f_rest.reshape(n, 3, k // 3).transpose(0, 2, 1)


def coefficients_to_rest(coefficients: np.ndarray) -> np.ndarray:
    """``[n, m, 3]`` -> f_rest ``[n, 3m]`` in file order (channel-major)."""
    n, m, _ = coefficients.shape
    return np.ascontiguousarray(coefficients.transpose(0, 2, 1).reshape(n, 3 * m), dtype=np.float32)


def per_coefficient(values: np.ndarray) -> np.ndarray:
    """``[n, K]`` -> its C-contiguous transpose ``[K, n]``, a view when ``values`` already is
    one's transpose, else copied in blocks of rows (about 3x faster than a plain transpose)."""
    transposed = values.T
    if transposed.flags.c_contiguous:
        return transposed
    out = np.empty(transposed.shape, dtype=values.dtype)
    block = 16384
    for start in range(0, len(values), block):  # per block of rows, not per Gaussian
        out[:, start: start + block] = values[start: start + block].T
    return out


def dc_to_rgb(f_dc: np.ndarray) -> np.ndarray:
    """The view-independent colour ``0.5 + C0 * f_dc`` ``[n, 3]``, unclamped, display-referred
    (compared against sRGB-encoded photo values in training)."""
    return 0.5 + C0 * np.asarray(f_dc, dtype=np.float32)


def rgb_to_dc(rgb: np.ndarray) -> np.ndarray:
    return ((np.asarray(rgb, dtype=np.float32) - 0.5) / C0).astype(np.float32)


def validate(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays as float32 (memory layout kept), shapes checked; raises ValueError."""
    missing = [key for key in KEYS if key not in arrays]
    if missing:
        raise ValueError(f"splat arrays lack {', '.join(missing)}")
    out = {key: np.asarray(arrays[key], dtype=np.float32) for key in KEYS}
    n = len(out["means"])
    expected = {"means": (n, 3), "f_dc": (n, 3), "opacities": (n,), "scales": (n, 3), "quats": (n, 4)}
    if out["f_rest"].ndim != 2 and out["f_rest"].size == 0:  # no higher SH: any empty array
        out["f_rest"] = out["f_rest"].reshape(n, 0)
    expected["f_rest"] = (n, out["f_rest"].shape[-1] if out["f_rest"].ndim == 2 else -1)
    for key, shape in expected.items():
        if out[key].shape != shape:
            raise ValueError(f"splat array '{key}' has shape {out[key].shape}, expected {shape}")
    sh_degree(out["f_rest"].shape[1])
    return out


# -- moving splats ------------------------------------------------------------------------
# The real SH basis of the reference implementation (``sh_utils.eval_sh``), degrees 1 to 3.
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
         -0.4570457994644658, 1.445305721320277, -0.5900435899266435)


def sh_basis(directions: np.ndarray, degree: int) -> np.ndarray:
    """The basis functions 1 .. (degree+1)^2 - 1 (the DC term left out) at unit
    ``directions`` ``[k, 3]`` -> ``[k, (degree+1)^2 - 1]``, in the reference's order and signs."""
    x, y, z = np.asarray(directions, dtype=np.float64).T
    xx, yy, zz = x * x, y * y, z * z
    columns = []
    if degree >= 1:
        columns += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        columns += [SH_C2[0] * x * y, SH_C2[1] * y * z, SH_C2[2] * (2 * zz - xx - yy), SH_C2[3] * x * z, SH_C2[4] * (xx - yy)]
    if degree >= 3:
        columns += [SH_C3[0] * y * (3 * xx - yy), SH_C3[1] * x * y * z, SH_C3[2] * y * (4 * zz - xx - yy),
                    SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy), SH_C3[4] * x * (4 * zz - xx - yy),
                    SH_C3[5] * z * (xx - yy), SH_C3[6] * x * (xx - 3 * yy)]
    return np.stack(columns, axis=1) if columns else np.zeros((len(x), 0))


def rotate_sh(f_rest: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """f_rest ``[n, K]`` of Gaussians turned by ``rotation`` ``[3, 3]``: the new coefficients
    give in direction ``R d`` the colour the old ones gave in direction ``d``. Each degree's
    band turns on its own; its ``(2l+1)^2`` matrix is fitted exactly (least squares on more
    directions than unknowns) from the basis itself, so no sign convention is assumed."""
    degree = sh_degree(f_rest.shape[1])
    if degree == 0:
        return np.asarray(f_rest, dtype=np.float32)
    directions = np.random.default_rng(0).normal(size=(64, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    before = sh_basis(directions @ np.asarray(rotation, dtype=np.float64), degree)  # Y(R^T d) for each d
    after = sh_basis(directions, degree)
    coefficients = rest_to_coefficients(np.asarray(f_rest, dtype=np.float64))  # [n, m, rgb]
    out = np.empty_like(coefficients)
    for band in range(1, degree + 1):  # per degree: 3 at most
        lo, hi = band * band - 1, (band + 1) * (band + 1) - 1
        turn, *_ = np.linalg.lstsq(after[:, lo:hi], before[:, lo:hi], rcond=None)  # Y(R^T d) = Y(d) @ turn
        out[:, lo:hi] = np.einsum("jk,nkc->njc", turn, coefficients[:, lo:hi])
    return coefficients_to_rest(out)


def quaternion_from_rotation(rotation: np.ndarray) -> np.ndarray:
    """A unit quaternion ``w x y z`` of a rotation matrix ``[3, 3]`` (Shepperd's method)."""
    m = np.asarray(rotation, dtype=np.float64)
    trace = np.trace(m)
    if trace > 0.0:
        s = 2.0 * np.sqrt(1.0 + trace)
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + m[i, i] - m[j, j] - m[k, k])
        q = np.empty(4)
        q[0] = (m[k, j] - m[j, k]) / s
        q[1 + i], q[1 + j], q[1 + k] = 0.25 * s, (m[j, i] + m[i, j]) / s, (m[k, i] + m[i, k]) / s
    q = np.asarray(q)
    return q / np.linalg.norm(q)


def quaternion_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton products ``a * b`` of ``w x y z`` quaternions (broadcasting ``[..., 4]``)."""
    aw, ax, ay, az = np.moveaxis(np.asarray(a, dtype=np.float64), -1, 0)
    bw, bx, by, bz = np.moveaxis(np.asarray(b, dtype=np.float64), -1, 0)
    return np.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], axis=-1)


def transform_splats(arrays: dict[str, np.ndarray], matrix: np.ndarray) -> dict[str, np.ndarray]:
    """The Gaussians moved by ``matrix`` ``[4, 4]`` (a rotation, a uniform scale and a
    translation): centres moved, quaternions and view-dependent colours turned, log scales
    shifted; opacities and DC colours unchanged. Computed in float64, returned as float32.
    Raises ValueError for non-uniform scale, shear or mirroring, which a Gaussian's
    rotation-and-scale form cannot hold exactly."""
    arrays = validate(arrays)
    m = np.asarray(matrix, dtype=np.float64).reshape(4, 4)
    linear = m[:3, :3]
    det = np.linalg.det(linear)
    scale = np.cbrt(det) if det > 0 else 0.0
    rotation = linear / scale if scale > 0 else linear
    if scale <= 0 or not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-5):
        raise ValueError("it has a non-uniform scale, a shear or a mirroring, which Gaussians cannot take exactly; "
                         "make its scale uniform (the same on X, Y and Z) and positive")
    return {
        "means": (arrays["means"] @ linear.T + m[:3, 3]).astype(np.float32),
        "f_dc": arrays["f_dc"],
        "f_rest": rotate_sh(arrays["f_rest"], rotation),
        "opacities": arrays["opacities"],
        "scales": (arrays["scales"] + np.log(scale)).astype(np.float32),
        "quats": quaternion_multiply(quaternion_from_rotation(rotation), arrays["quats"]).astype(np.float32),
    }


# -- reading ------------------------------------------------------------------------------
def _header(path: Path, f) -> tuple[str, list[tuple[str, int, list[tuple[str, str]]]], int]:
    """(format, [(element, count, [(property, numpy type or 'list')])], data offset)."""
    if f.read(4) not in (b"ply\n", b"ply\r"):
        raise SplatFileError(f"'{path.name}' is not a PLY file (it does not start with 'ply').")
    f.seek(0)
    lines, size = [], 0
    while True:
        line = f.readline(_MAX_HEADER)
        size += len(line)
        if not line or size > _MAX_HEADER:
            raise SplatFileError(f"'{path.name}' has no complete PLY header (no 'end_header').")
        text = line.decode("ascii", errors="replace").strip()
        if text == "end_header":
            break
        lines.append(text)
    fmt, elements = None, []
    for text in lines[1:]:
        words = text.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format" and len(words) >= 2:
            fmt = words[1]
        elif words[0] == "element" and len(words) == 3:
            elements.append((words[1], int(words[2]), []))
        elif words[0] == "property" and elements:
            if words[1] == "list":
                elements[-1][2].append((words[-1], "list"))
            elif len(words) == 3 and words[1] in _PLY_TYPES:
                elements[-1][2].append((words[2], _PLY_TYPES[words[1]]))
            else:
                raise SplatFileError(f"'{path.name}' has a PLY property line I cannot read: '{text}'.")
        else:
            raise SplatFileError(f"'{path.name}' has a PLY header line I cannot read: '{text}'.")
    if fmt not in ("binary_little_endian", "binary_big_endian", "ascii"):
        raise SplatFileError(f"'{path.name}' has an unknown PLY format '{fmt}'.")
    return fmt, elements, f.tell()


def _check_splat_layout(path: Path, elements) -> tuple[int, list[tuple[str, str]], list[str]]:
    """The vertex element's index and properties, and the f_rest names in order; refuses
    meshes and plain point clouds."""
    faces = sum(count for name, count, _ in elements if name in ("face", "tristrips", "edge"))
    if faces:
        raise SplatFileError(
            f"'{path.name}' is a mesh ({faces:,} faces), not Gaussian splats. Import it with "
            "File > Import > Stanford PLY instead.")
    index = next((i for i, (name, _, _) in enumerate(elements) if name == "vertex"), None)
    if index is None:
        raise SplatFileError(f"'{path.name}' has no vertex element, so it holds no Gaussian splats.")
    properties = elements[index][2]
    names = [name for name, _ in properties]
    if any(kind == "list" for _, kind in properties):
        raise SplatFileError(f"'{path.name}' has list properties on its vertices: it is not a 3DGS splat file.")
    lacking = [name for name in ("x", "y", "z", *_SPLAT_PROPERTIES) if name not in names]
    if lacking:
        raise SplatFileError(
            f"'{path.name}' is a plain point cloud, not Gaussian splats: it lacks "
            f"{', '.join(lacking)}. Import it with File > Import > Stanford PLY, or train splats from it.")
    lacking_dc = [name for name in ("f_dc_0", "f_dc_1", "f_dc_2") if name not in names]
    if lacking_dc:
        raise SplatFileError(f"'{path.name}' has Gaussians but no colours ({', '.join(lacking_dc)} missing).")
    rest = sorted((name for name in names if name.startswith("f_rest_")), key=lambda s: int(s[7:]) if s[7:].isdigit() else -1)
    if rest != [f"f_rest_{i}" for i in range(len(rest))] or len(rest) not in REST_COUNTS.values():
        raise SplatFileError(
            f"'{path.name}' has {len(rest)} f_rest values; a 3DGS file has 0, 9, 24 or 45 (f_rest_0 onwards).")
    for prior in elements[:index]:
        if any(kind == "list" for _, kind in prior[2]):
            raise SplatFileError(f"'{path.name}' has a variable-size element before its vertices; it is not a 3DGS file.")
    return index, properties, rest


def read_splats(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of a 3DGS ``.ply`` (see the module docstring), read in bulk. Any PLY
    number type is accepted and converted to float32; ascii and big-endian files too.
    Raises :class:`SplatFileError` for a mesh, a plain point cloud, a damaged file."""
    path = Path(path)
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise SplatFileError(f"Cannot open '{path}': {exc.strerror or exc}.") from exc
    with f:
        fmt, elements, offset = _header(path, f)
        index, properties, rest = _check_splat_layout(path, elements)
        count = elements[index][1]
        order = "<" if fmt != "binary_big_endian" else ">"
        dtype = np.dtype([(name, order + kind) for name, kind in properties])
        if fmt == "ascii":
            if index != 0:
                raise SplatFileError(f"'{path.name}' is an ascii PLY whose vertices are not its first element.")
            table = np.loadtxt(f, dtype=np.float64, max_rows=count, ndmin=2).astype(np.float32) if count else np.zeros((0, len(properties)), np.float32)
            if table.shape != (count, len(properties)):
                raise SplatFileError(f"'{path.name}' is truncated: {len(table):,} of {count:,} Gaussians.")
        else:
            skip = sum(c * np.dtype([(n, order + k) for n, k in props]).itemsize for _, c, props in elements[:index])
            f.seek(offset + skip)
            records = np.fromfile(f, dtype=dtype, count=count)
            if len(records) != count:
                raise SplatFileError(f"'{path.name}' is truncated: {len(records):,} of {count:,} Gaussians.")
            table = _as_float32_table(records, dtype)
    column = {name: i for i, (name, _) in enumerate(properties)}

    def take(names, copy=True) -> np.ndarray:
        if _consecutive(names, column):
            view = table[:, column[names[0]]: column[names[0]] + len(names)]
            return np.ascontiguousarray(view) if copy else view
        return table[:, [column[name] for name in names]]  # fancy indexing copies

    arrays = {
        "means": take(["x", "y", "z"]),
        "f_dc": take(["f_dc_0", "f_dc_1", "f_dc_2"]),
        "f_rest": per_coefficient(take(rest, copy=False)).T if rest else np.zeros((count, 0), np.float32),
        "opacities": take(["opacity"]).reshape(-1),
        "scales": take(["scale_0", "scale_1", "scale_2"]),
        "quats": take(["rot_0", "rot_1", "rot_2", "rot_3"]),
    }
    return arrays


def _consecutive(names: list[str], column: dict[str, int]) -> bool:
    first = column[names[0]]
    return [column[name] for name in names] == list(range(first, first + len(names)))


def _as_float32_table(records: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A structured array as an ``[n, properties]`` float32 table: a view when every
    property is native float32, else one conversion per column."""
    n, width = len(records), len(dtype.names)
    if all(dtype.fields[name][0] == np.dtype(np.float32) for name in dtype.names):
        return records.view(np.float32).reshape(n, width)
    table = np.empty((n, width), np.float32)
    for i, name in enumerate(dtype.names):  # per property, not per Gaussian
        table[:, i] = records[name]
    return table


# -- writing ------------------------------------------------------------------------------
def write_splats(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    """Write the arrays as a standard 3DGS ``.ply`` (binary little-endian float32, the
    property order of the module docstring, zero normals). Written to a temporary name
    and renamed into place."""
    arrays = validate(arrays)
    n, k = arrays["f_rest"].shape
    table = np.concatenate([
        arrays["means"], np.zeros((n, 3), np.float32), arrays["f_dc"], arrays["f_rest"],
        arrays["opacities"][:, None], arrays["scales"], arrays["quats"],
    ], axis=1).astype("<f4", copy=False)
    header = "".join([
        "ply\n", "format binary_little_endian 1.0\n", f"element vertex {n}\n",
        *(f"property float {name}\n" for name in property_names(k)), "end_header\n",
    ]).encode("ascii")
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as f:
            f.write(header)
            np.ascontiguousarray(table).tofile(f)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path
