# SPDX-License-Identifier: GPL-3.0-or-later
"""The "Mesh" sub-panel of "Fields and Meshes": extract a mesh from a trained field or from
the active splats."""

import bpy

from ..addon import meshes
from .base import SidebarPanel, job_progress, running_job, settings_column


class RECON_PT_meshes(SidebarPanel, bpy.types.Panel):
    bl_idname = "RECON_PT_meshes"
    bl_label = "Mesh"
    bl_parent_id = "RECON_PT_fields"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.recon_meshes
        splat_object = meshes.source_splats(context)
        collection = None if splat_object is not None else meshes.source_collection(context)
        if splat_object is not None:
            layout.label(text=f"From splats '{splat_object.name}'", icon="OUTLINER_OB_POINTCLOUD")
        elif collection is not None:
            layout.label(text=f"From the field of '{collection.name}'", icon="OUTLINER_OB_LIGHTPROBE")
        else:
            layout.label(text="Train a field, or make splats active", icon="INFO")
        names = [n for n in meshes.SETTING_NAMES if settings.mode == "sdf" or not n.startswith("sdf_")]
        settings_column(layout, settings, names)
        running = running_job("mesh")
        if running is None:
            row = layout.row()
            row.enabled = splat_object is not None or collection is not None
            row.operator("recon.extract_mesh", icon="MESH_ICOSPHERE")
        else:
            job_progress(layout, running)
