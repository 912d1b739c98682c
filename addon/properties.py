# SPDX-License-Identifier: GPL-3.0-or-later
"""User settings kept on the scene (saved with the .blend, as any tool setting is).
Runtime job state is never stored here: it lives in addon/jobs.py."""

import bpy
from bpy.props import PointerProperty, StringProperty

from . import deform, photo_inputs, reconstruction, sfm


class RECON_PG_deform_settings(bpy.types.PropertyGroup):
    points_file: StringProperty(
        name="Points File",
        description="Fit this point cloud file (.ply, .npz, .xyz) when no point cloud object is active",
        subtype="FILE_PATH",
    )
    __annotations__.update(deform.settings_properties())  # noqa: F821 - the class body's annotations


class RECON_PG_sfm_settings(bpy.types.PropertyGroup):
    directory: StringProperty(name="Photos", description="A folder of photos of the subject", subtype="DIR_PATH")
    __annotations__.update(sfm.settings_properties())  # noqa: F821 - the class body's annotations
    __annotations__.update(reconstruction.import_properties(align_default=True))  # noqa: F821
    __annotations__.update({k: v for k, v in photo_inputs.source_properties().items() if k != "images"})  # noqa: F821


def register():
    bpy.utils.register_class(RECON_PG_deform_settings)
    bpy.utils.register_class(RECON_PG_sfm_settings)
    bpy.types.Scene.recon_deform = PointerProperty(type=RECON_PG_deform_settings)
    bpy.types.Scene.recon_sfm = PointerProperty(type=RECON_PG_sfm_settings)


def unregister():
    del bpy.types.Scene.recon_sfm
    del bpy.types.Scene.recon_deform
    bpy.utils.unregister_class(RECON_PG_sfm_settings)
    bpy.utils.unregister_class(RECON_PG_deform_settings)
