# SPDX-License-Identifier: GPL-3.0-or-later
"""Operators (``bpy.ops.recon.*``): gather inputs, submit a job, report. One module per job kind."""

import bpy

from .body import RECON_OT_fit_body, RECON_OT_set_body_shape
from .deform import RECON_OT_fit_mesh_to_points
from .fields import RECON_OT_render_field, RECON_OT_train_field
from .io import RECON_OT_export_cameras, RECON_OT_import_reconstruction
from .jobs import RECON_OT_backend_doctor, RECON_OT_cancel_job
from .meshes import RECON_OT_extract_mesh
from .sfm import RECON_OT_run_sfm
from .splats import (
    RECON_OT_crop_splats,
    RECON_OT_delete_splats,
    RECON_OT_export_splats,
    RECON_OT_import_job_splats,
    RECON_OT_import_splats,
    RECON_OT_setup_splat_render,
    RECON_OT_train_splats,
)
from .textures import RECON_OT_bake_texture

classes = (
    RECON_OT_fit_mesh_to_points,
    RECON_OT_run_sfm,
    RECON_OT_import_reconstruction,
    RECON_OT_export_cameras,
    RECON_OT_import_splats,
    RECON_OT_export_splats,
    RECON_OT_crop_splats,
    RECON_OT_delete_splats,
    RECON_OT_setup_splat_render,
    RECON_OT_train_splats,
    RECON_OT_import_job_splats,
    RECON_OT_train_field,
    RECON_OT_render_field,
    RECON_OT_extract_mesh,
    RECON_OT_bake_texture,
    RECON_OT_fit_body,
    RECON_OT_set_body_shape,
    RECON_OT_cancel_job,
    RECON_OT_backend_doctor,
)


register, unregister = bpy.utils.register_classes_factory(classes)
