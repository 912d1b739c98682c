# SPDX-License-Identifier: GPL-3.0-or-later
"""Read a body-model ``.pkl`` without letting it run code.

Pickle can call any function it names (``os.system`` included), and SMPL-family files come
from the internet. Before anything is unpickled, every global the file names is listed
from its opcodes (``pickletools``, which executes nothing); a file naming anything outside
a short list of array and container types is refused whole. The unpickler then enforces the
same list (``find_class``), so a name hidden from the scan is still refused when reached.

Allowed: numpy arrays, dtypes and scalars, scipy sparse matrices (SMPL's ``J_regressor``),
and the builtins pickle uses to rebuild them. Refused: chumpy objects (SMPL 1.0 files),
with a hint on converting the file, and everything else.
"""

from __future__ import annotations

import io
import pickle
import pickletools
from pathlib import Path

from ..errors import InputError

# (module, name) as written in the file; Python 2 module names included.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("copy_reg", "_reconstructor"),
    ("copyreg", "_reconstructor"),
    ("__builtin__", "object"),
    ("builtins", "object"),
    ("_codecs", "encode"),
    ("collections", "OrderedDict"),
}
_SPARSE = {"csc_matrix", "csr_matrix", "coo_matrix", "csc_array", "csr_array", "coo_array"}
_SPARSE_MODULES = {"scipy.sparse", "scipy.sparse.csc", "scipy.sparse.csr", "scipy.sparse.coo",
                   "scipy.sparse._csc", "scipy.sparse._csr", "scipy.sparse._coo"}

CHUMPY_HINT = (
    "This file keeps some arrays as chumpy objects (the SMPL 1.0 .pkl files do), which Recon does not "
    "unpickle. Convert it once to .npz in a Python that has chumpy installed:\n"
    "  import pickle, numpy as np\n"
    "  d = pickle.load(open('MODEL.pkl', 'rb'), encoding='latin1')\n"
    "  np.savez('MODEL.npz', **{k: np.asarray(v.r if hasattr(v, 'r') else v.toarray() if hasattr(v, 'toarray') "
    "else v) for k, v in d.items() if k in ('v_template', 'shapedirs', 'posedirs', 'J_regressor', 'weights', "
    "'kintree_table', 'f')})\n"
    "and point Recon at MODEL.npz. (SMPL's site also offers chumpy-free .npz and .pkl files.)"
)


def _allowed(module: str, name: str) -> bool:
    return (module, name) in _ALLOWED or (module in _SPARSE_MODULES and name in _SPARSE)


def globals_named(data: bytes) -> list[tuple[str, str]]:
    """Every (module, name) a pickle names, read from its opcodes without executing any.

    ``STACK_GLOBAL`` takes its two names from the strings pushed before it; a pickle that
    builds them any other way gets ``("?", "?")``, which is not allowed.
    """
    found: list[tuple[str, str]] = []
    pushed: list[str | None] = []  # what each opcode pushed, when it was a string
    memo: dict[int, str | None] = {}
    for opcode, arg, _pos in pickletools.genops(data):
        op = opcode.name
        if op in ("GLOBAL", "INST"):
            module, name = str(arg).split(" ", 1)
            found.append((module, name))
        elif op == "STACK_GLOBAL":
            if len(pushed) >= 2 and pushed[-1] is not None and pushed[-2] is not None:
                found.append((pushed[-2], pushed[-1]))
            else:
                found.append(("?", "?"))
        if op in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"):
            pushed.append(str(arg))
        elif op == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif op in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[int(arg)] = pushed[-1] if pushed else None
        elif op in ("GET", "BINGET", "LONG_BINGET"):
            pushed.append(memo.get(int(arg)))
        elif op not in ("PROTO", "FRAME"):
            pushed.append(None)
    return found


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if not _allowed(module, name):
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        if module in _SPARSE_MODULES:
            import scipy.sparse

            return getattr(scipy.sparse, name)
        if module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            import numpy.core.multiarray as multiarray

            return getattr(multiarray, name)
        if module in ("numpy.core.numeric", "numpy._core.numeric"):
            import numpy.core.numeric as numeric

            return getattr(numeric, name)
        if module in ("copy_reg", "copyreg"):
            import copyreg

            return copyreg._reconstructor
        if module in ("__builtin__", "builtins"):
            return object
        return super().find_class(module, name)


def load_restricted_pickle(path: Path):
    """The object stored in ``path``, if it holds only arrays and containers; InputError otherwise."""
    data = Path(path).read_bytes()
    try:
        names = globals_named(data)
    except Exception as exc:  # noqa: BLE001 - any parse failure means "not a pickle we read"
        raise InputError(f"{path} is not a readable pickle ({exc}).", "Give an SMPL-family .npz or .pkl file.") from exc
    refused = sorted({f"{m}.{n}" for m, n in names if not _allowed(m, n)})
    if refused:
        if any(name.startswith("chumpy") for name in refused):
            raise InputError(f"{path} stores chumpy objects ({', '.join(refused)}); nothing was unpickled.", CHUMPY_HINT)
        raise InputError(
            f"{path} is not a plain body-model file: its pickle names {', '.join(refused)}, which could run code. "
            "Nothing was unpickled.",
            "Use a body-model file from its official site (SMPL, SMPL-H, SMPL-X), preferably the .npz version.",
        )
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise InputError(f"{path} was refused while unpickling: {exc}.",
                         "Use the model's official .npz file.") from exc
    except Exception as exc:  # noqa: BLE001 - a malformed file, not a bug here
        raise InputError(f"{path} could not be read as a body model ({type(exc).__name__}: {exc}).",
                         "Use the model's official .npz file.") from exc
