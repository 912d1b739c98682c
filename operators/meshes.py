# SPDX-License-Identifier: GPL-3.0-or-later
"""Meshes from fields and splats: ``recon.extract_mesh`` (the ``mesh`` job on a
reconstruction's trained field, or on the active splat object)."""

import bpy
from bpy.props import StringProperty

from ..addon import meshes
from ..addon.jobs import manager
from .modal import BackendJobOperator


class RECON_OT_extract_mesh(BackendJobOperator, bpy.types.Operator):
    """Extract a mesh with vertex colours from the active splat object, or from the trained field
    of the reconstruction in context: the surface where the density crosses a threshold, floaters
    dropped, simplified to a face budget. The mesh lands on the cameras and points it came from"""

    bl_idname = "recon.extract_mesh"
    bl_label = "Extract Mesh"
    bl_options = {"REGISTER", "UNDO"}

    collection: StringProperty(name="Collection", description="The reconstruction whose field to mesh (empty: the "
                                                                "active splat object, else the one in context)")
    __annotations__.update(meshes.settings_properties())  # noqa: F821 - the class body's annotations

    @classmethod
    def poll(cls, context):
        if context.mode != "OBJECT":
            cls.poll_message_set("Switch to Object Mode first")
            return False
        if meshes.source_splats(context) is None and meshes.source_collection(context) is None:
            cls.poll_message_set("Make a splat object, or a reconstruction with a trained field, active")
            return False
        return True

    def invoke(self, context, event):
        self.take_scene_settings(context.scene.recon_meshes, meshes.SETTING_NAMES)
        return self.start_modal(context)

    def submit(self, context):
        config = {name: getattr(self, name) for name in meshes.SETTING_NAMES}
        splat_object = None if self.collection else meshes.source_splats(context)
        job, self._target = meshes.prepare(context, config, self.collection, splat_object)
        return manager().submit(job)

    def finish(self, context, job):
        obj = meshes.import_result(job, self._target, context.scene)
        for other in context.selected_objects:
            other.select_set(False)
        obj.select_set(True)
        context.view_layer.objects.active = obj
        self.report({"INFO"}, f"Extracted '{obj.name}': {meshes.summary_text(job)}")
