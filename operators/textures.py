# SPDX-License-Identifier: GPL-3.0-or-later
"""Textured meshes: ``recon.bake_texture`` (the ``texture`` job on the active mesh and a
reconstruction's cameras with their photos)."""

import bpy
from bpy.props import StringProperty

from ..addon import textures
from ..addon.jobs import manager
from .modal import BackendJobOperator


class RECON_OT_bake_texture(BackendJobOperator, bpy.types.Operator):
    """Unwrap the active mesh (UV atlas) and bake a texture onto it from the photos behind the
    reconstruction's cameras (or the selected cameras): each texel takes the photos that see it
    best. The result is a new object with a UV map and a material holding the texture"""

    bl_idname = "recon.bake_texture"
    bl_label = "Bake Texture"
    bl_options = {"REGISTER", "UNDO"}

    collection: StringProperty(name="Collection", description="The reconstruction whose cameras and photos to bake "
                                                                "from (empty: the selected cameras, or the active one)")
    __annotations__.update(textures.settings_properties())  # noqa: F821 - the class body's annotations

    @classmethod
    def poll(cls, context):
        if context.mode != "OBJECT":
            cls.poll_message_set("Switch to Object Mode first")
            return False
        if textures.source_mesh(context) is None:
            cls.poll_message_set("Make the mesh to texture the active object")
            return False
        return True

    def invoke(self, context, event):
        self.take_scene_settings(context.scene.recon_textures, textures.SETTING_NAMES)
        return self.start_modal(context)

    def submit(self, context):
        settings = {name: getattr(self, name) for name in textures.SETTING_NAMES}
        job = textures.prepare(context, textures.source_mesh(context), settings, self.collection)
        return manager().submit(job)

    def finish(self, context, job):
        obj = textures.import_result(job, context.scene)
        for other in context.selected_objects:
            other.select_set(False)
        obj.select_set(True)
        context.view_layer.objects.active = obj
        fallback = {"field": "; unseen parts from the field", "nearest": "; unseen parts from the nearest colour"}
        extra = fallback.get(job.summary.get("fallback"), "")
        self.report({"INFO"}, f"Baked '{obj.name}': {textures.summary_text(job)}{extra}")
