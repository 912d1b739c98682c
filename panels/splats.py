# SPDX-License-Identifier: GPL-3.0-or-later
import bpy

from ..addon import splat_train, splats
from ..addon.jobs import manager
from .base import SidebarPanel


class RECON_PT_splats(SidebarPanel, bpy.types.Panel):
    bl_idname = "RECON_PT_splats"
    bl_label = "Gaussian Splats"

    def draw(self, context):
        layout = self.layout
        self.draw_training(context, layout)
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

    @staticmethod
    def draw_training(context, layout) -> None:
        """Train from the active reconstruction, the running job's preview, the last state of a cancelled one."""
        box = layout.box()
        settings = getattr(context.scene, "recon_splat", None)
        if settings is not None:
            col = box.column(align=True)
            col.use_property_split = True
            col.use_property_decorate = False
            col.prop(settings, "preset")
            col.prop(settings, "max_minutes")
            col.prop(settings, "resolution_scale")
            col.prop(settings, "sh_degree")
            col.prop(settings, "max_gaussians")
        job = manager().latest("splat")
        box.operator("recon.train_splats", icon="SHADERFX")
        if job is not None and job.active:
            box.label(text=job.message or job.status)
            box.operator("recon.cancel_job", text="Stop Training", icon="CANCEL").job = job.id
        image = bpy.data.images.get(splat_train.PREVIEW_IMAGE)
        if job is not None and image is not None and image.preview is not None:
            box.template_icon(icon_value=image.preview.icon_id, scale=8.0)
        last = splat_train.last_state_job()
        if last is not None:
            iteration = splat_train.iteration_of(last)
            text = f"Import Last State (iteration {iteration})" if iteration is not None else "Import Last State"
            box.operator("recon.import_job_splats", text=text, icon="IMPORT").job = last.id
