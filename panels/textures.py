# SPDX-License-Identifier: GPL-3.0-or-later
"""The "Texture" sub-panel of "Fields and Meshes": bake a texture from the photos onto the
active mesh."""

import bpy

from ..addon import textures
from ..addon.jobs import manager
from .base import SidebarPanel


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
        col = layout.column()
        col.use_property_split = True
        col.use_property_decorate = False
        for name in textures.SETTING_NAMES:
            col.prop(settings, name)
        running = next((job for job in reversed(manager().active_jobs()) if job.kind == "texture"), None)
        if running is None:
            row = layout.row()
            row.enabled = mesh is not None
            row.operator("recon.bake_texture", icon="TEXTURE")
        else:
            box = layout.box()
            row = box.row()
            row.progress(factor=running.fraction, type="BAR", text=f"{running.stage} {100 * running.fraction:.0f}%")
            row.operator("recon.cancel_job", text="", icon="CANCEL").job = running.id
            if running.message:
                box.label(text=running.message)
