# SPDX-License-Identifier: GPL-3.0-or-later
"""The "Fields and Meshes" panel: train a radiance field on a reconstruction (with its live
preview and held-out PSNR), render it through the active camera. The mesh and texture tools
add their own sub-panels with ``bl_parent_id = "RECON_PT_fields"``."""

import bpy

from ..addon import fields
from .base import SidebarPanel, job_progress, running_job, settings_column


class RECON_PT_fields(SidebarPanel, bpy.types.Panel):
    bl_idname = "RECON_PT_fields"
    bl_label = "Fields and Meshes"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.recon_fields
        collection = fields.reconstruction_collection(context)
        if collection is None:
            layout.label(text="Make a reconstruction's collection active", icon="INFO")
        else:
            layout.label(text=collection.name, icon="OUTLINER_COLLECTION")

        settings_column(layout, settings, fields.SETTING_NAMES)
        training = running_job("nerf")
        if training is None:
            row = layout.row()
            row.enabled = collection is not None
            if collection is not None and fields.stopped_checkpoint(collection) is not None:
                row.operator("recon.train_field", text="Continue Training", icon="PLAY").resume = True
                row.operator("recon.train_field", text="Start Over", icon="FILE_REFRESH").resume = False
            else:
                row.operator("recon.train_field", icon="OUTLINER_OB_LIGHTPROBE")
        else:
            job_progress(layout, training)

        preview = bpy.data.images.get(fields.PREVIEW_IMAGE)
        if preview is not None and preview.preview is not None and (training is not None or collection is not None):
            layout.template_icon(icon_value=preview.preview.icon_id, scale=8.0)

        folder = fields.field_folder(collection) if collection is not None else None
        if folder is None:
            return
        box = layout.box()
        box.label(text=fields.field_summary(folder) or "Field", icon="CHECKMARK")
        row = box.row(align=True)
        row.prop(settings, "animation", toggle=True)
        row.prop(settings, "transparent", toggle=True)
        box.operator("recon.render_field", icon="RENDER_STILL")
