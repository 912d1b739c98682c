# SPDX-License-Identifier: GPL-3.0-or-later
"""Radiance fields: an Instant-NGP field (multiresolution hash grid, small MLPs, occupancy
grid) and the classic positional-encoding NeRF, trained from posed photos on the CPU or on
CUDA.

- :mod:`.hashgrid`: the hash-grid encoding (pure PyTorch, a fused numba path on the CPU,
  tiny-cuda-nn's on CUDA); :mod:`.reference` is the direct implementation the tests
  compare it with.
- :mod:`.field`: the fields, their ``field.json`` and checkpoint, :func:`.field.load_field`
  and ``Field.density(points_world)`` (for the mesh job).
- :mod:`.rays`: photos and camera rays; :mod:`.render`: the occupancy grid, sampling and
  volume rendering; :mod:`.train`: the training loop; :mod:`.cpu`: threads and memory on
  busy CPUs.

A field's world frame is the scene's frame; every map from it into the encoding's unit
cube (the box, or the centre and radius of a contracted unbounded scene) is written in
``field.json``.
"""
