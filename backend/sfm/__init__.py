# SPDX-License-Identifier: GPL-3.0-or-later
"""Structure-from-Motion on pycolmap: photos to calibrated cameras and a sparse point cloud."""
