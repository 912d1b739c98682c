# SPDX-License-Identifier: GPL-3.0-or-later
"""The MLPs of a training step, forward and backward, a block of rays at a time in one
numba kernel calling the BLAS that PyTorch ships (MKL's ``sgemm``).

:func:`.fused._chunk` runs the same computation as PyTorch operations on chunks of about
8,192 samples; this kernel is what the training step uses when PyTorch's library exports
``sgemm_`` (PyTorch's Linux x86-64 wheels: MKL), and :func:`available` says whether it does.
Why: a 64-wide layer's activations for 8,192 samples are 2 MB, four times a core's L2
cache, and the step's matrix products then run at about 45 GFLOP/s on this kind of core
against 70 to 80 when their operands are in the caches; smaller chunks of PyTorch
operations lose it again to each operation's overhead (tens of them per chunk, a few
microseconds each). A block of :data:`BLOCK_SAMPLES` samples keeps every activation of the
forward and backward in the L2 cache, and numba calls MKL directly, without PyTorch's
cost per operation. The same products as the PyTorch path, in the same float32 (the
3-wide colour layer, which MKL runs slowly, as numba loops); the tests compare the
gradients of both paths with autograd.

Layout: activations are sample-major (``[n, 64]`` rows, as the PyTorch path's), the
encoding feature-major (``[L * 2, N]``, read and written in place through the BLAS's
transposes). Samples the light does not reach (behind ``min_transmittance``) are left out
of the colour MLP and of every backward product, gathered into compact rows per block.
"""

from __future__ import annotations

import ctypes
import os

import numpy as np

from . import _kernels

BLOCK_SAMPLES = 512  # samples per block (rays of a block: BLOCK_SAMPLES // samples, at least 1)

_SYMBOL = "recon_nerf_sgemm"


def _mkl() -> tuple[int, object] | tuple[None, None]:
    """The address of MKL's ``sgemm_`` (the Fortran interface) in PyTorch's CPU library and
    its ``MKL_Set_Num_Threads_Local``, or Nones where PyTorch was built without MKL or does
    not export them."""
    try:
        import torch

        if not torch.backends.mkl.is_available():
            return None, None
        path = os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")
        if not os.path.exists(path):
            return None, None
        lib = ctypes.CDLL(path)
        sgemm, threads = getattr(lib, "sgemm_", None), getattr(lib, "MKL_Set_Num_Threads_Local", None)
        if sgemm is None or threads is None:
            return None, None
        threads.argtypes, threads.restype = [ctypes.c_int], ctypes.c_int
        return ctypes.cast(sgemm, ctypes.c_void_p).value, threads
    except (ImportError, OSError, AttributeError):
        return None, None


_ADDRESS, _SET_LOCAL_THREADS = _mkl() if _kernels.AVAILABLE else (None, None)


class one_thread:  # noqa: N801 - used as a context manager, like torch.no_grad
    """MKL runs on the calling thread alone inside ``with``: a thread that calls
    :func:`chunk_` is one of the step's workers. ``torch.set_num_threads(1)`` does not
    reach MKL in other threads: without this the kernel's products ran on MKL's own
    threads in each worker, and the step's MLP phase took 263 ms instead of 144 on 2 cores."""

    def __enter__(self) -> None:
        self.before = _SET_LOCAL_THREADS(1)

    def __exit__(self, *exc) -> None:
        _SET_LOCAL_THREADS(self.before)


def available() -> bool:
    """Whether the kernel can run: numba present and PyTorch's library exporting ``sgemm_``.
    ``RECON_NERF_BLAS_KERNEL=0`` in the environment turns it off (the PyTorch path runs)."""
    return _ADDRESS is not None and os.environ.get("RECON_NERF_BLAS_KERNEL", "1") != "0"


if _ADDRESS is not None:
    import llvmlite.binding as _llvm
    import numba
    from numba import types as _t

    _llvm.add_symbol(_SYMBOL, _ADDRESS)
    _p = _t.intp  # every argument of the Fortran interface is a pointer
    _sgemm = _t.ExternalFunction(_SYMBOL, _t.void(_p, _p, _p, _p, _p, _p, _p, _p, _p, _p, _p, _p, _p))

    _N, _T = 0, 1  # not transposed, transposed (indices into the flag characters)

    @numba.njit(cache=True, nogil=True, inline="always")
    def _mm(args, ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc):
        """Row-major ``C[m, n] = op(A) op(B) + beta C`` (pointers ``a``, ``b``, ``c``, row
        strides in elements; ``ta``, ``tb``: :data:`_N` or :data:`_T`) as the column-major
        ``C^T = op(B)^T op(A)^T``. ``args``: :func:`_scratch`'s array, which holds the
        arguments the Fortran interface takes by reference."""
        ints = args[:6]
        ints[0], ints[1], ints[2], ints[3], ints[4], ints[5] = n, m, k, ldb, lda, ldc
        args.view(np.float32)[7] = beta
        p = args.ctypes.data
        _sgemm(p + 32 + tb, p + 32 + ta, p, p + 4, p + 8, p + 24, b, p + 12, a, p + 16, p + 28, c, p + 20)

    @numba.njit(cache=True, nogil=True)
    def _scratch():
        """int32 [9]: m, n, k, lda, ldb, ldc at 0 to 5, alpha (1.0f) and beta at 6 and 7,
        the flags 'N' and 'T' in the bytes at 32 and 33."""
        args = np.zeros(9, np.int32)
        args.view(np.float32)[6] = 1.0
        flags = args.view(np.uint8)
        flags[32] = 78
        flags[33] = 84
        return args

    @numba.njit(cache=True, nogil=True, fastmath=True)
    def _relu_(x):
        """``max(x, 0)`` in place (C order), as ``x * (x > 0)``: LLVM vectorises the product;
        ``max`` or a select it turns into a conditional store, ten times slower."""
        flat = x.reshape(x.size)
        zero = np.float32(0.0)
        for i in range(flat.shape[0]):
            flat[i] *= np.float32(flat[i] > zero)

    @numba.njit(cache=True, nogil=True, fastmath=True)
    def _logits(h, w, out, n):
        """``out[:n] = h[:n] @ w.T`` for the 3 colour logits (a product only 3 wide, which
        the BLAS runs at a fifth of its speed): a sample's three dot products in one loop."""
        w0, w1, w2 = w[0], w[1], w[2]
        for i in range(n):
            row = h[i]
            a0 = a1 = a2 = np.float32(0.0)
            for c in range(row.shape[0]):
                v = row[c]
                a0 += v * w0[c]
                a1 += v * w1[c]
                a2 += v * w2[c]
            out[i, 0], out[i, 1], out[i, 2] = a0, a1, a2

    @numba.njit(cache=True, nogil=True, fastmath=True)
    def _logits_backward(d_logits, h, w, d_h, grad_w, n):
        """Backward of :func:`_logits` and of the ReLU before it: ``grad_w += d_logits[:n].T @
        h[:n]``, ``d_h[:n] = (d_logits[:n] @ w) * (h[:n] > 0)``, in one pass."""
        width = h.shape[1]
        acc = np.zeros((3, width), np.float32)
        g0, g1, g2 = acc[0], acc[1], acc[2]
        w0, w1, w2 = w[0], w[1], w[2]
        zero = np.float32(0.0)
        for i in range(n):
            row, out = h[i], d_h[i]
            e0, e1, e2 = d_logits[i, 0], d_logits[i, 1], d_logits[i, 2]
            for c in range(width):
                v = row[c]
                g0[c] += e0 * v
                g1[c] += e1 * v
                g2[c] += e2 * v
                out[c] = (e0 * w0[c] + e1 * w1[c] + e2 * w2[c]) * np.float32(v > zero)
        grad_w += acc

    @numba.njit(cache=True, nogil=True)
    def chunk_(encoded, grad_encoded, kept, dt, sh, background, target, w0, w1, wc0, wc1, wc2, g0, g1, gc0, gc1,
               gc2, ray_start, ray_end, min_transmittance, scale, block_rays):
        """Forward and backward of rays ``ray_start:ray_end`` (see the module's docstring),
        :func:`.fused._chunk`'s computation: adds into the weight gradients ``g0, g1``
        (density layers) and ``gc0, gc1, gc2`` (colour layers, float32, C order, shaped as
        the weights), writes the chunk's columns of ``grad_encoded [L * 2, N]`` (zero where
        the light does not reach) and of ``kept [N]``. Returns the summed squared error and
        the samples coloured.

        Weights (``[out, in]`` as ``nn.Linear``'s): ``w0 [H, L * 2]``, ``w1 [G, H]``,
        ``wc0 [H, 16 + G]`` (the direction's 16 spherical harmonics first), ``wc1 [H, H]``,
        ``wc2 [3, H]``. ``dt [R, S]``, ``sh [R, 16]``, ``background``/``target [R, 3]``."""
        n_total = encoded.shape[1]
        n_enc = encoded.shape[0]
        s = dt.shape[1]
        hidden = w0.shape[0]
        n_geo = w1.shape[0]
        n_sh = wc0.shape[1] - n_geo
        rows = block_rays * s
        args = _scratch()
        wc0_geo = wc0.ctypes.data + 4 * n_sh  # wc0[:, n_sh:], the geometry features' columns (row stride n_sh + G)
        h1 = np.empty((rows, hidden), np.float32)
        geo = np.empty((rows, n_geo), np.float32)
        h1_k = np.empty((rows, hidden), np.float32)
        geo_k = np.empty((rows, n_geo), np.float32)
        enc_k = np.empty((rows, n_enc), np.float32)
        hc1 = np.empty((rows, hidden), np.float32)
        hc2 = np.empty((rows, hidden), np.float32)
        d2 = np.empty((rows, hidden), np.float32)
        logits = np.empty((rows, 3), np.float32)
        d_geo = np.empty((rows, n_geo), np.float32)
        from_dir = np.empty((block_rays, hidden), np.float32)
        d_dir = np.empty((block_rays, hidden), np.float32)
        index = np.empty(rows, np.int64)
        ray_of = np.empty(rows, np.int64)
        d_x0 = np.empty(rows, np.float32)
        weights = np.empty((block_rays, s), np.float32)
        t_after = np.empty((block_rays, s), np.float32)
        t_final = np.empty(block_rays, np.float32)
        lit = np.empty(block_rays, np.int64)
        total_sq = 0.0
        coloured = 0
        for q0 in range(ray_start, ray_end, block_rays):
            q1 = min(ray_end, q0 + block_rays)
            r = q1 - q0
            n = r * s
            base = q0 * s
            enc_ptr = encoded.ctypes.data + 4 * base  # column `base` of [L * 2, N], row stride N
            sh_ptr = sh.ctypes.data + 4 * q0 * n_sh  # the block's rays' rows
            # density MLP, every sample
            _mm(args, _T, _T, n, hidden, n_enc, enc_ptr, n_total, w0.ctypes.data, n_enc, 0.0, h1.ctypes.data, hidden)
            _relu_(h1[:n])
            _mm(args, _N, _T, n, n_geo, hidden, h1.ctypes.data, hidden, w1.ctypes.data, hidden, 0.0, geo.ctypes.data,
                n_geo)
            x0 = geo[:n, 0]
            k = _kernels.transmittance_(x0, dt[q0:q1], min_transmittance, weights[:r], t_after[:r], t_final[:r],
                                        lit[:r])
            j = 0
            for ray in range(r):
                for i in range(s):
                    lit_here = i < lit[ray]
                    kept[base + ray * s + i] = lit_here
                    if lit_here:
                        index[j] = ray * s + i
                        ray_of[j] = ray
                        j += 1
            coloured += k
            every = k == n
            if k == 0:
                grad_encoded[:, base:base + n] = 0.0
                continue
            if every:
                geo_rows, h1_rows = geo, h1
            else:
                for i in range(k):
                    geo_k[i] = geo[index[i]]
                    h1_k[i] = h1[index[i]]
                geo_rows, h1_rows = geo_k, h1_k
            # colour MLP on the lit samples, its direction half once per ray
            _mm(args, _N, _T, r, hidden, n_sh, sh_ptr, n_sh, wc0.ctypes.data, n_sh + n_geo, 0.0,
                from_dir.ctypes.data, hidden)
            _mm(args, _N, _T, k, hidden, n_geo, geo_rows.ctypes.data, n_geo, wc0_geo, n_sh + n_geo,
                0.0, hc1.ctypes.data, hidden)
            zero = np.float32(0.0)
            for i in range(k):  # + the ray's direction half, then the ReLU
                row, bias = hc1[i], from_dir[ray_of[i]]
                for c in range(hidden):
                    v = row[c] + bias[c]
                    row[c] = v * np.float32(v > zero)
            _mm(args, _N, _T, k, hidden, hidden, hc1.ctypes.data, hidden, wc1.ctypes.data, hidden, 0.0,
                hc2.ctypes.data, hidden)
            _relu_(hc2[:k])
            _logits(hc2, wc2, logits, k)
            # colours, compositing, squared error, and their backward: the logits' gradient
            # replaces the logits, the lit samples' log-density gradient goes to d_x0
            total_sq += _kernels.composite_backward_(logits[:k], x0, dt[q0:q1], weights[:r], t_after[:r], t_final[:r],
                                                     lit[:r], background[q0:q1], target[q0:q1], scale, d_x0[:k])
            # colour MLP, backward
            _logits_backward(logits, hc2, wc2, d2, gc2, k)
            _mm(args, _T, _N, hidden, hidden, k, d2.ctypes.data, hidden, hc1.ctypes.data, hidden, 1.0,
                gc1.ctypes.data, hidden)
            d1 = hc2  # hc2 is no longer needed
            _mm(args, _N, _N, k, hidden, hidden, d2.ctypes.data, hidden, wc1.ctypes.data, hidden, 0.0, d1.ctypes.data,
                hidden)
            _kernels.relu_backward_(d1[:k], hc1[:k])
            _mm(args, _T, _N, hidden, n_geo, k, d1.ctypes.data, hidden, geo_rows.ctypes.data, n_geo, 1.0,
                gc0.ctypes.data + 4 * n_sh, n_sh + n_geo)
            d_dir[:r] = 0.0
            for i in range(k):
                ray = ray_of[i]
                for c in range(hidden):
                    d_dir[ray, c] += d1[i, c]
            _mm(args, _T, _N, hidden, n_sh, r, d_dir.ctypes.data, hidden, sh_ptr, n_sh, 1.0,
                gc0.ctypes.data, n_sh + n_geo)
            _mm(args, _N, _N, k, n_geo, hidden, d1.ctypes.data, hidden, wc0_geo, n_sh + n_geo, 0.0,
                d_geo.ctypes.data, n_geo)
            for i in range(k):
                d_geo[i, 0] += d_x0[i]
            # density MLP, backward (the lit samples only)
            _mm(args, _T, _N, n_geo, hidden, k, d_geo.ctypes.data, n_geo, h1_rows.ctypes.data, hidden, 1.0,
                g1.ctypes.data, hidden)
            d_h = d2  # d2 is no longer needed
            _mm(args, _N, _N, k, hidden, n_geo, d_geo.ctypes.data, n_geo, w1.ctypes.data, hidden, 0.0,
                d_h.ctypes.data, hidden)
            _kernels.relu_backward_(d_h[:k], h1_rows[:k])
            if every:
                _mm(args, _T, _T, hidden, n_enc, k, d_h.ctypes.data, hidden, enc_ptr, n_total, 1.0, g0.ctypes.data,
                    n_enc)
                _mm(args, _T, _T, n_enc, k, hidden, w0.ctypes.data, n_enc, d_h.ctypes.data, hidden, 0.0,
                    grad_encoded.ctypes.data + 4 * base, n_total)
            else:
                for f in range(n_enc):
                    for i in range(k):
                        enc_k[i, f] = encoded[f, base + index[i]]
                _mm(args, _T, _N, hidden, n_enc, k, d_h.ctypes.data, hidden, enc_k.ctypes.data, n_enc, 1.0,
                    g0.ctypes.data, n_enc)
                g_enc = enc_k  # enc_k is no longer needed
                _mm(args, _N, _N, k, n_enc, hidden, d_h.ctypes.data, hidden, w0.ctypes.data, n_enc, 0.0,
                    g_enc.ctypes.data, n_enc)
                grad_encoded[:, base:base + n] = 0.0
                for f in range(n_enc):
                    for i in range(k):
                        grad_encoded[f, base + index[i]] = g_enc[i, f]
        return total_sq, coloured
