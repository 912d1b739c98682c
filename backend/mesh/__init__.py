# SPDX-License-Identifier: GPL-3.0-or-later
"""Meshes from radiance fields and Gaussian splats (the ``mesh`` job).

- :mod:`.extract`: a density sampled on a dense grid in slabs (bounded memory, progress,
  cancel), its level set by marching cubes, interior cavities filled, cleanup (connected
  components by area: the largest kept, floaters below a fraction of it dropped), a
  vertex-clustering decimation to a face budget.
- :mod:`.sources`: the two density sources: a trained field (``load_field``; only the
  occupancy grid's occupied cells are evaluated, vertex colours from short rays into the
  surface along the normal) and splats (opacity x Gaussian kernel accumulated into the grid
  near each Gaussian, vectorised by footprint size; colours the kernel-weighted mean of the
  Gaussians' base colours).
"""
