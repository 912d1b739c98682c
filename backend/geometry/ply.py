# SPDX-License-Identifier: GPL-3.0-or-later
"""A tolerant PLY reader in bulk numpy (ascii, binary little and big endian).

Real files bend the format (trailing spaces in the header, ``float32`` type names,
``vertex_index`` instead of ``vertex_indices``); strict readers refuse them. Elements are
returned as ``{element: {property: array}}``; a list property comes back as a 2-D array
when every row has the same length (all triangles, say); ragged lists raise
:class:`PlyError` (callers fall back to trimesh, which triangulates).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}


class PlyError(ValueError):
    """The file is not a PLY file this reader understands; the message says why."""


def _parse_header(raw: bytes) -> tuple[str, list[tuple[str, int, list[tuple]]], int]:
    end = raw.find(b"end_header")
    if not raw.startswith(b"ply") or end < 0:
        raise PlyError("not a PLY file (no 'ply' magic or no 'end_header')")
    body_start = raw.find(b"\n", end) + 1
    if body_start == 0:
        raise PlyError("the header is not terminated by a newline")
    fmt, elements = None, []
    for line_no, line in enumerate(raw[:end].decode("ascii", "replace").splitlines(), start=1):
        words = line.split()
        if not words or words[0] in ("ply", "comment", "obj_info"):
            continue
        if words[0] == "format":
            fmt = words[1] if len(words) > 1 else None
        elif words[0] == "element" and len(words) == 3:
            elements.append((words[1], int(words[2]), []))
        elif words[0] == "property" and elements:
            if words[1] == "list" and len(words) == 5:
                if words[2] not in _TYPES or words[3] not in _TYPES:
                    raise PlyError(f"header line {line_no}: unknown type in {line.strip()!r}")
                elements[-1][2].append((words[4], "list", _TYPES[words[2]], _TYPES[words[3]]))
            elif len(words) == 3 and words[1] in _TYPES:
                elements[-1][2].append((words[2], "scalar", _TYPES[words[1]]))
            else:
                raise PlyError(f"header line {line_no}: cannot read {line.strip()!r}")
        else:
            raise PlyError(f"header line {line_no}: cannot read {line.strip()!r}")
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise PlyError(f"unknown format {fmt!r}")
    return fmt, elements, body_start


def read_ply(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """Read every element up to and including the first one this reader cannot bulk-parse."""
    raw = Path(path).read_bytes()
    fmt, elements, offset = _parse_header(raw)
    out: dict[str, dict] = {}
    if fmt == "ascii":
        tokens = np.array(raw[offset:].split(), dtype=object)
        pos = 0
        for name, count, props in elements:
            out[name], pos = _ascii_element(tokens, pos, count, props)
        return out
    order = "<" if fmt == "binary_little_endian" else ">"
    for name, count, props in elements:
        out[name], offset = _binary_element(raw, offset, count, props, order)
    return out


def _ascii_element(tokens, pos, count, props):
    lists = [p for p in props if p[1] == "list"]
    if count == 0:
        return {p[0]: np.zeros((0,), p[2] if p[1] == "scalar" else p[3]) for p in props}, pos
    if not lists:
        width = len(props)
        block = tokens[pos : pos + count * width]
        if len(block) < count * width:
            raise PlyError("the file ends before all its values")
        table = block.astype(np.float64).reshape(count, width)
        return {p[0]: table[:, i].astype(p[2]) for i, p in enumerate(props)}, pos + count * width
    if len(props) != 1:
        raise PlyError("ascii elements mixing lists and scalars are not supported")
    # A single list per row: constant length is the common case (triangles).
    k = int(tokens[pos])
    block = tokens[pos : pos + count * (k + 1)].astype(np.int64).reshape(count, k + 1)
    if (block[:, 0] != k).any():
        raise PlyError("faces with different vertex counts in an ascii PLY are not supported; triangulate first")
    return {props[0][0]: block[:, 1:].astype(props[0][3])}, pos + count * (k + 1)


def _binary_element(raw, offset, count, props, order):
    scalars_only = all(p[1] == "scalar" for p in props)
    if scalars_only:
        dtype = np.dtype([(p[0], order + p[2]) for p in props])
        end = offset + dtype.itemsize * count
        if end > len(raw):
            raise PlyError("the file ends before all its values")
        data = np.frombuffer(raw, dtype=dtype, count=count, offset=offset)
        return {p[0]: np.asarray(data[p[0]]).astype(p[2]) for p in props}, end
    if count == 0:
        return {p[0]: np.zeros((0, 3), p[3]) if p[1] == "list" else np.zeros(0, p[2]) for p in props}, offset
    # Assume every list has the length of the first row's, then verify.
    fields, cursor = [], offset
    for p in props:
        if p[1] == "scalar":
            fields.append((p[0], order + p[2]))
            cursor += np.dtype(p[2]).itemsize
        else:
            k = int(np.frombuffer(raw, dtype=order + p[2], count=1, offset=cursor)[0])
            fields += [(p[0] + "#n", order + p[2]), (p[0], order + p[3], (k,))]
            cursor += np.dtype(p[2]).itemsize + k * np.dtype(p[3]).itemsize
    dtype = np.dtype(fields)
    end = offset + dtype.itemsize * count
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=offset) if end <= len(raw) else None
    if data is None or any((data[p[0] + "#n"] != data[p[0]].shape[1]).any() for p in props if p[1] == "list"):
        raise PlyError("faces with different vertex counts in a binary PLY are not supported; triangulate first")
    return {p[0]: np.asarray(data[p[0]]).astype(p[3] if p[1] == "list" else p[2]) for p in props}, end
