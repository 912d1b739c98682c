# SPDX-License-Identifier: GPL-3.0-or-later
"""A training step of the hash-grid field on the CPU with its backward written out.

The loss and gradients of :func:`.render.render_rays_ngp` followed by
``F.mse_loss(rgb, target).backward()``, computed without autograd's graph (the tests compare
it with autograd through a plain PyTorch rendering). Samples behind ``min_transmittance``
(a suffix of each ray) are left out, density and colour, as ``render_rays_ngp`` does when it
evaluates the kept samples again: at most that much light is lost, and neither their MLPs'
backward nor their encoding's is computed.

1. the samples are placed in the occupancy grid's occupied cells (:func:`.render.sample_occupied`)
   and the hash-grid encoding of all of them is computed at once (numba, every thread);
2. the rays are cut into chunks of about :data:`CHUNK_SAMPLES` samples, and the chunks are
   shared out among worker threads, each running PyTorch operations on one thread: the
   density MLP on every sample, the transmittance (:func:`._kernels.transmittance_`), the
   colour MLP on the samples the light reaches, then the colours, the compositing, the
   squared error and the compositing's gradient in closed form (``dC/dtau_i = T_{i+1} c_i -
   S_i``, ``S_i`` the colour composited behind sample ``i``, background included), ray by
   ray in one numba pass each way (:func:`._kernels.composite_backward_`, in place of two
   dozen PyTorch element-wise operations: about 15 ms less per step on one thread), the
   MLPs' backward as matrix products, each worker summing its own weight gradients (a small
   batch, fewer than :data:`MIN_CHUNKS_PER_WORKER` chunks a worker, runs in the calling
   thread instead, with PyTorch's threads: handing a few chunks to workers costs more than
   it saves). Where PyTorch's library exports MKL's ``sgemm_`` (its Linux x86-64 builds), a
   chunk runs instead in :func:`._mlp.chunk_`, one numba kernel that does all of this a
   block of 512 samples at a time, its matrix products calling MKL directly: the same
   products, with every activation in the L2 cache (at 4096 x 64 samples on 2 cores this
   phase went from 170 to 135 ms in interleaved runs, 226 to 128 ms in a slower phase of the
   machine; ``RECON_NERF_BLAS_KERNEL=0`` turns it off); then only a batch of one chunk
   runs in the calling thread;
3. the gradient of the encoding's outputs (kept for every sample reached) is scattered into
   the table's gradient by the numba backward kernel (every thread, a level per thread).
   (Taking each level's Adam step inside that kernel, right after its scatter, was tried:
   no faster with 2 threads, slower with one.)

Why: at 4096 rays x 64 samples the activations are ``[262144, 64]`` float32, 64 MB each;
autograd's graph keeps a dozen of them and each element-wise pass streams them through
memory, and PyTorch splits small matrix products badly over 2 threads. A chunk's
activations (a few MB) stay in the caches, and each thread works on its own chunks.
"""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

from . import _kernels, _mlp
from .field import Field, NGPField, spherical_harmonics_4
from .hashgrid import kernels_take
from .render import T_MIN, ray_spans, sample_occupied

CHUNK_SAMPLES = 8192  # samples per chunk of rays (activations about 2 MB per layer)
MIN_CHUNKS_PER_WORKER = 4  # fewer chunks than this per worker thread: no worker threads

_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()


def available(fld: Field) -> bool:
    """Whether ``fld`` trains through this step: an :class:`NGPField` on the CPU with the
    numba encoding (2 features per level, the table contiguous) and float32 parameters."""
    model = fld.model
    return isinstance(model, NGPField) and kernels_take(model.encoding.table)


def path_name() -> str:
    """How this step runs its MLPs here, for logs and results."""
    return "numba hash grid + MLP kernel (numba, MKL sgemm)" if _mlp.available() else \
        "numba hash grid + PyTorch MLPs"


def _executor(workers: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size != workers:
            if _pool is not None:
                _pool.shutdown(wait=True)
            _pool, _pool_size = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="recon-nerf"), workers
        return _pool


def _linear_weights(net: torch.nn.Sequential) -> list[Tensor]:
    return [layer.weight for layer in net if isinstance(layer, torch.nn.Linear)]


class _Chunks:
    """What every chunk reads, and where each writes its encoding gradient and which of its
    samples the light reaches (``kept``), each chunk its own rows."""

    def __init__(self, encoded, grad_encoded, dt, rays_dir_sh, background, target, density_w, color_w, samples,
                 min_transmittance, scale):
        self.encoded, self.grad_encoded = encoded, grad_encoded
        self.kept = torch.empty(encoded.shape[1], dtype=torch.bool)  # samples the light reaches
        self.dt, self.sh, self.background, self.target = dt, rays_dir_sh, background, target
        self.density_w, self.color_w = density_w, color_w
        self.samples, self.min_transmittance, self.scale = samples, min_transmittance, scale

    def arrays(self) -> tuple:
        """:func:`._mlp.chunk_`'s inputs and outputs before the weight gradients, as C-ordered
        numpy arrays (the kernel hands their rows to the BLAS by pointer and row length)."""
        tensors = (self.encoded, self.grad_encoded, self.kept, self.dt, self.sh, self.background, self.target,
                   *self.density_w, *self.color_w)
        assert all(t.is_contiguous() for t in tensors[:3]), "the kernel writes into these in place"
        return tuple(np.ascontiguousarray(t.numpy()) for t in tensors)


def _relu_back(grad: Tensor, activation: Tensor) -> Tensor:
    _kernels.relu_backward_(grad.numpy(), activation.numpy())  # PyTorch's masks: 4 to 20 times slower here
    return grad


def _chunk_blas(c: _Chunks, a: int, b: int, grads: list[Tensor], arrays: tuple) -> tuple[float, int]:
    """:func:`_chunk` by :func:`._mlp.chunk_` (``arrays``: :meth:`_Chunks.arrays`)."""
    return _mlp.chunk_(*arrays, *(g.numpy() for g in grads), a, b, np.float32(c.min_transmittance), c.scale,
                       max(1, _mlp.BLOCK_SAMPLES // c.samples))


def _chunk(c: _Chunks, a: int, b: int, grads: list[Tensor]) -> tuple[float, int]:
    """Forward and backward of hit rays ``a:b``; adds into ``grads`` (density layers, then
    colour layers); returns the chunk's summed squared error and its coloured samples."""
    s = c.samples
    r = b - a
    enc = c.encoded[:, a * s:b * s].T  # [n, L * 2], a view of the feature-major encoding
    dw, cw = c.density_w, c.color_w
    n_d = len(dw)
    # density MLP, every sample
    hidden_d = []
    h = enc
    for i, w in enumerate(dw):
        h = h @ w.T
        if i < n_d - 1:
            h.clamp_min_(0.0)
            hidden_d.append(h)
    geo = h  # [n, G]
    x0 = geo[:, 0].numpy()  # log-densities (a column view)
    dt = c.dt[a:b].numpy()
    weights, t_after = np.empty((r, s), np.float32), np.empty((r, s), np.float32)
    t_final, lit = np.empty(r, np.float32), np.empty(r, np.int64)
    k = _kernels.transmittance_(x0, dt, c.min_transmittance, weights, t_after, t_final, lit)
    every = k == r * s
    keep_mask = torch.arange(s)[None, :] < torch.from_numpy(lit)[:, None]  # each ray's lit prefix
    c.kept[a * s:b * s] = keep_mask.flatten()
    # colour MLP on the lit samples, its direction half once per ray
    w_first = cw[0]
    sh = c.sh[a:b]
    from_dir = sh @ w_first[:, :16].T  # [r, H]
    if every:
        geo_k = geo
        h = geo_k @ w_first[:, 16:].T
        h.view(r, s, -1).add_(from_dir[:, None])
        keep = None
        ray_of = None
    else:
        keep = torch.nonzero(keep_mask.flatten()).flatten()
        ray_of = keep // s
        geo_k = geo.index_select(0, keep)
        h = torch.addmm(from_dir.index_select(0, ray_of), geo_k, w_first[:, 16:].T)
    hidden_c = []
    for w in cw[1:]:
        h.clamp_min_(0.0)
        hidden_c.append(h)
        h = h @ w.T
    # colours, compositing, squared error and their backward (ray by ray, one pass each way):
    # the logits' gradient replaces them in h, the lit samples' log-density gradient in d_x0
    d_x0 = np.empty(k, np.float32)
    sq = _kernels.composite_backward_(h.numpy(), x0, dt, weights, t_after, t_final, lit, c.background[a:b].numpy(),
                                      c.target[a:b].numpy(), c.scale, d_x0)
    d_h = h
    # colour MLP, backward
    n_c = len(cw)
    first_c = n_d
    for i in range(n_c - 1, 0, -1):
        grads[first_c + i].addmm_(d_h.T, hidden_c[i - 1])
        d_h = _relu_back(d_h @ cw[i], hidden_c[i - 1])
    grad_first = grads[first_c]
    grad_first[:, 16:].addmm_(d_h.T, geo_k)
    if every:
        d_dir = d_h.view(r, s, -1).sum(1)
    else:
        d_dir = torch.zeros(r, d_h.shape[1]).index_add_(0, ray_of, d_h)
    grad_first[:, :16].addmm_(d_dir.T, sh)
    d_geo = d_h @ w_first[:, 16:]
    d_geo[:, 0] += torch.from_numpy(d_x0)
    # density MLP, backward (the kept samples only)
    d_h = d_geo
    for i in range(n_d - 1, 0, -1):
        hidden = hidden_d[i - 1] if every else hidden_d[i - 1].index_select(0, keep)
        grads[i].addmm_(d_h.T, hidden)
        d_h = _relu_back(d_h @ dw[i], hidden)
    grads[0].addmm_(d_h.T, enc if every else enc.index_select(0, keep))
    if every:
        torch.mm(dw[0].T, d_h.T, out=c.grad_encoded[:, a * s:b * s])
    else:
        c.grad_encoded[:, a * s:b * s].zero_().index_copy_(1, keep, torch.mm(dw[0].T, d_h.T))
    return sq, k


@torch.no_grad()
def loss_and_grads(
    fld: Field,
    origins: Tensor,  # [R, 3]
    dirs: Tensor,  # [R, 3] unit
    background: Tensor,  # [R, 3]
    target: Tensor,  # [R, 3]
    samples: int,
    jitter: Tensor,  # [R, S]
    min_transmittance: float = T_MIN,
    threads: int = 0,
    timings: dict[str, float] | None = None,
) -> dict[str, float]:
    """``F.mse_loss`` of the rendered rays against ``target``; the gradients are added to
    the MLP weights' ``.grad`` and the table's ``.grad`` (created when missing), as
    ``loss.backward()`` would. Returns ``loss`` and ``samples`` (samples that got a colour).
    ``timings``: wall seconds of each phase are added to it by name."""
    clock = _Clock(timings)
    model: NGPField = fld.model
    table = model.encoding.table
    n = origins.shape[0]
    background = background.expand(n, 3).float()
    spans = ray_spans(origins, dirs, fld.frame, fld.near, fld.far)
    t, dt, count = sample_occupied(origins, dirs, spans, fld.frame, fld.occupancy, jitter)
    hit = torch.nonzero(count > 0).flatten()
    clock("ray marching")
    dw = [w.detach() for w in _linear_weights(model.density_net)]
    cw = [w.detach() for w in _linear_weights(model.color_net)]
    params = _linear_weights(model.density_net) + _linear_weights(model.color_net)
    miss = torch.ones(n, dtype=torch.bool)
    miss[hit] = False
    err_miss = background[miss] - target[miss]
    total_sq = float((err_miss * err_miss).sum())
    coloured = 0
    if hit.numel():
        th, dth, d = t[hit], dt[hit], dirs[hit]
        points = origins[hit][:, None, :] + th[..., None] * d[:, None, :]
        u = fld.frame.to_unit(points.reshape(-1, 3)).clamp_(0.0, 1.0).contiguous()
        levels = model.encoding.levels
        ut = np.ascontiguousarray(u.numpy().T)  # [3, N]: the kernels read each axis as a run
        encoded = np.empty((2 * levels.scales.shape[0], ut.shape[1]), np.float32)  # feature-major [L * 2, N]
        _kernels.encode_forward_t(ut, table.detach().numpy(), levels.offsets, levels.scales, levels.resolutions,
                                  levels.dense, encoded)
        clock("hash encoding forward")
        grad_encoded = np.empty_like(encoded)
        chunks = _Chunks(torch.from_numpy(encoded), torch.from_numpy(grad_encoded), dth.float().contiguous(),
                         spherical_harmonics_4(d.float()), background[hit], target[hit].float(), dw, cw, samples,
                         float(min_transmittance), np.float32(2.0 / (3 * n)))
        h = hit.numel()
        per = max(1, CHUNK_SAMPLES // samples)
        bounds = [(a, min(h, a + per)) for a in range(0, h, per)]
        workers = max(1, min(threads or torch.get_num_threads(), len(bounds)))
        results = _run_chunks(chunks, bounds, workers, [w.shape for w in dw + cw])
        clock("MLPs and compositing, forward and backward")
        grads = [sum(parts) for parts in zip(*(r[0] for r in results), strict=True)]
        total_sq += sum(r[1] for r in results)
        coloured = sum(r[2] for r in results)
        for p, gsum in zip(params, grads, strict=True):
            p.grad = gsum if p.grad is None else p.grad.add_(gsum)
        if table.grad is None:
            table.grad = torch.zeros_like(table)
        if not bool(chunks.kept.all()):  # the samples left out have no gradient: skip them
            kept = torch.nonzero(chunks.kept).flatten().numpy()
            ut, grad_encoded = np.take(ut, kept, axis=1), np.take(grad_encoded, kept, axis=1)  # [:, kept]: 5x slower
        _kernels.encode_backward_t(ut, grad_encoded, levels.offsets, levels.scales, levels.resolutions, levels.dense,
                                   table.grad.numpy())
        clock("hash encoding backward")
    return {"loss": total_sq / (3 * n), "samples": coloured}


class _Clock:
    """Adds the wall time since the previous call to ``timings[name]`` (nothing without ``timings``)."""

    def __init__(self, timings: dict[str, float] | None) -> None:
        self.timings, self.last = timings, time.perf_counter()

    def __call__(self, name: str) -> None:
        if self.timings is not None:
            now = time.perf_counter()
            self.timings[name] = self.timings.get(name, 0.0) + now - self.last
            self.last = now


def _run_chunks(chunks: _Chunks, bounds: list[tuple[int, int]], workers: int, shapes) -> list:
    """Each worker takes the next chunk not yet taken until none is left (chunks cost
    unequal times: rays that miss, samples left out), summing its own weight gradients.
    With :mod:`._mlp`'s kernel every chunk runs on one thread (its BLAS calls included),
    in worker threads whenever there are two chunks or more."""
    queue = iter(bounds)
    lock = threading.Lock()
    blas = _mlp.available()
    arrays = chunks.arrays() if blas else None

    def work(_worker: int):
        grads = [torch.zeros(shape) for shape in shapes]
        sq, coloured = 0.0, 0
        with _mlp.one_thread() if blas else contextlib.nullcontext():
            while True:
                with lock:
                    span = next(queue, None)
                if span is None:
                    return grads, sq, coloured
                if blas:
                    part_sq, part_n = _chunk_blas(chunks, span[0], span[1], grads, arrays)
                else:
                    part_sq, part_n = _chunk(chunks, span[0], span[1], grads)
                sq += part_sq
                coloured += part_n

    if workers == 1 or len(bounds) < (2 if blas else MIN_CHUNKS_PER_WORKER * workers):
        return [work(0)]  # a small batch: in this thread (PyTorch's own threads splitting each operation)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # each worker thread runs its operations alone (MKL's: _mlp.one_thread)
    try:
        return list(_executor(workers).map(work, range(workers)))
    finally:
        torch.set_num_threads(before)
