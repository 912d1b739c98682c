# SPDX-License-Identifier: GPL-3.0-or-later
"""The "Texture" sub-panel of "Fields and Meshes": bake a texture from the photos onto the
active mesh."""

import bpy

from ..addon import textures
from .base import SidebarPanel, job_progress, running_job, settings_column


class RECON_PT_textures(SidebarPanel, bpy.types.Panel):
    bl_idname = "RECON_PT_textures"
    bl_label = "Texture"
    bl_parent_id = "RECON_PT_fields"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.recon_textures
        mesh = textures.source_mesh(context)
        layout.label(text=mesh.name if mesh is not None else "Make a mesh the active object",
                     icon="MESH_DATA" if mesh is not None else "INFO")
        settings_column(layout, settings, textures.SETTING_NAMES)
        running = running_job("texture")
        if running is None:
            row = layout.row()
            row.enabled = mesh is not None
            row.operator("recon.bake_texture", icon="TEXTURE")
        else:
            job_progress(layout, running)
