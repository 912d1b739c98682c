# SPDX-License-Identifier: GPL-3.0-or-later
"""Fitting a template mesh to a point cloud (chamfer + edge + normal + Laplacian terms)."""
