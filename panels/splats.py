# SPDX-License-Identifier: GPL-3.0-or-later
import bpy

from ..addon import splats
from .base import SidebarPanel


class RECON_PT_splats(SidebarPanel, bpy.types.Panel):
    bl_idname = "RECON_PT_splats"
    bl_label = "Gaussian Splats"

    def draw(self, context):
        layout = self.layout
        row = layout.row(align=True)
        row.operator("recon.import_splats", text="Import...", icon="IMPORT")
        row.operator("recon.export_splats", text="Export...", icon="EXPORT")
        obj = context.active_object
        if not splats.is_splat_object(obj):
            layout.label(text="Import a 3DGS .ply, or make splats active", icon="INFO")
            return
        count, degree = splats.count_and_degree(obj)
        col = layout.column(align=True)
        col.label(text=f"{count:,} Gaussians, SH degree {degree}", icon="OUTLINER_OB_POINTCLOUD")
        modifier = obj.modifiers.get(splats.MODIFIER)
        key = splats.display_blending_key(modifier)
        if key is not None:
            col.prop(modifier, f'["{key}"]', text=splats.DISPLAY_BLENDING)
        view = context.scene.view_settings
        wanted = "Raw" if splats.display_blending(obj) else "Standard"
        if view.view_transform != wanted or view.look != "None":
            col.label(text=f"View transform {view.view_transform}: colours differ from training", icon="ERROR")
            col.operator("recon.setup_splat_render", icon="SCENE")
        col = layout.column(align=True)
        col.operator("recon.crop_splats", icon="SELECT_INTERSECT")
        col.operator("recon.delete_splats", icon="TRASH")
