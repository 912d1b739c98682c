# SPDX-License-Identifier: GPL-3.0-or-later
import bpy

from .base import SidebarPanel


class RECON_PT_sfm(SidebarPanel, bpy.types.Panel):
    bl_idname = "RECON_PT_sfm"
    bl_label = "Solve Cameras"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.recon_sfm
        layout.prop(settings, "source", expand=True)
        if settings.source == "FOLDER":
            layout.prop(settings, "directory")
        elif settings.source == "IMAGES":
            layout.label(text="The images selected in the Outliner or File Browser", icon="IMAGE_DATA")
        else:
            layout.prop_search(settings, "clip", bpy.data, "movieclips")
            layout.prop(settings, "frame_step")
        col = layout.column()
        col.use_property_split = True
        col.use_property_decorate = False
        for name in ("camera_model", "shared_camera", "matcher", "max_image_size", "focal_length_px", "refine_principal_point"):
            col.prop(settings, name)
        col.separator()
        for name in ("align", "known_distance", "animated_camera"):
            col.prop(settings, name)
        layout.operator("recon.run_sfm", icon="CAMERA_DATA")
        row = layout.row(align=True)
        row.operator("recon.import_reconstruction", text="Import...", icon="IMPORT")
        row.operator("recon.export_cameras", text="Export Cameras...", icon="EXPORT")
