# SPDX-License-Identifier: GPL-3.0-or-later
import bpy

from .base import SidebarPanel


class RECON_PT_fit_mesh(SidebarPanel, bpy.types.Panel):
    bl_idname = "RECON_PT_fit_mesh"
    bl_label = "Fit Mesh to Points"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.recon_deform
        obj = context.active_object
        col = layout.column()
        if obj is not None and obj.type in {"MESH", "POINTCLOUD"}:
            col.label(text=f"Points: {obj.name}", icon="OUTLINER_OB_POINTCLOUD")
            template = next((o for o in context.selected_objects if o.type == "MESH" and o is not obj), None)
            col.label(text=f"Template: {template.name if template else 'Ico-sphere'}", icon="MESH_ICOSPHERE")
        else:
            col.prop(settings, "points_file")
        col.operator("recon.fit_mesh_to_points", icon="MOD_SHRINKWRAP")


class RECON_PT_fit_mesh_settings(SidebarPanel, bpy.types.Panel):
    bl_label = "Settings"
    bl_parent_id = "RECON_PT_fit_mesh"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        settings = context.scene.recon_deform
        col = layout.column()
        col.prop(settings, "subdivisions")
        col.prop(settings, "iterations")
        col.prop(settings, "samples")
        col = layout.column(heading="Weights")
        for name in ("w_chamfer", "w_edge", "w_normal", "w_laplacian"):
            col.prop(settings, name)
        col.prop(settings, "laplacian")
        col = layout.column(heading="Optimiser")
        col.prop(settings, "lr")
        col.prop(settings, "momentum")
        col.prop(settings, "seed")
