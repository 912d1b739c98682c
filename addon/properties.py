# SPDX-License-Identifier: GPL-3.0-or-later
"""User settings kept on the scene (saved with the .blend, as any tool setting is).
Runtime job state is never stored here: it lives in addon/jobs.py."""

import bpy
from bpy.props import PointerProperty, StringProperty

from . import body, deform, fields, meshes, photo_inputs, reconstruction, sfm, splat_train, textures


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


class RECON_PG_body_settings(bpy.types.PropertyGroup):
    __annotations__ = body.settings_properties()


class RECON_PG_splat_settings(bpy.types.PropertyGroup):
    __annotations__ = splat_train.settings_properties()


class RECON_PG_field_settings(bpy.types.PropertyGroup):
    __annotations__ = {**fields.settings_properties(), **fields.render_properties()}


class RECON_PG_mesh_settings(bpy.types.PropertyGroup):
    __annotations__ = meshes.settings_properties()


class RECON_PG_texture_settings(bpy.types.PropertyGroup):
    __annotations__ = textures.settings_properties()


_groups = (
    ("recon_deform", RECON_PG_deform_settings),
    ("recon_sfm", RECON_PG_sfm_settings),
    ("recon_body", RECON_PG_body_settings),
    ("recon_splat", RECON_PG_splat_settings),
    ("recon_fields", RECON_PG_field_settings),
    ("recon_meshes", RECON_PG_mesh_settings),
    ("recon_textures", RECON_PG_texture_settings),
)


def register():
    for name, group in _groups:
        bpy.utils.register_class(group)
        setattr(bpy.types.Scene, name, PointerProperty(type=group))


def unregister():
    for name, group in reversed(_groups):
        delattr(bpy.types.Scene, name)
        bpy.utils.unregister_class(group)
