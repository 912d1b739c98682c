# SPDX-License-Identifier: GPL-3.0-or-later
"""CPU kernels of the radiance field, compiled by numba: the hash-grid encoding forward and
backward, the sparse Adam step of the hash table, the compositing of a training step and its
backward, and the ray marcher that places samples in the occupancy grid's occupied cells.

Each kernel computes the same function as a PyTorch path (:mod:`.hashgrid`, :mod:`.render`)
that the tests compare it with (the compositing: :mod:`.fused`'s step against autograd).
Threads: the encoding's forward splits the points in ranges, its backward splits the levels
(each level's rows of the table belong to one thread, so the scatter needs no atomics);
both run while torch's own threads are idle.

Memory: the finer levels' tables are 4 MB each (2^19 rows of 2 float32), tens of MB in
all, so many lookups miss the caches. Both encoding kernels therefore work on blocks of 64
points: first the corner rows and weights of the whole block, prefetching each cache line
they need (LLVM's ``llvm.prefetch``, an intrinsic written here), then the lookups or the
scatter, by which time the lines are arriving together rather than one miss after another.
The points come as one row per axis (``[3, N]``) and the block's rows and weights are
computed corner by corner over the block's points, in uint32/int32 and float32 lanes: loops
without lookups that LLVM turns into SIMD, 8 points at a time. The features are
feature-major (``[L * 2, N]``), so that each level's pass reads and writes two contiguous
runs rather than 8 bytes of every 128-byte row (at 4096 x 64 samples on 2 cores, with the
uint32 hash: forward 70 to 45 ms, backward 70 to 47 ms). The sparse Adam step reads the
gradient a cache line (16 values) at a time and skips lines without a gradient, which in
training (a few thousand samples a step) is most of the table.

Instructions: a table row is a pair of floats, read or updated as one LLVM vector of two
(:func:`_corner_sum`, :func:`_corner_scatter`). Arrays in the hot loops are indexed from 0
or with unsigned indices: numba checks a signed index for a negative value, and LLVM then
loads and stores one value at a time instead of running the loop in SIMD.
"""

from __future__ import annotations

import math

import numpy as np

try:  # numba is optional: without it the PyTorch paths are used
    import numba
except ImportError:  # pragma: no cover - exercised only in environments without numba
    numba = None

AVAILABLE = numba is not None

if AVAILABLE:
    from llvmlite import ir as _ir
    from numba.core import cgutils as _cgutils
    from numba.core import types as _types
    from numba.extending import intrinsic as _intrinsic

    _F32 = _ir.FloatType()
    _I32 = _ir.IntType(32)
    _PAIR = _ir.VectorType(_F32, 2)  # a row of the table: its 2 features

    def _row_pointer(context, builder, table_type, table, row):
        """Pointer to ``table[row]`` of a C-contiguous ``[rows, 2] float32`` array, as a pair of
        floats; ``row`` is an int32 known to be >= 0 (zero-extended, no negative-index wrap)."""
        data = context.make_array(table_type)(context, builder, table).data
        offset = builder.mul(builder.zext(row, _ir.IntType(64)), _ir.Constant(_ir.IntType(64), 2))
        return builder.bitcast(builder.gep(data, [offset], inbounds=True), _PAIR.as_pointer())

    def _corner(context, builder, signature, args, c):
        """Row and weight of corner ``c`` of point ``j`` from the block's ``rows`` and ``weights``
        (``args[1:4]``)."""
        _, rows_type, weights_type = signature.args[:3]
        _, rows, weights, j = args[:4]
        index = [context.get_constant(_types.intp, c), j]
        row = builder.load(_cgutils.get_item_pointer(
            context, builder, rows_type, context.make_array(rows_type)(context, builder, rows), index))
        weight = builder.load(_cgutils.get_item_pointer(
            context, builder, weights_type, context.make_array(weights_type)(context, builder, weights), index))
        both = builder.insert_element(_ir.Constant(_PAIR, None), weight, _ir.Constant(_I32, 0))
        return row, builder.shuffle_vector(both, _ir.Constant(_PAIR, None), _ir.Constant(_ir.VectorType(_I32, 2),
                                                                                          [0, 0]))

    def _is_table(table) -> bool:
        """A C-contiguous 2-D float32 array: what :func:`_row_pointer` reads by address."""
        return (isinstance(table, _types.Array) and table.layout == "C" and table.ndim == 2
                and table.dtype == _types.float32)

    def _table_typed(table, rows, weights) -> bool:
        return _is_table(table) and rows.dtype == _types.int32 and weights.dtype == _types.float32

    @_intrinsic
    def _corner_sum(typingctx, table, rows, weights, j):
        """``sum_c weights[c, j] * table[rows[c, j]]`` over the 8 corners, as the 2 features'
        ``(a0, a1)``. Each row is one 8-byte load and one multiply-add of the pair; written as
        LLVM vectors because numba's complex64 arithmetic (one load per row, as before) costs
        a full complex product, and its int32 index a negative-index check: 0.82x the
        encoding forward's time, the same bits."""
        if not _table_typed(table, rows, weights):
            return None

        def codegen(context, builder, signature, args):
            total = _ir.Constant(_PAIR, [_ir.Constant(_F32, 0.0)] * 2)
            for c in range(8):
                row, weight = _corner(context, builder, signature, args, c)
                pair = builder.load(_row_pointer(context, builder, signature.args[0], args[0], row), align=4)
                total = builder.fadd(total, builder.fmul(pair, weight))
            return context.make_tuple(builder, signature.return_type,
                                      [builder.extract_element(total, _ir.Constant(_I32, k)) for k in (0, 1)])

        return _types.UniTuple(_types.float32, 2)(table, rows, weights, j), codegen

    @_intrinsic
    def _corner_scatter(typingctx, grad_table, rows, weights, j, g0, g1):
        """``grad_table[rows[c, j]] += weights[c, j] * (g0, g1)`` for the 8 corners, a row at a
        time as one load, multiply-add and store of the pair (see :func:`_corner_sum`:
        0.72x the encoding backward's time, the same bits)."""
        if not _table_typed(grad_table, rows, weights) or g0 != _types.float32 or g1 != _types.float32:
            return None

        def codegen(context, builder, signature, args):
            grad = builder.insert_element(_ir.Constant(_PAIR, None), args[4], _ir.Constant(_I32, 0))
            grad = builder.insert_element(grad, args[5], _ir.Constant(_I32, 1))
            for c in range(8):
                row, weight = _corner(context, builder, signature, args, c)
                pointer = _row_pointer(context, builder, signature.args[0], args[0], row)
                builder.store(builder.fadd(builder.load(pointer, align=4), builder.fmul(weight, grad)), pointer,
                              align=4)
            return context.get_dummy_value()

        return _types.void(grad_table, rows, weights, j, g0, g1), codegen

    def _make_prefetch(write: int):
        """``prefetch(table, row)``: LLVM's ``llvm.prefetch`` of ``table[row]`` (a hint, no
        effect on results): the hash table's rows are scattered over tens of MB, so each
        lookup misses the caches; asking for a block of rows before using them keeps many
        misses in flight instead of one or two."""

        @_intrinsic
        def prefetch(typingctx, table, row):
            if not _is_table(table):
                return None

            def codegen(context, builder, signature, args):
                pointer = builder.bitcast(_row_pointer(context, builder, signature.args[0], args[0], args[1]),
                                          _ir.IntType(8).as_pointer())
                fnty = _ir.FunctionType(_ir.VoidType(), [pointer.type, _I32, _I32, _I32])
                fn = _cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
                builder.call(fn, [pointer, _ir.Constant(_I32, write), _ir.Constant(_I32, 3), _ir.Constant(_I32, 1)])
                return context.get_dummy_value()

            return _types.void(table, _types.int32), codegen

        return prefetch

    _prefetch_read = _make_prefetch(0)
    _prefetch_write = _make_prefetch(1)

    BLOCK = 64  # points whose corner rows and weights are computed (and prefetched) before the lookups

    @numba.njit(cache=True, nogil=True, inline="always")
    def _block_corners(xt, b0, b1, scale, base, size, is_dense, res, rows, weights, table, write):
        """Rows ``[8, BLOCK] int32`` and trilinear weights ``[8, BLOCK]`` (corner-major) of points
        ``b0:b1`` of the coordinates ``xt [3, N]``, at one level. Each step is a loop over the
        block's points with no lookups in it, which the compiler turns into SIMD (8 points at a
        time: the hash is tiny-cuda-nn's, in uint32 arithmetic, so that the integer lanes are
        as wide as the float ones); then each distinct cache line of ``table`` the block needs
        is prefetched."""
        half = np.float32(0.5)
        one = np.float32(1.0)
        m = b1 - b0
        # the block's coordinates as views indexed from 0: xt[0, b0 + j] was read one float at
        # a time (numba's negative-index check on b0 + j kept LLVM from loading runs of them)
        xs, ys, zs = xt[0, b0:b1], xt[1, b0:b1], xt[2, b0:b1]
        if is_dense:
            sy = np.uint32(res)
            sz = np.uint32(res * res)
        else:
            sy = np.uint32(2654435761)
            sz = np.uint32(805459861)
        usize = np.uint32(size)
        mask = np.uint32(size - 1)
        first = np.int32(base)
        pow2 = size & (size - 1) == 0
        for j in range(m):
            px = xs[j] * scale + half
            py = ys[j] * scale + half
            pz = zs[j] * scale + half
            fx, fy, fz = px - np.floor(px), py - np.floor(py), pz - np.floor(pz)
            ux, uy, uz = one - fx, one - fy, one - fz
            weights[0, j] = ux * uy * uz
            weights[1, j] = fx * uy * uz
            weights[2, j] = ux * fy * uz
            weights[3, j] = fx * fy * uz
            weights[4, j] = ux * uy * fz
            weights[5, j] = fx * uy * fz
            weights[6, j] = ux * fy * fz
            weights[7, j] = fx * fy * fz
        # the corners' rows, tiny-cuda-nn's index % size (a dense index is below 2 size: one subtraction)
        if is_dense:
            for j in range(m):
                x0 = np.uint32(np.int32(np.floor(xs[j] * scale + half)))
                y0 = np.uint32(np.uint32(np.int32(np.floor(ys[j] * scale + half))) * sy)
                z0 = np.uint32(np.uint32(np.int32(np.floor(zs[j] * scale + half))) * sz)
                x1, y1, z1 = np.uint32(x0 + np.uint32(1)), np.uint32(y0 + sy), np.uint32(z0 + sz)
                v = np.uint32(x0 + y0 + z0)
                rows[0, j] = first + np.int32(v - usize if v >= usize else v)
                v = np.uint32(x1 + y0 + z0)
                rows[1, j] = first + np.int32(v - usize if v >= usize else v)
                v = np.uint32(x0 + y1 + z0)
                rows[2, j] = first + np.int32(v - usize if v >= usize else v)
                v = np.uint32(x1 + y1 + z0)
                rows[3, j] = first + np.int32(v - usize if v >= usize else v)
                v = np.uint32(x0 + y0 + z1)
                rows[4, j] = first + np.int32(v - usize if v >= usize else v)
                v = np.uint32(x1 + y0 + z1)
                rows[5, j] = first + np.int32(v - usize if v >= usize else v)
                v = np.uint32(x0 + y1 + z1)
                rows[6, j] = first + np.int32(v - usize if v >= usize else v)
                v = np.uint32(x1 + y1 + z1)
                rows[7, j] = first + np.int32(v - usize if v >= usize else v)
        elif pow2:
            for j in range(m):
                x0 = np.uint32(np.int32(np.floor(xs[j] * scale + half)))
                y0 = np.uint32(np.uint32(np.int32(np.floor(ys[j] * scale + half))) * sy)
                z0 = np.uint32(np.uint32(np.int32(np.floor(zs[j] * scale + half))) * sz)
                x1, y1, z1 = np.uint32(x0 + np.uint32(1)), np.uint32(y0 + sy), np.uint32(z0 + sz)
                rows[0, j] = first + np.int32((x0 ^ y0 ^ z0) & mask)
                rows[1, j] = first + np.int32((x1 ^ y0 ^ z0) & mask)
                rows[2, j] = first + np.int32((x0 ^ y1 ^ z0) & mask)
                rows[3, j] = first + np.int32((x1 ^ y1 ^ z0) & mask)
                rows[4, j] = first + np.int32((x0 ^ y0 ^ z1) & mask)
                rows[5, j] = first + np.int32((x1 ^ y0 ^ z1) & mask)
                rows[6, j] = first + np.int32((x0 ^ y1 ^ z1) & mask)
                rows[7, j] = first + np.int32((x1 ^ y1 ^ z1) & mask)
        else:
            for j in range(m):
                x0 = np.uint32(np.int32(np.floor(xs[j] * scale + half)))
                y0 = np.uint32(np.uint32(np.int32(np.floor(ys[j] * scale + half))) * sy)
                z0 = np.uint32(np.uint32(np.int32(np.floor(zs[j] * scale + half))) * sz)
                x1, y1, z1 = np.uint32(x0 + np.uint32(1)), np.uint32(y0 + sy), np.uint32(z0 + sz)
                rows[0, j] = first + np.int32(np.uint32(x0 ^ y0 ^ z0) % usize)
                rows[1, j] = first + np.int32(np.uint32(x1 ^ y0 ^ z0) % usize)
                rows[2, j] = first + np.int32(np.uint32(x0 ^ y1 ^ z0) % usize)
                rows[3, j] = first + np.int32(np.uint32(x1 ^ y1 ^ z0) % usize)
                rows[4, j] = first + np.int32(np.uint32(x0 ^ y0 ^ z1) % usize)
                rows[5, j] = first + np.int32(np.uint32(x1 ^ y0 ^ z1) % usize)
                rows[6, j] = first + np.int32(np.uint32(x0 ^ y1 ^ z1) % usize)
                rows[7, j] = first + np.int32(np.uint32(x1 ^ y1 ^ z1) % usize)
        for c in range(0, 8, 2):  # x-neighbours share a line
            for j in range(m):
                if write:
                    _prefetch_write(table, rows[c, j])
                else:
                    _prefetch_read(table, rows[c, j])

    @numba.njit(cache=True, nogil=True, parallel=True)
    def _encode_forward(xt, table, offsets, scales, resolutions, dense, out, n_workers):
        """F = 2, points ``xt [3, N]``, features ``out [L * 2, N]`` (feature-major: each level's
        pass writes two contiguous runs). Each worker takes a contiguous range of points and
        runs through it once per level (one level's table at a time stays in cache), a block
        of points at a time: their corner rows and weights first (in SIMD, the lines
        prefetched), then the lookups."""
        n = xt.shape[1]
        n_levels = scales.shape[0]
        per_worker = ((n + n_workers - 1) // n_workers + BLOCK - 1) // BLOCK * BLOCK
        for worker in numba.prange(n_workers):
            rows = np.empty((8, BLOCK), np.int32)
            weights = np.empty((8, BLOCK), np.float32)
            start = worker * per_worker
            end = min(n, start + per_worker)
            for level in range(n_levels):
                base = offsets[level]
                out0 = out[2 * level]
                out1 = out[2 * level + 1]
                for b0 in range(start, end, BLOCK):
                    b1 = min(end, b0 + BLOCK)
                    _block_corners(xt, b0, b1, scales[level], base, offsets[level + 1] - base, dense[level],
                                   resolutions[level], rows, weights, table, False)
                    block0, block1 = out0[b0:b1], out1[b0:b1]  # indexed from 0 (see _block_corners)
                    for j in range(b1 - b0):
                        block0[j], block1[j] = _corner_sum(table, rows, weights, j)

    LINE = 16  # float32 values in a cache line: the sparse Adam step's unit of skipping

    @numba.njit(cache=True, nogil=True, inline="always")
    def _line_touched(grad, start, end):
        """Whether ``grad[start:end]`` (at most a line) has a value that is not 0."""
        zero = np.float32(0.0)
        touched = False
        if end - start == LINE:  # a whole line: a loop of fixed length
            first = np.uint64(start)
            for i in range(LINE):
                touched |= grad[first + np.uint64(i)] != zero
        else:
            for i in range(np.uint64(start), np.uint64(end)):
                touched |= grad[i] != zero
        return touched

    @numba.njit(cache=True, nogil=True, inline="always")
    def _adam_run(param, grad, exp_avg, exp_avg_sq, start, end, beta1, beta2, rate, inv_c2, epsilon):
        """Adam on entries ``start:end``, zeroing their gradient; entries whose gradient is 0
        keep their values (branch-free, so the loop runs in SIMD). The indices are unsigned:
        with signed ones numba's negative-index check made LLVM read and write one value at
        a time (the line-by-line loop this replaces took 2.2x as long at a full gradient)."""
        zero = np.float32(0.0)
        keep1, keep2 = np.float32(1.0) - beta1, np.float32(1.0) - beta2
        for i in range(np.uint64(start), np.uint64(end)):
            g = grad[i]
            t = g != zero
            m = beta1 * exp_avg[i] + keep1 * g
            v = beta2 * exp_avg_sq[i] + keep2 * g * g
            p = param[i] - rate * m / (np.sqrt(v * inv_c2) + epsilon)
            exp_avg[i] = m if t else exp_avg[i]
            exp_avg_sq[i] = v if t else exp_avg_sq[i]
            param[i] = p if t else param[i]
            grad[i] = zero

    @numba.njit(cache=True, nogil=True, inline="always")
    def _adam_span(param, grad, exp_avg, exp_avg_sq, start, end, beta1, beta2, rate, inv_c2, epsilon):
        """Adam on flat entries ``start:end`` (see :func:`_sparse_adam`): lines without a
        gradient are skipped, each run of lines with one is updated in one loop."""
        s = start
        while s < end:
            e = min(end, s + LINE)
            if _line_touched(grad, s, e):
                while e < end and _line_touched(grad, e, min(end, e + LINE)):
                    e = min(end, e + LINE)
                _adam_run(param, grad, exp_avg, exp_avg_sq, s, e, beta1, beta2, rate, inv_c2, epsilon)
            s = e

    @numba.njit(cache=True, nogil=True, parallel=True)
    def _encode_backward(xt, grad_out, offsets, scales, resolutions, dense, grad_table, n_workers):
        """F = 2, points ``xt [3, N]``, ``grad_out [L * 2, N]``. Each worker owns every
        ``n_workers``-th level (its rows of the table), so the scatter needs no atomics;
        blocks of points as in the forward."""
        n = xt.shape[1]
        n_levels = scales.shape[0]
        for worker in numba.prange(n_workers):
            rows = np.empty((8, BLOCK), np.int32)
            weights = np.empty((8, BLOCK), np.float32)
            for level in range(worker, n_levels, n_workers):
                base = offsets[level]
                grad0 = grad_out[2 * level]
                grad1 = grad_out[2 * level + 1]
                for b0 in range(0, n, BLOCK):
                    b1 = min(n, b0 + BLOCK)
                    _block_corners(xt, b0, b1, scales[level], base, offsets[level + 1] - base, dense[level],
                                   resolutions[level], rows, weights, grad_table, True)
                    block0, block1 = grad0[b0:b1], grad1[b0:b1]  # indexed from 0 (see _block_corners)
                    for j in range(b1 - b0):
                        _corner_scatter(grad_table, rows, weights, j, block0[j], block1[j])

    @numba.njit(cache=True, nogil=True, parallel=True)
    def _sparse_adam(param, grad, exp_avg, exp_avg_sq, lr, b1, b2, eps, c1, c2):
        """float32 arithmetic; a cache line of gradients (16 values) that is all zero is
        skipped without touching the other arrays; runs of lines with a gradient are updated
        branch-free (vectorised), entries with a zero gradient keep their values."""
        n = param.shape[0]
        chunk = 1 << 16
        beta1, beta2 = np.float32(b1), np.float32(b2)
        rate, inv_c2, epsilon = np.float32(lr / c1), np.float32(1.0 / c2), np.float32(eps)
        for c in numba.prange((n + chunk - 1) // chunk):
            _adam_span(param, grad, exp_avg, exp_avg_sq, c * chunk, min(n, (c + 1) * chunk), beta1, beta2, rate,
                       inv_c2, epsilon)

    @numba.njit(cache=True, nogil=True)
    def relu_backward_(grad, activation):
        """``grad[activation <= 0] = 0`` in place on 2-D C-contiguous float32 arrays (one thread;
        called from the training step's worker threads, the GIL released)."""
        g = grad.ravel()
        a = activation.ravel()
        zero = np.float32(0.0)
        for i in range(g.shape[0]):
            g[i] = g[i] if a[i] > zero else zero


    @numba.njit(cache=True, nogil=True)
    def transmittance_(x0, dt, min_transmittance, weights, t_after, t_final, lit):
        """Forward of the compositing, ray by ray (one thread, the GIL released): from the
        log-densities ``x0 [R * S]`` (a column view is fine) and ``dt [R, S]``, each sample's
        ``weights`` ``T_i (1 - exp(-tau_i))`` and ``t_after`` ``T_{i+1}`` ``[R, S]``, each ray's
        ``t_final [R]`` and ``lit [R]``, the number of its samples the light reaches (``T_i``
        above ``min_transmittance``: a prefix; those behind get no density), in float32.
        Returns the samples lit in all."""
        n_rays, n_samples = dt.shape
        total = 0
        for r in range(n_rays):
            csum = np.float32(0.0)
            before = np.float32(1.0)  # T_i
            k = 0
            for i in range(n_samples):
                if before > min_transmittance:
                    csum += np.exp(x0[r * n_samples + i]) * dt[r, i]
                    after = np.exp(-csum)
                    weights[r, i] = before - after
                    before = after
                    k += 1
                else:
                    weights[r, i] = np.float32(0.0)
                t_after[r, i] = before
            t_final[r] = before
            lit[r] = k
            total += k
        return total

    @numba.njit(cache=True, nogil=True)
    def composite_backward_(logits, x0, dt, weights, t_after, t_final, lit, background, target, scale, d_x0):
        """The rest of the compositing and its backward, ray by ray: the colours
        ``sigmoid(logits)`` of the lit samples (``logits [K, 3]``, the rays' lit prefixes one
        after another), the rendered colour against ``target`` (loss ``scale * sum err^2 / 2``),
        then ``dC/dtau_i = T_{i+1} c_i - S_i`` with ``S_i`` (all composited behind sample ``i``,
        the background included) summed from the back. Writes the logits' gradient into
        ``logits`` and each lit sample's log-density gradient (through ``trunc_exp``) into
        ``d_x0 [K]``; returns the summed squared error."""
        n_rays, n_samples = dt.shape
        colour = np.empty((n_samples, 3), np.float32)
        one = np.float32(1.0)
        total = 0.0
        start = 0
        for r in range(n_rays):
            k = lit[r]
            c0 = t_final[r] * background[r, 0]
            c1 = t_final[r] * background[r, 1]
            c2 = t_final[r] * background[r, 2]
            b0, b1, b2 = c0, c1, c2
            for i in range(k):
                w = weights[r, i]
                for c in range(3):
                    colour[i, c] = one / (one + np.exp(-logits[start + i, c]))
                c0 += w * colour[i, 0]
                c1 += w * colour[i, 1]
                c2 += w * colour[i, 2]
            e0, e1, e2 = c0 - target[r, 0], c1 - target[r, 1], c2 - target[r, 2]
            total += e0 * e0 + e1 * e1 + e2 * e2
            g0, g1, g2 = e0 * scale, e1 * scale, e2 * scale
            for i in range(k - 1, -1, -1):  # b: what lies behind sample i
                w = weights[r, i]
                a = t_after[r, i]
                q0, q1, q2 = colour[i, 0], colour[i, 1], colour[i, 2]
                d_tau = (a * q0 - b0) * g0 + (a * q1 - b1) * g1 + (a * q2 - b2) * g2
                b0 += w * q0
                b1 += w * q1
                b2 += w * q2
                d_x0[start + i] = d_tau * dt[r, i] * np.exp(min(x0[r * n_samples + i], np.float32(15.0)))
                logits[start + i, 0] = w * g0 * q0 * (one - q0)
                logits[start + i, 1] = w * g1 * q1 * (one - q1)
                logits[start + i, 2] = w * g2 * q2 * (one - q2)
            start += k
        return total


def _workers(limit: int) -> int:
    return max(1, min(numba.get_num_threads(), limit))


def encode_forward(x, table, offsets, scales, resolutions, dense):
    """Hash-grid features of ``x [N, 3] float32``, feature-major: ``[L * 2, N] float32``."""
    xt = np.ascontiguousarray(x.T)  # [3, N]: the corners are computed a run of points per axis at a time
    out = np.empty((2 * len(scales), xt.shape[1]), np.float32)
    encode_forward_t(xt, table, offsets, scales, resolutions, dense, out)
    return out


def encode_forward_t(xt, table, offsets, scales, resolutions, dense, out, workers=0) -> None:
    """:func:`encode_forward` with the points as ``xt [3, N]``, into ``out [L * 2, N]``
    (``workers``: 0 for numba's threads, fewer for small batches)."""
    _encode_forward(xt, table, offsets, scales, resolutions, dense, out,
                    workers or _workers(max(1, xt.shape[1] // 1024)))


def encode_backward(x, grad_out, offsets, scales, resolutions, dense, grad_table) -> None:
    """Adds d(loss)/d(table) into ``grad_table [rows, 2] float32`` given ``grad_out [L * 2, N]``."""
    encode_backward_t(np.ascontiguousarray(x.T), grad_out, offsets, scales, resolutions, dense, grad_table)


def encode_backward_t(xt, grad_out, offsets, scales, resolutions, dense, grad_table, workers=0) -> None:
    """:func:`encode_backward` with the points as ``xt [3, N]`` (``workers``: 0 for numba's threads)."""
    _encode_backward(xt, np.ascontiguousarray(grad_out), offsets, scales, resolutions, dense, grad_table,
                     workers or _workers(len(scales)))


def sparse_adam(param, grad, exp_avg, exp_avg_sq, lr, b1, b2, eps, c1, c2) -> None:
    """Adam on flat float32 arrays, in place, skipping zero gradients; zeroes ``grad``."""
    _sparse_adam(param, grad, exp_avg, exp_avg_sq, float(lr), float(b1), float(b2), float(eps), float(c1), float(c2))


if AVAILABLE:

    @numba.njit(cache=True, nogil=True, inline="always")
    def _occupied(ox, oy, oz, dx, dy, dz, t, contracted, cx, cy, cz, hx, hy, hz, bits, res):
        """Whether the grid cell holding the point at ``t`` along the ray is occupied."""
        yx = (ox + t * dx - cx) / hx
        yy = (oy + t * dy - cy) / hy
        yz = (oz + t * dz - cz) / hz
        if contracted:
            n = max(abs(yx), max(abs(yy), abs(yz)))
            if n > 1.0:
                k = (2.0 - 1.0 / n) / n
                yx, yy, yz = yx * k, yy * k, yz * k
            ux, uy, uz = yx * 0.25 + 0.5, yy * 0.25 + 0.5, yz * 0.25 + 0.5
        else:
            ux, uy, uz = yx * 0.5 + 0.5, yy * 0.5 + 0.5, yz * 0.5 + 0.5
        if ux < 0.0 or uy < 0.0 or uz < 0.0 or ux > 1.0 or uy > 1.0 or uz > 1.0:
            return False
        ix = min(int(ux * res), res - 1)
        iy = min(int(uy * res), res - 1)
        iz = min(int(uz * res), res - 1)
        return bits[ix, iy, iz] != 0

    @numba.njit(cache=True, nogil=True, parallel=True)
    def _sample_occupied(origins, dirs, t_near, t_mid, t_far, fine_step, n_outer, contracted, center, half, bits,
                         jitter, out_t, out_dt, out_count, max_steps):
        n_rays = origins.shape[0]
        n_samples = jitter.shape[1]
        res = bits.shape[0]
        cx, cy, cz = center[0], center[1], center[2]
        hx, hy, hz = half[0], half[1], half[2]
        chunk = 256
        for c in numba.prange((n_rays + chunk - 1) // chunk):
            starts = np.empty(max_steps, np.float64)
            lengths = np.empty(max_steps, np.float64)
            for r in range(c * chunk, min(n_rays, (c + 1) * chunk)):
                ox, oy, oz = origins[r, 0], origins[r, 1], origins[r, 2]
                dx, dy, dz = dirs[r, 0], dirs[r, 1], dirs[r, 2]
                k = 0
                ta, tb = t_near[r], t_mid[r]
                if tb > ta:  # linear part: equal steps of about fine_step
                    m = min(max_steps, int(math.ceil((tb - ta) / fine_step)))
                    step = (tb - ta) / m
                    for i in range(m):
                        t0 = ta + i * step
                        if _occupied(ox, oy, oz, dx, dy, dz, t0 + 0.5 * step, contracted, cx, cy, cz, hx, hy, hz,
                                     bits, res):
                            starts[k] = t0
                            lengths[k] = step
                            k += 1
                tc = t_far[r]
                if contracted and tc > tb and n_outer > 0:  # outer part: equal steps in 1 / t
                    a, b = 1.0 / max(tb, 1e-9), 1.0 / tc
                    for j in range(n_outer):
                        if k >= max_steps:
                            break
                        t0 = 1.0 / (a + (b - a) * j / n_outer)
                        t1 = 1.0 / (a + (b - a) * (j + 1) / n_outer)
                        if _occupied(ox, oy, oz, dx, dy, dz, 0.5 * (t0 + t1), contracted, cx, cy, cz, hx, hy, hz,
                                     bits, res):
                            starts[k] = t0
                            lengths[k] = t1 - t0
                            k += 1
                out_count[r] = k
                if k == 0:
                    for j in range(n_samples):
                        out_t[r, j] = 0.0
                        out_dt[r, j] = 0.0
                    continue
                per = k / n_samples
                for j in range(n_samples):
                    q = (j + jitter[r, j]) * per
                    i = min(int(q), k - 1)
                    out_t[r, j] = starts[i] + (q - i) * lengths[i]
                    out_dt[r, j] = lengths[i] * per


def sample_occupied(origins, dirs, t_near, t_mid, t_far, fine_step, n_outer, contracted, center, half, bits, jitter,
                    max_steps):
    """See :func:`backend.nerf.render.sample_occupied`; numpy arrays, float32 rays."""
    n_rays, n_samples = jitter.shape
    out_t = np.empty((n_rays, n_samples), np.float32)
    out_dt = np.empty((n_rays, n_samples), np.float32)
    out_count = np.empty(n_rays, np.int64)
    _sample_occupied(origins, dirs, t_near, t_mid, t_far, float(fine_step), int(n_outer), bool(contracted),
                     np.asarray(center, np.float64), np.asarray(half, np.float64), bits, jitter, out_t, out_dt,
                     out_count, int(max_steps))
    return out_t, out_dt, out_count


if AVAILABLE:

    @numba.njit(cache=True, nogil=True, parallel=True)
    def _visible(points, Ks, w2cs, sizes, min_depth, out):
        n = points.shape[0]
        n_cams = Ks.shape[0]
        chunk = 4096
        for c in numba.prange((n + chunk - 1) // chunk):
            for i in range(c * chunk, min(n, (c + 1) * chunk)):
                px, py, pz = points[i, 0], points[i, 1], points[i, 2]
                seen = False
                for k in range(n_cams):
                    z = w2cs[k, 2, 0] * px + w2cs[k, 2, 1] * py + w2cs[k, 2, 2] * pz + w2cs[k, 2, 3]
                    if z <= min_depth:
                        continue
                    x = w2cs[k, 0, 0] * px + w2cs[k, 0, 1] * py + w2cs[k, 0, 2] * pz + w2cs[k, 0, 3]
                    y = w2cs[k, 1, 0] * px + w2cs[k, 1, 1] * py + w2cs[k, 1, 2] * pz + w2cs[k, 1, 3]
                    u = Ks[k, 0, 0] * x / z + Ks[k, 0, 1] * y / z + Ks[k, 0, 2]
                    v = Ks[k, 1, 1] * y / z + Ks[k, 1, 2]
                    if u >= 0.0 and v >= 0.0 and u <= sizes[k, 0] and v <= sizes[k, 1]:
                        seen = True
                        break
                out[i] = seen


def visible(points, Ks, w2cs, sizes, min_depth):
    """Whether any camera sees each point ``[N, 3]`` (in front of ``min_depth``, inside its image)."""
    out = np.zeros(points.shape[0], np.bool_)
    _visible(np.ascontiguousarray(points, np.float64), np.ascontiguousarray(Ks, np.float64),
             np.ascontiguousarray(w2cs, np.float64), np.ascontiguousarray(sizes, np.float64), float(min_depth), out)
    return out
