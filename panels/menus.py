# SPDX-License-Identifier: GPL-3.0-or-later
"""Entries in File > Import and File > Export."""

import bpy


def draw_import(self, context):
    self.layout.operator("recon.import_reconstruction", text="Recon Reconstruction (COLMAP, transforms.json)")
    self.layout.operator("recon.import_splats", text="Gaussian Splats (.ply)")


def draw_export(self, context):
    self.layout.operator("recon.export_cameras", text="Recon Cameras (COLMAP, transforms.json)")
    self.layout.operator("recon.export_splats", text="Gaussian Splats (.ply)")


def draw_outliner(self, context):
    """Right-click on images selected in the Outliner (Blender File view): solve their cameras."""
    if any(isinstance(block, bpy.types.Image) for block in getattr(context, "selected_ids", None) or ()):
        self.layout.separator()
        self.layout.operator("recon.run_sfm", text="Solve Cameras from Images", icon="CAMERA_DATA").source = "IMAGES"


def register():
    bpy.types.TOPBAR_MT_file_import.append(draw_import)
    bpy.types.TOPBAR_MT_file_export.append(draw_export)
    bpy.types.OUTLINER_MT_context_menu.append(draw_outliner)


def unregister():
    bpy.types.OUTLINER_MT_context_menu.remove(draw_outliner)
    bpy.types.TOPBAR_MT_file_export.remove(draw_export)
    bpy.types.TOPBAR_MT_file_import.remove(draw_import)
