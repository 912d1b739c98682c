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
Gaussian that would take its transmittance to ``1e-4`` or below. Tiles are split between
numba's threads by estimated cost; each tile writes its own pixels and its own
intersections' gradients, so no two threads write the same memory.
"""

from __future__ import annotations

import math

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

    @numba.njit(cache=True, nogil=True)
    def bin_tiles(means2d, radii, order, n_per_camera, width, height, tile_size, tiles_x, tiles_y):
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
            for ty in range(y0 // tile_size, y1 // tile_size + 1):
                for tx in range(x0 // tile_size, x1 // tile_size + 1):
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
            for ty in range(y0 // tile_size, y1 // tile_size + 1):
                for tx in range(x0 // tile_size, x1 // tile_size + 1):
                    t = base + ty * tiles_x + tx
                    ids[fill[t]] = f
                    fill[t] += 1
        return bbox, offsets, ids

    @numba.njit(cache=True, nogil=True)
    def tile_costs(offsets, ids, bbox, tile_size, tiles_x, tiles_per_camera):
        """Pixels each tile will touch: the sum over its Gaussians of their box in the tile."""
        n_tiles = offsets.shape[0] - 1
        cost = np.zeros(n_tiles, np.int64)
        for t in range(n_tiles):
            local = t % tiles_per_camera
            tx0 = (local % tiles_x) * tile_size
            ty0 = (local // tiles_x) * tile_size
            total = 0
            for k in range(offsets[t], offsets[t + 1]):
                f = ids[k]
                w = min(bbox[f, 1], tx0 + tile_size - 1) - max(bbox[f, 0], tx0) + 1
                h = min(bbox[f, 3], ty0 + tile_size - 1) - max(bbox[f, 2], ty0) + 1
                total += w * h
            cost[t] = total + 64  # a fixed cost per tile (clearing, writing)
        return cost

    @numba.njit(cache=True, nogil=True, fastmath=True)
    def _forward_tile(t, offsets, ids, bbox, means2d, conics, colors, opacities, width, height, tile_size,
                      tiles_x, tiles_per_camera, out_rgb, out_t, out_last, buf_t, buf_rgb, buf_last):
        camera = t // tiles_per_camera
        local = t % tiles_per_camera
        tx0 = (local % tiles_x) * tile_size
        ty0 = (local // tiles_x) * tile_size
        tx1 = min(tx0 + tile_size, width)
        ty1 = min(ty0 + tile_size, height)
        tw = tx1 - tx0
        start = offsets[t]
        n_pixels = tw * (ty1 - ty0)
        for i in range(n_pixels):
            buf_t[i] = 1.0
            buf_rgb[i, 0] = 0.0
            buf_rgb[i, 1] = 0.0
            buf_rgb[i, 2] = 0.0
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
            for y in range(y0, y1 + 1):
                dy = my - (np.float32(y) + HALF)
                xa, xb = _row_range(mx, dy, a, b, c, power_min, x0, x1)
                row = (y - ty0) * tw - tx0
                for x in range(xa, xb + 1):
                    i = row + x
                    tr = buf_t[i]
                    if tr <= 0.0:  # this pixel has stopped
                        continue
                    dx = mx - (np.float32(x) + HALF)
                    power = -HALF * (a * dx * dx + c * dy * dy) - b * dx * dy
                    if power > 0.0:
                        continue
                    alpha = min(ALPHA_MAX, o * math.exp(power))
                    if alpha < ALPHA_MIN:
                        continue
                    next_t = tr * (ONE - alpha)
                    if next_t <= T_MIN:
                        buf_t[i] = -tr  # stopped: keep the transmittance, negated as a flag
                        alive -= 1
                        continue
                    w = alpha * tr
                    buf_rgb[i, 0] += w * cr
                    buf_rgb[i, 1] += w * cg
                    buf_rgb[i, 2] += w * cb
                    buf_t[i] = next_t
                    buf_last[i] = k + 1
            if alive == 0:
                break
        for y in range(ty0, ty1):
            for x in range(tx0, tx1):
                i = (y - ty0) * tw + (x - tx0)
                out_rgb[camera, y, x, 0] = buf_rgb[i, 0]
                out_rgb[camera, y, x, 1] = buf_rgb[i, 1]
                out_rgb[camera, y, x, 2] = buf_rgb[i, 2]
                out_t[camera, y, x] = abs(buf_t[i])
                out_last[camera, y, x] = buf_last[i]

    @numba.njit(cache=True, nogil=True, fastmath=True)
    def _backward_tile(t, offsets, ids, bbox, means2d, conics, colors, opacities, width, height, tile_size,
                       tiles_x, tiles_per_camera, rgb, final_t, last, v_rgb, v_alpha_out, isect_grad,
                       buf_t, buf_acc):
        camera = t // tiles_per_camera
        local = t % tiles_per_camera
        tx0 = (local % tiles_x) * tile_size
        ty0 = (local // tiles_x) * tile_size
        tx1 = min(tx0 + tile_size, width)
        ty1 = min(ty0 + tile_size, height)
        tw = tx1 - tx0
        max_last = offsets[t]
        for y in range(ty0, ty1):
            for x in range(tx0, tx1):
                i = (y - ty0) * tw + (x - tx0)
                buf_t[i] = 1.0
                buf_acc[i, 0] = 0.0
                buf_acc[i, 1] = 0.0
                buf_acc[i, 2] = 0.0
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
            g_mx = g_my = g_a = g_b = g_c = g_o = g_r = g_g = g_bl = 0.0
            for y in range(y0, y1 + 1):
                dy = my - (np.float32(y) + HALF)
                xa, xb = _row_range(mx, dy, a, b, c, power_min, x0, x1)
                row = (y - ty0) * tw - tx0
                for x in range(xa, xb + 1):
                    if k >= last[camera, y, x]:
                        continue
                    i = row + x
                    dx = mx - (np.float32(x) + HALF)
                    power = -HALF * (a * dx * dx + c * dy * dy) - b * dx * dy
                    if power > 0.0:
                        continue
                    vis = math.exp(power)
                    alpha_raw = o * vis
                    alpha = min(ALPHA_MAX, alpha_raw)
                    if alpha < ALPHA_MIN:
                        continue
                    tr = buf_t[i]
                    w = alpha * tr
                    vr, vg, vb = v_rgb[camera, y, x, 0], v_rgb[camera, y, x, 1], v_rgb[camera, y, x, 2]
                    g_r += w * vr
                    g_g += w * vg
                    g_bl += w * vb
                    acc_r = buf_acc[i, 0] + w * cr
                    acc_g = buf_acc[i, 1] + w * cg
                    acc_b = buf_acc[i, 2] + w * cb
                    buf_acc[i, 0], buf_acc[i, 1], buf_acc[i, 2] = acc_r, acc_g, acc_b
                    one_minus = ONE - alpha
                    buf_t[i] = tr * one_minus
                    if alpha_raw > ALPHA_MAX:  # clamped: no gradient through alpha
                        continue
                    # d(colour)/d(alpha): this Gaussian's colour, minus what it hides behind it.
                    behind_r = rgb[camera, y, x, 0] - acc_r
                    behind_g = rgb[camera, y, x, 1] - acc_g
                    behind_b = rgb[camera, y, x, 2] - acc_b
                    v_a = (vr * (cr * tr - behind_r / one_minus) + vg * (cg * tr - behind_g / one_minus)
                           + vb * (cb * tr - behind_b / one_minus)
                           + v_alpha_out[camera, y, x] * final_t[camera, y, x] / one_minus)
                    g_o += v_a * vis
                    v_power = v_a * alpha
                    g_a += -0.5 * v_power * dx * dx
                    g_b += -v_power * dx * dy
                    g_c += -0.5 * v_power * dy * dy
                    g_mx += -v_power * (a * dx + b * dy)
                    g_my += -v_power * (b * dx + c * dy)
            isect_grad[k, 0] = g_mx
            isect_grad[k, 1] = g_my
            isect_grad[k, 2] = g_a
            isect_grad[k, 3] = g_b
            isect_grad[k, 4] = g_c
            isect_grad[k, 5] = g_o
            isect_grad[k, 6] = g_r
            isect_grad[k, 7] = g_g
            isect_grad[k, 8] = g_bl
        for k in range(max_last, offsets[t + 1]):
            for j in range(9):
                isect_grad[k, j] = 0.0

    @numba.njit(cache=True, nogil=True, parallel=True)
    def composite_forward(work_offsets, work_tiles, offsets, ids, bbox, means2d, conics, colors, opacities,
                          width, height, tile_size, tiles_x, tiles_per_camera, out_rgb, out_t, out_last):
        """Front-to-back compositing of every tile; each worker takes its list of tiles."""
        n_workers = work_offsets.shape[0] - 1
        n_pixels = tile_size * tile_size
        for w in numba.prange(n_workers):
            buf_t = np.empty(n_pixels, np.float32)
            buf_rgb = np.empty((n_pixels, 3), np.float32)
            buf_last = np.empty(n_pixels, np.int64)
            for j in range(work_offsets[w], work_offsets[w + 1]):
                _forward_tile(work_tiles[j], offsets, ids, bbox, means2d, conics, colors, opacities, width,
                              height, tile_size, tiles_x, tiles_per_camera, out_rgb, out_t, out_last,
                              buf_t, buf_rgb, buf_last)

    @numba.njit(cache=True, nogil=True, parallel=True)
    def composite_backward(work_offsets, work_tiles, offsets, ids, bbox, means2d, conics, colors, opacities,
                           width, height, tile_size, tiles_x, tiles_per_camera, rgb, final_t, last, v_rgb,
                           v_alpha_out, isect_grad):
        """Gradients of every intersection ``[M, 9]``: mean2d (2), conic (3), opacity, colour (3)."""
        n_workers = work_offsets.shape[0] - 1
        n_pixels = tile_size * tile_size
        for w in numba.prange(n_workers):
            buf_t = np.empty(n_pixels, np.float32)
            buf_acc = np.empty((n_pixels, 3), np.float32)
            for j in range(work_offsets[w], work_offsets[w + 1]):
                _backward_tile(work_tiles[j], offsets, ids, bbox, means2d, conics, colors, opacities, width,
                               height, tile_size, tiles_x, tiles_per_camera, rgb, final_t, last, v_rgb,
                               v_alpha_out, isect_grad, buf_t, buf_acc)

    @numba.njit(cache=True, nogil=True)
    def gather_gradients(ids, isect_grad, n_flat):
        """Sum the intersections' gradients per flat Gaussian: ``[F, 9]``."""
        out = np.zeros((n_flat, 9), np.float32)
        for k in range(ids.shape[0]):
            f = ids[k]
            for j in range(9):
                out[f, j] += isect_grad[k, j]
        return out


def split_work(cost: np.ndarray, n_workers: int) -> tuple[np.ndarray, np.ndarray]:
    """Tiles (those with work) split into ``n_workers`` lists of about equal cost: greedy,
    costliest first. Returns ``(offsets [n_workers + 1], tiles)``."""
    busy = np.flatnonzero(cost > 64)
    if n_workers <= 1 or len(busy) <= 1:
        return np.array([0, len(busy)], np.int64), busy.astype(np.int64)
    order = busy[np.argsort(-cost[busy], kind="stable")]
    # Snake assignment (0, 1, ..., n-1, n-1, ..., 0, ...): near-greedy, in bulk.
    rounds = np.arange(len(order)) // n_workers
    position = np.arange(len(order)) % n_workers
    worker = np.where(rounds % 2 == 0, position, n_workers - 1 - position)
    grouped = np.argsort(worker, kind="stable")
    counts = np.bincount(worker, minlength=n_workers)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return offsets, order[grouped].astype(np.int64)
