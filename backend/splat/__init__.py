# SPDX-License-Identifier: GPL-3.0-or-later
"""3D Gaussian splatting (Kerbl et al. 2023): the rasterizer (:mod:`.rasterize`, with the
dense reference in :mod:`.reference`), spherical harmonics (:mod:`.sh`), the standard 3DGS
``.ply`` (:mod:`.ply`) and training (:mod:`.train`)."""
