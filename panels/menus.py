# SPDX-License-Identifier: GPL-3.0-or-later
"""Entries in File > Import and File > Export."""

import bpy


def draw_import(self, context):
    self.layout.operator("recon.import_reconstruction", text="Recon Reconstruction (COLMAP, transforms.json)")


def draw_export(self, context):
    self.layout.operator("recon.export_cameras", text="Recon Cameras (COLMAP, transforms.json)")


def register():
    bpy.types.TOPBAR_MT_file_import.append(draw_import)
    bpy.types.TOPBAR_MT_file_export.append(draw_export)


def unregister():
    bpy.types.TOPBAR_MT_file_export.remove(draw_export)
    bpy.types.TOPBAR_MT_file_import.remove(draw_import)
