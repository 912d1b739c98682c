# SPDX-License-Identifier: GPL-3.0-or-later
import bpy
from bpy.props import EnumProperty, StringProperty

from . import ADDON_ID


class RECON_AddonPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    python_path: StringProperty(
        name="Backend Python",
        description=(
            "Python interpreter that has the backend's packages (torch, ...). "
            "Empty: the Python running Blender, or $RECON_BACKEND_PYTHON"
        ),
        subtype="FILE_PATH",
    )
    job_directory: StringProperty(
        name="Job Directory",
        description="Where each job writes its inputs, log and results. Empty: the extension's user folder",
        subtype="DIR_PATH",
    )
    device: EnumProperty(
        name="Device",
        description="Where the backend computes",
        items=[
            ("auto", "Automatic", "The GPU when the backend has CUDA, else the CPU"),
            ("cpu", "CPU", "Always the CPU"),
            ("cuda", "CUDA GPU", "An NVIDIA GPU through CUDA"),
        ],
        default="auto",
    )
    body_model_file: StringProperty(
        name="SMPL Model File",
        description=(
            "Your licensed SMPL, SMPL-H or SMPL-X model (.npz or .pkl), for fitting bodies with it instead of the "
            "free Anny model. Recon never ships or downloads these files"
        ),
        subtype="FILE_PATH",
    )

    def draw(self, context):
        layout = self.layout
        layout.prop(self, "python_path")
        layout.prop(self, "job_directory")
        layout.prop(self, "device")
        layout.prop(self, "body_model_file")
        layout.operator("recon.backend_doctor", icon="INFO")


def register():
    bpy.utils.register_class(RECON_AddonPreferences)


def unregister():
    bpy.utils.unregister_class(RECON_AddonPreferences)
