# SPDX-License-Identifier: GPL-3.0-or-later
"""Textured meshes from posed photos: a UV atlas (xatlas), a z-buffer rasteriser for
visibility, and the bake of each texel's colour from the photos that see it best."""
