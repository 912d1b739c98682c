# SPDX-License-Identifier: GPL-3.0-or-later
import bpy

from ..addon import body
from .base import SidebarPanel


class RECON_PT_body(SidebarPanel, bpy.types.Panel):
    bl_idname = "RECON_PT_body"
    bl_label = "Fit Body"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.recon_body
        cameras = body.selected_cameras(context)
        if cameras:
            layout.label(text=f"{len(cameras)} selected camera(s) with their photos", icon="CAMERA_DATA")
        else:
            layout.label(text="The images selected in the Outliner", icon="IMAGE_DATA")
        col = layout.column()
        col.use_property_split = True
        col.use_property_decorate = False
        col.prop(settings, "model")
        if settings.model == "FILE":
            col.prop(settings, "model_file")
        else:
            col.prop(settings, "rig")
        col.prop(settings, "keypoints")
        layout.operator("recon.fit_body", icon="OUTLINER_OB_ARMATURE")

        armature = body.body_armature(context.active_object)
        if armature is None:
            return
        box = layout.box()
        box.label(text=f"{armature.name}: {armature.get('recon_body_model', '')} shape", icon="MOD_ARMATURE")
        if "recon_fit_error_px" in armature:
            box.label(text=f"Keypoint error {armature['recon_fit_error_px']:.1f} px")
        col = box.column(align=True)
        for name in armature.get("recon_shape_names", ()):
            key = body.SHAPE_PREFIX + str(name)
            if key in armature:
                col.prop(armature, f'["{key}"]', text=str(name).replace("_", " ").title())
        box.operator("recon.set_body_shape", icon="MOD_MESHDEFORM")


class RECON_PT_body_settings(SidebarPanel, bpy.types.Panel):
    bl_label = "Settings"
    bl_parent_id = "RECON_PT_body"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        settings = context.scene.recon_body
        col = layout.column()
        for name in ("iterations", "camera_iterations", "fit_shape", "flip", "focal_35mm", "metric_cameras",
                     "min_confidence", "max_people"):
            col.prop(settings, name)
        if settings.model == "FILE":
            col.prop(settings, "num_betas")
