# SPDX-License-Identifier: GPL-3.0-or-later
"""Geometry shared by jobs: mesh and point I/O, nearest neighbours, differentiable losses."""
