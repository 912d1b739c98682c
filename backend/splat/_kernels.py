# SPDX-License-Identifier: GPL-3.0-or-later
"""CPU kernels of the tile rasterizer, compiled by numba: tile binning, front-to-back alpha
compositing and its backward pass.

The kernels work on flattened per-camera Gaussians (``f = camera * N + gaussian``) in
float32 and never see autograd; :mod:`.rasterize` wraps them in a
``torch.autograd.Function`` and keeps an eager-PyTorch path that computes the same function
(tests compare the two, and both with the dense reference in :mod:`.reference`).

Compositing follows 3DGS: pixel centres at ``x + 0.5``; ``alpha = min(0.99, o * exp(power))``
with ``power = -0.5 (a dx^2 + c dy^2) - b dx dy`` (conic ``(a, b, c)``, ``d = mean - pixel``);
a Gaussian is skipped where ``power > 0`` or ``alpha < 1/255``; a pixel stops before the
Gaussian that would take its transmittance to ``1e-4`` or below. Tiles are cut into runs of
about equal estimated cost that a few Python threads take in turn (the kernels release the
GIL); each tile writes its own pixels and its own intersections' gradients, so no two
threads write the same memory.
"""

from __future__ import annotations

import itertools
import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

try:  # numba is optional: without it the eager-PyTorch path is used
    import numba
except ImportError:  # pragma: no cover - exercised only in environments without numba
    numba = None

AVAILABLE = numba is not None

ALPHA_MIN = np.float32(1.0 / 255.0)
ALPHA_MAX = np.float32(0.99)
T_MIN = np.float32(1e-4)

HALF = np.float32(0.5)
ONE = np.float32(1.0)
ZERO = np.float32(0.0)

if AVAILABLE:

    @numba.njit(cache=True, nogil=True, inline="always")
    def _power_min(o):
        """Below this power ``alpha < 1/255`` for sure (a margin: the exact test decides)."""
        return -math.log(255.0 * max(o, 1e-30)) - 1e-3

    @numba.njit(cache=True, nogil=True, inline="always")
    def _row_range(mx, dy, a, b, c, power_min, x0, x1):
        """The pixels of a row (``x0..x1``, clipped) whose power may reach ``power_min``:
        the roots of ``a dx^2 + 2 b dy dx + c dy^2 + 2 power_min = 0``, widened a little."""
        a64, b64, c64, dy64 = np.float64(a), np.float64(b), np.float64(c), np.float64(dy)
        disc = b64 * b64 * dy64 * dy64 - a64 * (c64 * dy64 * dy64 + 2.0 * power_min)
        if disc < 0.0 or a64 <= 0.0:
            return x0, x0 - 1
        root = math.sqrt(disc)
        lo = (-b64 * dy64 - root) / a64  # dx = mean - pixel centre
        hi = (-b64 * dy64 + root) / a64
        xa = max(x0, int(math.ceil(np.float64(mx) - hi - 0.5 - 1e-3)))
        xb = min(x1, int(math.floor(np.float64(mx) - lo - 0.5 + 1e-3)))
        return xa, xb

    @numba.njit(cache=True, nogil=True, inline="always")
    def _row_start(mx, dy, a, b, c, xa):
        """``exp(power)`` at pixel ``xa`` of a row, and the factor that steps it to the next
        pixel: ``power`` is quadratic in x, so ``exp(power(x + 1)) = exp(power(x)) * step``,
        ``step`` itself multiplied by ``exp(-a)`` each pixel (float64: two exps per row
        instead of one per pixel)."""
        a64, b64, c64, dy64 = np.float64(a), np.float64(b), np.float64(c), np.float64(dy)
        dx = np.float64(mx) - (xa + 0.5)
        power = -0.5 * (a64 * dx * dx + c64 * dy64 * dy64) - b64 * dy64 * dx
        return math.exp(power), math.exp(a64 * dx - 0.5 * a64 + b64 * dy64)

    @numba.njit(cache=True, nogil=True)
    def bin_tiles(means2d, radii, order, n_per_camera, width, height, tile_w, tile_h, tiles_x, tiles_y):
        """Tile lists sorted by depth.

        means2d [F, 2] float32, radii [F, 2] int32 (0: culled), order [V] int64: the visible
        flat indices sorted by camera then depth. Returns ``bbox [F, 4] int32`` (inclusive
        pixel ranges x0, x1, y0, y1 of the pixel centres within the radii; empty when
        x0 > x1), ``offsets [C * tiles + 1] int64`` and ``ids [M] int32`` (flat Gaussian
        of each intersection, tile-major, front to back within a tile).
        """
        f_total = means2d.shape[0]
        n_cameras = f_total // n_per_camera
        tiles_per_camera = tiles_x * tiles_y
        bbox = np.empty((f_total, 4), np.int32)
        bbox[:, 0] = 1
        bbox[:, 1] = 0
        bbox[:, 2] = 1
        bbox[:, 3] = 0
        counts = np.zeros(n_cameras * tiles_per_camera + 1, np.int64)
        for j in range(order.shape[0]):
            f = order[j]
            rx, ry = radii[f, 0], radii[f, 1]
            if rx <= 0 or ry <= 0:
                continue
            mx, my = means2d[f, 0], means2d[f, 1]
            x0 = max(0, int(math.ceil(mx - rx - 0.5)))
            x1 = min(width - 1, int(math.floor(mx + rx - 0.5)))
            y0 = max(0, int(math.ceil(my - ry - 0.5)))
            y1 = min(height - 1, int(math.floor(my + ry - 0.5)))
            bbox[f, 0], bbox[f, 1], bbox[f, 2], bbox[f, 3] = x0, x1, y0, y1
            if x0 > x1 or y0 > y1:
                continue
            base = (f // n_per_camera) * tiles_per_camera
            for ty in range(y0 // tile_h, y1 // tile_h + 1):
                for tx in range(x0 // tile_w, x1 // tile_w + 1):
                    counts[base + ty * tiles_x + tx + 1] += 1
        for t in range(counts.shape[0] - 1):
            counts[t + 1] += counts[t]
        offsets = counts
        fill = offsets[:-1].copy()
        ids = np.empty(offsets[-1], np.int32)
        for j in range(order.shape[0]):
            f = order[j]
            x0, x1, y0, y1 = bbox[f, 0], bbox[f, 1], bbox[f, 2], bbox[f, 3]
            if x0 > x1 or y0 > y1:
                continue
            base = (f // n_per_camera) * tiles_per_camera
            for ty in range(y0 // tile_h, y1 // tile_h + 1):
                for tx in range(x0 // tile_w, x1 // tile_w + 1):
                    t = base + ty * tiles_x + tx
                    ids[fill[t]] = f
                    fill[t] += 1
        return bbox, offsets, ids

    @numba.njit(cache=True, nogil=True)
    def tile_costs(offsets, ids, bbox, tile_w, tile_h, tiles_x, tiles_per_camera):
        """Pixels each tile will touch: the sum over its Gaussians of their box in the tile."""
        n_tiles = offsets.shape[0] - 1
        cost = np.zeros(n_tiles, np.int64)
        for t in range(n_tiles):
            local = t % tiles_per_camera
            tx0 = (local % tiles_x) * tile_w
            ty0 = (local // tiles_x) * tile_h
            total = 0
            for k in range(offsets[t], offsets[t + 1]):
                f = ids[k]
                w = min(bbox[f, 1], tx0 + tile_w - 1) - max(bbox[f, 0], tx0) + 1
                h = min(bbox[f, 3], ty0 + tile_h - 1) - max(bbox[f, 2], ty0) + 1
                total += w * h
            cost[t] = total + 64  # a fixed cost per tile (clearing, writing)
        return cost

    @numba.njit(cache=True, nogil=True, fastmath=True)
    def _forward_tile(t, offsets, ids, bbox, means2d, conics, colors, opacities, width, height, tile_w,
                      tile_h, tiles_x, tiles_per_camera, out_rgb, out_t, out_last, buf, buf_last):
        """One tile, front to back, Gaussian by Gaussian over the pixels of its ellipse. Per
        pixel in ``buf``: transmittance (negated once the pixel has stopped), r, g, b."""
        camera = t // tiles_per_camera
        local = t % tiles_per_camera
        tx0 = (local % tiles_x) * tile_w
        ty0 = (local // tiles_x) * tile_h
        tx1 = min(tx0 + tile_w, width)
        ty1 = min(ty0 + tile_h, height)
        tw = tx1 - tx0
        start = offsets[t]
        n_pixels = tw * (ty1 - ty0)
        for i in range(n_pixels):
            buf[i, 0] = ONE
            buf[i, 1] = ZERO
            buf[i, 2] = ZERO
            buf[i, 3] = ZERO
            buf_last[i] = start
        alive = n_pixels
        for k in range(start, offsets[t + 1]):
            f = ids[k]
            x0, x1 = max(bbox[f, 0], tx0), min(bbox[f, 1], tx1 - 1)
            y0, y1 = max(bbox[f, 2], ty0), min(bbox[f, 3], ty1 - 1)
            mx, my = means2d[f, 0], means2d[f, 1]
            a, b, c = conics[f, 0], conics[f, 1], conics[f, 2]
            o = opacities[f]
            cr, cg, cb = colors[f, 0], colors[f, 1], colors[f, 2]
            power_min = _power_min(o)
            ratio = math.exp(-np.float64(a))
            for y in range(y0, y1 + 1):
                dy = my - (np.float32(y) + HALF)
                xa, xb = _row_range(mx, dy, a, b, c, power_min, x0, x1)
                if xa > xb:
                    continue
                row = (y - ty0) * tw - tx0
                vis, step = _row_start(mx, dy, a, b, c, xa)
                for x in range(xa, xb + 1):
                    i = row + x
                    tr = buf[i, 0]
                    alpha = min(ALPHA_MAX, o * np.float32(vis))
                    vis *= step  # exp(power) of the next pixel
                    step *= ratio
                    if tr <= ZERO or alpha < ALPHA_MIN:  # stopped, or too faint
                        continue
                    next_t = tr * (ONE - alpha)
                    if next_t <= T_MIN:
                        buf[i, 0] = -tr  # stopped: keep the transmittance, negated as a flag
                        alive -= 1
                        continue
                    w = alpha * tr
                    buf[i, 1] += w * cr
                    buf[i, 2] += w * cg
                    buf[i, 3] += w * cb
                    buf[i, 0] = next_t
                    buf_last[i] = k + 1
            if alive == 0:
                break
        for y in range(ty0, ty1):
            for x in range(tx0, tx1):
                i = (y - ty0) * tw + (x - tx0)
                out_rgb[camera, y, x, 0] = buf[i, 1]
                out_rgb[camera, y, x, 1] = buf[i, 2]
                out_rgb[camera, y, x, 2] = buf[i, 3]
                out_t[camera, y, x] = abs(buf[i, 0])
                out_last[camera, y, x] = buf_last[i]

    @numba.njit(cache=True, nogil=True, fastmath=True)
    def _backward_tile(t, offsets, ids, bbox, means2d, conics, colors, opacities, width, height, tile_w,
                       tile_h, tiles_x, tiles_per_camera, rgb, final_t, last, v_rgb, v_alpha_out, isect_grad,
                       buf, buf_last):
        """One tile, front to back again, recomputing the transmittance; for each Gaussian,
        ``dC/dalpha = c T - (what it hides) / (1 - alpha)``, summed over its pixels. Per pixel
        in ``buf``: transmittance, accumulated r, g, b, then (copied in) the upstream colour
        gradient, the rendered colour, and the upstream alpha gradient times the final
        transmittance."""
        camera = t // tiles_per_camera
        local = t % tiles_per_camera
        tx0 = (local % tiles_x) * tile_w
        ty0 = (local // tiles_x) * tile_h
        tx1 = min(tx0 + tile_w, width)
        ty1 = min(ty0 + tile_h, height)
        tw = tx1 - tx0
        max_last = offsets[t]
        for y in range(ty0, ty1):
            for x in range(tx0, tx1):
                i = (y - ty0) * tw + (x - tx0)
                buf[i, 0] = ONE
                buf[i, 1] = ZERO
                buf[i, 2] = ZERO
                buf[i, 3] = ZERO
                for ch in range(3):
                    buf[i, 4 + ch] = v_rgb[camera, y, x, ch]
                    buf[i, 7 + ch] = rgb[camera, y, x, ch]
                buf[i, 10] = v_alpha_out[camera, y, x] * final_t[camera, y, x]
                buf_last[i] = last[camera, y, x]
                max_last = max(max_last, last[camera, y, x])
        for k in range(offsets[t], max_last):
            f = ids[k]
            x0, x1 = max(bbox[f, 0], tx0), min(bbox[f, 1], tx1 - 1)
            y0, y1 = max(bbox[f, 2], ty0), min(bbox[f, 3], ty1 - 1)
            mx, my = means2d[f, 0], means2d[f, 1]
            a, b, c = conics[f, 0], conics[f, 1], conics[f, 2]
            o = opacities[f]
            cr, cg, cb = colors[f, 0], colors[f, 1], colors[f, 2]
            power_min = _power_min(o)
            ratio = math.exp(-np.float64(a))
            g_mx = g_my = g_a = g_b = g_c = g_o = g_r = g_g = g_bl = 0.0
            for y in range(y0, y1 + 1):
                dy = my - (np.float32(y) + HALF)
                xa, xb = _row_range(mx, dy, a, b, c, power_min, x0, x1)
                if xa > xb:
                    continue
                row = (y - ty0) * tw - tx0
                vis_next, step = _row_start(mx, dy, a, b, c, xa)
                dx = np.float64(mx) - (xa + 0.5) + 1.0
                for x in range(xa, xb + 1):
                    i = row + x
                    vis = np.float32(vis_next)
                    vis_next *= step
                    step *= ratio
                    dx -= 1.0
                    alpha_raw = o * vis
                    alpha = min(ALPHA_MAX, alpha_raw)
                    if k >= buf_last[i] or alpha < ALPHA_MIN:
                        continue
                    tr = buf[i, 0]
                    w = alpha * tr
                    vr, vg, vb = buf[i, 4], buf[i, 5], buf[i, 6]
                    g_r += w * vr
                    g_g += w * vg
                    g_bl += w * vb
                    acc_r = buf[i, 1] + w * cr
                    acc_g = buf[i, 2] + w * cg
                    acc_b = buf[i, 3] + w * cb
                    buf[i, 1], buf[i, 2], buf[i, 3] = acc_r, acc_g, acc_b
                    one_minus = ONE - alpha
                    buf[i, 0] = tr * one_minus
                    if alpha_raw > ALPHA_MAX:  # clamped: no gradient through alpha
                        continue
                    inv = ONE / one_minus
                    # d(colour)/d(alpha): this Gaussian's colour, minus what it hides behind it.
                    v_a = (vr * (cr * tr - (buf[i, 7] - acc_r) * inv) + vg * (cg * tr - (buf[i, 8] - acc_g) * inv)
                           + vb * (cb * tr - (buf[i, 9] - acc_b) * inv) + buf[i, 10] * inv)
                    g_o += v_a * vis
                    v_power = v_a * alpha
                    g_a += v_power * dx * dx
                    g_b += v_power * dx * dy
                    g_c += v_power * dy * dy
                    g_mx += v_power * (a * dx + b * dy)
                    g_my += v_power * (b * dx + c * dy)
            isect_grad[k, 0] = -g_mx
            isect_grad[k, 1] = -g_my
            isect_grad[k, 2] = -0.5 * g_a
            isect_grad[k, 3] = -g_b
            isect_grad[k, 4] = -0.5 * g_c
            isect_grad[k, 5] = g_o
            isect_grad[k, 6] = g_r
            isect_grad[k, 7] = g_g
            isect_grad[k, 8] = g_bl
        for k in range(max_last, offsets[t + 1]):
            for j in range(9):
                isect_grad[k, j] = 0.0

    @numba.njit(cache=True, nogil=True)
    def composite_forward(tiles, offsets, ids, bbox, means2d, conics, colors, opacities, width, height,
                          tile_w, tile_h, tiles_x, tiles_per_camera, out_rgb, out_t, out_last):
        """Front-to-back compositing of the listed tiles."""
        buf = np.empty((tile_w * tile_h, 4), np.float32)
        buf_last = np.empty(tile_w * tile_h, np.int32)
        for j in range(tiles.shape[0]):
            _forward_tile(tiles[j], offsets, ids, bbox, means2d, conics, colors, opacities, width, height,
                          tile_w, tile_h, tiles_x, tiles_per_camera, out_rgb, out_t, out_last, buf, buf_last)

    @numba.njit(cache=True, nogil=True)
    def composite_backward(tiles, offsets, ids, bbox, means2d, conics, colors, opacities, width, height,
                           tile_w, tile_h, tiles_x, tiles_per_camera, rgb, final_t, last, v_rgb, v_alpha_out,
                           isect_grad):
        """Gradients of the listed tiles' intersections ``[M, 9]``: mean2d (2), conic (3),
        opacity, colour (3)."""
        buf = np.empty((tile_w * tile_h, 11), np.float32)
        buf_last = np.empty(tile_w * tile_h, np.int32)
        for j in range(tiles.shape[0]):
            _backward_tile(tiles[j], offsets, ids, bbox, means2d, conics, colors, opacities, width, height,
                           tile_w, tile_h, tiles_x, tiles_per_camera, rgb, final_t, last, v_rgb, v_alpha_out,
                           isect_grad, buf, buf_last)

    @numba.njit(cache=True, nogil=True)
    def gather_gradients(ids, isect_grad, n_flat):
        """Sum the intersections' gradients per flat Gaussian: ``[F, 9]``."""
        out = np.zeros((n_flat, 9), np.float32)
        for k in range(ids.shape[0]):
            f = ids[k]
            for j in range(9):
                out[f, j] += isect_grad[k, j]
        return out


_THREADS = max(1, min(int(os.environ.get("RECON_SPLAT_THREADS", os.cpu_count() or 1)), 64))
_pool: ThreadPoolExecutor | None = None


def set_threads(n: int) -> None:
    """How many threads the compositing kernels use (default: every core, or
    ``RECON_SPLAT_THREADS``)."""
    global _THREADS
    _THREADS = max(1, int(n))


def get_threads() -> int:
    return _THREADS


def split_work(cost: np.ndarray, n_chunks: int) -> list[np.ndarray]:
    """The tiles that have work, costliest first, cut into about ``n_chunks`` runs of equal
    cost (a few heavy tiles first, many light ones last)."""
    busy = np.flatnonzero(cost > 64)
    order = busy[np.argsort(-cost[busy], kind="stable")]
    if n_chunks <= 1 or len(order) <= 1:
        return [order.astype(np.int64)]
    cum = np.cumsum(cost[order])
    bounds = np.searchsorted(cum, cum[-1] * np.arange(1, n_chunks) / n_chunks, side="right")
    return [c.astype(np.int64) for c in np.split(order, np.unique(bounds)) if len(c)]


def run_chunks(kernel, chunks: list[np.ndarray], *args) -> None:
    """``kernel(chunk, *args)`` for every chunk, on up to :func:`get_threads` threads that take
    the next chunk as they finish one. The kernels release the GIL; waiting threads sleep,
    so a core taken by another process slows the work down rather than stalling it."""
    global _pool
    threads = min(_THREADS, len(chunks))
    if threads <= 1:
        for chunk in chunks:
            kernel(chunk, *args)
        return
    if _pool is None or _pool._max_workers < threads - 1:
        _pool = ThreadPoolExecutor(max_workers=threads - 1, thread_name_prefix="recon-splat")
    counter = itertools.count()

    def work() -> None:
        while (i := next(counter)) < len(chunks):
            kernel(chunks[i], *args)

    futures = [_pool.submit(work) for _ in range(threads - 1)]
    work()
    for future in futures:
        future.result()


# -- projection and spherical harmonics --------------------------------------------------------------
SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
         -0.4570457994644658, 1.445305721320277, -0.5900435899266435)

if AVAILABLE:

    @numba.njit(cache=True, nogil=True, inline="always")
    def _sh_basis(degree, x, y, z, out):
        """The 3DGS real SH basis at the unit direction ``(x, y, z)`` into ``out[:K]``."""
        out[0] = SH_C0
        if degree > 0:
            out[1] = -SH_C1 * y
            out[2] = SH_C1 * z
            out[3] = -SH_C1 * x
        if degree > 1:
            xx, yy, zz = x * x, y * y, z * z
            out[4] = SH_C2[0] * x * y
            out[5] = SH_C2[1] * y * z
            out[6] = SH_C2[2] * (2.0 * zz - xx - yy)
            out[7] = SH_C2[3] * x * z
            out[8] = SH_C2[4] * (xx - yy)
        if degree > 2:
            out[9] = SH_C3[0] * y * (3.0 * xx - yy)
            out[10] = SH_C3[1] * x * y * z
            out[11] = SH_C3[2] * y * (4.0 * zz - xx - yy)
            out[12] = SH_C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy)
            out[13] = SH_C3[4] * x * (4.0 * zz - xx - yy)
            out[14] = SH_C3[5] * z * (xx - yy)
            out[15] = SH_C3[6] * x * (xx - 3.0 * yy)

    @numba.njit(cache=True, nogil=True, inline="always")
    def _sh_basis_grad(degree, x, y, z, g):
        """``sum_k g[k] d(basis_k)/d(x, y, z)`` at the unit direction (before normalising)."""
        dx = dy = dz = 0.0
        if degree > 0:
            dy -= SH_C1 * g[1]
            dz += SH_C1 * g[2]
            dx -= SH_C1 * g[3]
        if degree > 1:
            dx += SH_C2[0] * y * g[4]
            dy += SH_C2[0] * x * g[4]
            dy += SH_C2[1] * z * g[5]
            dz += SH_C2[1] * y * g[5]
            dx -= 2.0 * SH_C2[2] * x * g[6]
            dy -= 2.0 * SH_C2[2] * y * g[6]
            dz += 4.0 * SH_C2[2] * z * g[6]
            dx += SH_C2[3] * z * g[7]
            dz += SH_C2[3] * x * g[7]
            dx += 2.0 * SH_C2[4] * x * g[8]
            dy -= 2.0 * SH_C2[4] * y * g[8]
        if degree > 2:
            xx, yy, zz = x * x, y * y, z * z
            dx += SH_C3[0] * 6.0 * x * y * g[9]
            dy += SH_C3[0] * (3.0 * xx - 3.0 * yy) * g[9]
            dx += SH_C3[1] * y * z * g[10]
            dy += SH_C3[1] * x * z * g[10]
            dz += SH_C3[1] * x * y * g[10]
            dx -= SH_C3[2] * 2.0 * x * y * g[11]
            dy += SH_C3[2] * (4.0 * zz - xx - 3.0 * yy) * g[11]
            dz += SH_C3[2] * 8.0 * y * z * g[11]
            dx -= SH_C3[3] * 6.0 * x * z * g[12]
            dy -= SH_C3[3] * 6.0 * y * z * g[12]
            dz += SH_C3[3] * (6.0 * zz - 3.0 * xx - 3.0 * yy) * g[12]
            dx += SH_C3[4] * (4.0 * zz - 3.0 * xx - yy) * g[13]
            dy -= SH_C3[4] * 2.0 * x * y * g[13]
            dz += SH_C3[4] * 8.0 * x * z * g[13]
            dx += SH_C3[5] * 2.0 * x * z * g[14]
            dy -= SH_C3[5] * 2.0 * y * z * g[14]
            dz += SH_C3[5] * (xx - yy) * g[14]
            dx += SH_C3[6] * (3.0 * xx - 3.0 * yy) * g[15]
            dy -= SH_C3[6] * 6.0 * x * y * g[15]
        return dx, dy, dz

    @numba.njit(cache=True, nogil=True, inline="always")
    def _rotation(qw, qx, qy, qz, r):
        """Rotation matrix of the normalised quaternion into ``r[3, 3]``; returns the norm."""
        norm = math.sqrt(qw * qw + qx * qx + qy * qy + qz * qz)
        inv = 1.0 / max(norm, 1e-12)
        w, x, y, z = qw * inv, qx * inv, qy * inv, qz * inv
        r[0, 0] = 1.0 - 2.0 * (y * y + z * z)
        r[0, 1] = 2.0 * (x * y - w * z)
        r[0, 2] = 2.0 * (x * z + w * y)
        r[1, 0] = 2.0 * (x * y + w * z)
        r[1, 1] = 1.0 - 2.0 * (x * x + z * z)
        r[1, 2] = 2.0 * (y * z - w * x)
        r[2, 0] = 2.0 * (x * z - w * y)
        r[2, 1] = 2.0 * (y * z + w * x)
        r[2, 2] = 1.0 - 2.0 * (x * x + y * y)
        return max(norm, 1e-12)

    @numba.njit(cache=True, nogil=True)
    def _camera_frame(means, quats, scales, viewmats, Ks, c, n, width, height, r, a, t):
        """Camera-space mean, ``A = W R S`` and ``T = J A`` (into ``r``, ``a``, ``t``) of
        Gaussian ``n`` in camera ``c``; returns (x, y, z, j00, j02, j11, j12, clamped_x, clamped_y, lx, ly)."""
        x = y = z = 0.0
        for i in range(3):
            x += viewmats[c, 0, i] * means[n, i]
            y += viewmats[c, 1, i] * means[n, i]
            z += viewmats[c, 2, i] * means[n, i]
        x += viewmats[c, 0, 3]
        y += viewmats[c, 1, 3]
        z += viewmats[c, 2, 3]
        _rotation(quats[n, 0], quats[n, 1], quats[n, 2], quats[n, 3], r)
        for i in range(3):
            for k in range(3):
                a[i, k] = (viewmats[c, i, 0] * r[0, k] + viewmats[c, i, 1] * r[1, k]
                           + viewmats[c, i, 2] * r[2, k]) * scales[n, k]
        fx, fy, cx, cy = Ks[c, 0, 0], Ks[c, 1, 1], Ks[c, 0, 2], Ks[c, 1, 2]
        zs = z if z != 0.0 else 1.0
        lim_xp = (width - cx) / fx + 0.15 * width / fx
        lim_xn = cx / fx + 0.15 * width / fx
        lim_yp = (height - cy) / fy + 0.15 * height / fy
        lim_yn = cy / fy + 0.15 * height / fy
        u, v = x / zs, y / zs
        clamped_x = u < -lim_xn or u > lim_xp
        clamped_y = v < -lim_yn or v > lim_yp
        lx = min(max(u, -lim_xn), lim_xp)
        ly = min(max(v, -lim_yn), lim_yp)
        tx, ty = zs * lx, zs * ly
        j00, j02 = fx / zs, -fx * tx / (zs * zs)
        j11, j12 = fy / zs, -fy * ty / (zs * zs)
        for k in range(3):
            t[0, k] = j00 * a[0, k] + j02 * a[2, k]
            t[1, k] = j11 * a[1, k] + j12 * a[2, k]
        return x, y, z, j00, j02, j11, j12, clamped_x, clamped_y, lx, ly

    @numba.njit(cache=True, nogil=True)
    def project_forward(chunk, means, quats, scales, opacities, coeffs, sh_degree, viewmats, Ks, width, height,
                        near, far, eps2d, means2d, conics, depths, radii, colors):
        """Gaussians ``chunk[0]..chunk[1]`` in every camera: ``means2d [C, N, 2]``, ``conics
        [C, N, 3]``, ``depths [C, N]``, ``radii [C, N, 2]`` (0: culled) and, when
        ``sh_degree >= 0``, ``colors [C, N, 3] = max(SH(dir) + 0.5, 0)``."""
        r = np.empty((3, 3))
        a = np.empty((3, 3))
        t = np.empty((2, 3))
        basis = np.empty(16)
        n_cameras = viewmats.shape[0]
        k_count = (sh_degree + 1) * (sh_degree + 1)
        for c in range(n_cameras):
            # camera centre: -R^T t
            ccx = -(viewmats[c, 0, 0] * viewmats[c, 0, 3] + viewmats[c, 1, 0] * viewmats[c, 1, 3]
                    + viewmats[c, 2, 0] * viewmats[c, 2, 3])
            ccy = -(viewmats[c, 0, 1] * viewmats[c, 0, 3] + viewmats[c, 1, 1] * viewmats[c, 1, 3]
                    + viewmats[c, 2, 1] * viewmats[c, 2, 3])
            ccz = -(viewmats[c, 0, 2] * viewmats[c, 0, 3] + viewmats[c, 1, 2] * viewmats[c, 1, 3]
                    + viewmats[c, 2, 2] * viewmats[c, 2, 3])
            fx, fy, cx, cy = Ks[c, 0, 0], Ks[c, 1, 1], Ks[c, 0, 2], Ks[c, 1, 2]
            for n in range(chunk[0], chunk[1]):
                x, y, z, _, _, _, _, _, _, _, _ = _camera_frame(means, quats, scales, viewmats, Ks, c, n, width,
                                                                height, r, a, t)
                depths[c, n] = z
                in_range = z > near and z < far
                zs = z if in_range else 1.0
                cov_a = t[0, 0] * t[0, 0] + t[0, 1] * t[0, 1] + t[0, 2] * t[0, 2] + eps2d
                cov_b = t[0, 0] * t[1, 0] + t[0, 1] * t[1, 1] + t[0, 2] * t[1, 2]
                cov_c = t[1, 0] * t[1, 0] + t[1, 1] * t[1, 1] + t[1, 2] * t[1, 2] + eps2d
                det = cov_a * cov_c - cov_b * cov_b
                good = in_range and det > 0.0
                det = det if good else 1.0
                conics[c, n, 0] = cov_c / det
                conics[c, n, 1] = -cov_b / det
                conics[c, n, 2] = cov_a / det
                mx = fx * x / zs + cx
                my = fy * y / zs + cy
                means2d[c, n, 0] = mx
                means2d[c, n, 1] = my
                o = opacities[n]
                radii[c, n, 0] = 0
                radii[c, n, 1] = 0
                if good and o > 1.0 / 255.0:
                    extent = math.sqrt(2.0 * math.log(255.0 * o))
                    rx = math.ceil(extent * math.sqrt(cov_a) + 1e-3)
                    ry = math.ceil(extent * math.sqrt(cov_c) + 1e-3)
                    if mx + rx > 0 and mx - rx < width and my + ry > 0 and my - ry < height:
                        radii[c, n, 0] = rx
                        radii[c, n, 1] = ry
                if sh_degree >= 0:
                    dx, dy, dz = means[n, 0] - ccx, means[n, 1] - ccy, means[n, 2] - ccz
                    length = max(math.sqrt(dx * dx + dy * dy + dz * dz), 1e-12)
                    _sh_basis(sh_degree, dx / length, dy / length, dz / length, basis)
                    for ch in range(3):
                        value = 0.5
                        for k in range(k_count):
                            value += basis[k] * coeffs[n, k, ch]
                        colors[c, n, ch] = max(value, 0.0)

    @numba.njit(cache=True, nogil=True)
    def project_backward(chunk, means, quats, scales, coeffs, sh_degree, viewmats, Ks, width, height, eps2d,
                         radii, colors, v_means2d, v_conics, v_colors, v_means, v_quats, v_scales, v_coeffs):
        """Gradients of :func:`project_forward` for Gaussians ``chunk[0]..chunk[1]``, summed
        over cameras, into ``v_means``, ``v_quats``, ``v_scales`` and ``v_coeffs``."""
        r = np.empty((3, 3))
        a = np.empty((3, 3))
        t = np.empty((2, 3))
        v_t = np.empty((2, 3))
        v_a = np.empty((3, 3))
        v_m = np.empty((3, 3))
        basis = np.empty(16)
        g = np.empty(16)
        n_cameras = viewmats.shape[0]
        k_count = (sh_degree + 1) * (sh_degree + 1)
        for n in range(chunk[0], chunk[1]):
            for i in range(3):
                v_means[n, i] = 0.0
                v_scales[n, i] = 0.0
            for i in range(4):
                v_quats[n, i] = 0.0
            if sh_degree >= 0:
                for k in range(k_count):
                    for ch in range(3):
                        v_coeffs[n, k, ch] = 0.0
            for c in range(n_cameras):
                if sh_degree >= 0:
                    ccx = -(viewmats[c, 0, 0] * viewmats[c, 0, 3] + viewmats[c, 1, 0] * viewmats[c, 1, 3]
                            + viewmats[c, 2, 0] * viewmats[c, 2, 3])
                    ccy = -(viewmats[c, 0, 1] * viewmats[c, 0, 3] + viewmats[c, 1, 1] * viewmats[c, 1, 3]
                            + viewmats[c, 2, 1] * viewmats[c, 2, 3])
                    ccz = -(viewmats[c, 0, 2] * viewmats[c, 0, 3] + viewmats[c, 1, 2] * viewmats[c, 1, 3]
                            + viewmats[c, 2, 2] * viewmats[c, 2, 3])
                    dx, dy, dz = means[n, 0] - ccx, means[n, 1] - ccy, means[n, 2] - ccz
                    length = max(math.sqrt(dx * dx + dy * dy + dz * dz), 1e-12)
                    ux, uy, uz = dx / length, dy / length, dz / length
                    _sh_basis(sh_degree, ux, uy, uz, basis)
                    for k in range(k_count):
                        g[k] = 0.0
                    for ch in range(3):
                        vc = v_colors[c, n, ch] if colors[c, n, ch] > 0.0 else 0.0
                        for k in range(k_count):
                            v_coeffs[n, k, ch] += basis[k] * vc
                            g[k] += coeffs[n, k, ch] * vc
                    gx, gy, gz = _sh_basis_grad(sh_degree, ux, uy, uz, g)
                    dot = gx * ux + gy * uy + gz * uz  # through the normalisation
                    v_means[n, 0] += (gx - ux * dot) / length
                    v_means[n, 1] += (gy - uy * dot) / length
                    v_means[n, 2] += (gz - uz * dot) / length
                if radii[c, n, 0] <= 0:
                    continue
                x, y, z, j00, j02, j11, j12, clamped_x, clamped_y, lx, ly = _camera_frame(
                    means, quats, scales, viewmats, Ks, c, n, width, height, r, a, t)
                fx, fy = Ks[c, 0, 0], Ks[c, 1, 1]
                # conic = inverse(cov): v_cov = -X v_X X, X = [[a, b], [b, c]], v_X = [[va, vb/2], [vb/2, vc]]
                ca, cb, cc = v_conics[c, n, 0], v_conics[c, n, 1], v_conics[c, n, 2]
                cov_a = t[0, 0] * t[0, 0] + t[0, 1] * t[0, 1] + t[0, 2] * t[0, 2]
                cov_b = t[0, 0] * t[1, 0] + t[0, 1] * t[1, 1] + t[0, 2] * t[1, 2]
                cov_c = t[1, 0] * t[1, 0] + t[1, 1] * t[1, 1] + t[1, 2] * t[1, 2]
                # the conic from the same (float64) covariance as the forward pass
                eps_a = cov_a + eps2d
                eps_c = cov_c + eps2d
                det = eps_a * eps_c - cov_b * cov_b
                xa, xb, xc = eps_c / det, -cov_b / det, eps_a / det
                p00 = xa * ca + xb * cb * 0.5
                p01 = xa * cb * 0.5 + xb * cc
                p10 = xb * ca + xc * cb * 0.5
                p11 = xb * cb * 0.5 + xc * cc
                s00 = -(p00 * xa + p01 * xb)
                s01 = -(p00 * xb + p01 * xc)
                s11 = -(p10 * xb + p11 * xc)
                # cov = T T^T: v_T = 2 S T
                for k in range(3):
                    v_t[0, k] = 2.0 * (s00 * t[0, k] + s01 * t[1, k])
                    v_t[1, k] = 2.0 * (s01 * t[0, k] + s11 * t[1, k])
                # T = J A
                v_j00 = v_j02 = v_j11 = v_j12 = 0.0
                for k in range(3):
                    v_j00 += v_t[0, k] * a[0, k]
                    v_j02 += v_t[0, k] * a[2, k]
                    v_j11 += v_t[1, k] * a[1, k]
                    v_j12 += v_t[1, k] * a[2, k]
                    v_a[0, k] = j00 * v_t[0, k]
                    v_a[1, k] = j11 * v_t[1, k]
                    v_a[2, k] = j02 * v_t[0, k] + j12 * v_t[1, k]
                # A = W R S
                for i in range(3):
                    for k in range(3):
                        v_m[i, k] = (viewmats[c, 0, i] * v_a[0, k] + viewmats[c, 1, i] * v_a[1, k]
                                     + viewmats[c, 2, i] * v_a[2, k])
                v00, v01, v02 = v_m[0, 0] * scales[n, 0], v_m[0, 1] * scales[n, 1], v_m[0, 2] * scales[n, 2]
                v10, v11, v12 = v_m[1, 0] * scales[n, 0], v_m[1, 1] * scales[n, 1], v_m[1, 2] * scales[n, 2]
                v20, v21, v22 = v_m[2, 0] * scales[n, 0], v_m[2, 1] * scales[n, 1], v_m[2, 2] * scales[n, 2]
                for k in range(3):
                    v_scales[n, k] += v_m[0, k] * r[0, k] + v_m[1, k] * r[1, k] + v_m[2, k] * r[2, k]
                norm = _rotation(quats[n, 0], quats[n, 1], quats[n, 2], quats[n, 3], r)
                w, qx, qy, qz = quats[n, 0] / norm, quats[n, 1] / norm, quats[n, 2] / norm, quats[n, 3] / norm
                gw = 2.0 * (-qz * v01 + qy * v02 + qz * v10 - qx * v12 - qy * v20 + qx * v21)
                gx = 2.0 * (qy * v01 + qz * v02 + qy * v10 - 2.0 * qx * v11 - w * v12 + qz * v20 + w * v21
                            - 2.0 * qx * v22)
                gy = 2.0 * (-2.0 * qy * v00 + qx * v01 + w * v02 + qx * v10 + qz * v12 - w * v20 + qz * v21
                            - 2.0 * qy * v22)
                gz = 2.0 * (-2.0 * qz * v00 - w * v01 + qx * v02 + w * v10 - 2.0 * qz * v11 + qy * v12
                            + qx * v20 + qy * v21)
                dot = gw * w + gx * qx + gy * qy + gz * qz
                v_quats[n, 0] += (gw - w * dot) / norm
                v_quats[n, 1] += (gx - qx * dot) / norm
                v_quats[n, 2] += (gy - qy * dot) / norm
                v_quats[n, 3] += (gz - qz * dot) / norm
                # J (and the mean) in terms of the camera-space mean
                z2, z3 = z * z, z * z * z
                tx, ty = z * lx, z * ly
                v_x = fx / z * v_means2d[c, n, 0]
                v_y = fy / z * v_means2d[c, n, 1]
                v_z = -fx * x / z2 * v_means2d[c, n, 0] - fy * y / z2 * v_means2d[c, n, 1]
                v_z += -fx / z2 * v_j00 + 2.0 * fx * tx / z3 * v_j02 - fy / z2 * v_j11 + 2.0 * fy * ty / z3 * v_j12
                v_tx = -fx / z2 * v_j02
                v_ty = -fy / z2 * v_j12
                if clamped_x:
                    v_z += lx * v_tx
                else:
                    v_x += v_tx
                if clamped_y:
                    v_z += ly * v_ty
                else:
                    v_y += v_ty
                for i in range(3):
                    v_means[n, i] += viewmats[c, 0, i] * v_x + viewmats[c, 1, i] * v_y + viewmats[c, 2, i] * v_z
