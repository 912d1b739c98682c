# SPDX-License-Identifier: GPL-3.0-or-later
import bpy
from bpy.props import StringProperty

from ..addon import deform
from ..addon.jobs import manager
from .modal import BackendJobOperator


class RECON_OT_fit_mesh_to_points(BackendJobOperator, bpy.types.Operator):
    """Fit a mesh (an ico-sphere, or the other selected mesh) to the active point cloud.
    The result is a new object beside the cloud; the cloud is left as it is"""

    bl_idname = "recon.fit_mesh_to_points"
    bl_label = "Fit Mesh to Points"
    bl_options = {"REGISTER", "UNDO"}

    filepath: StringProperty(
        name="Point Cloud File",
        description="A .ply (or .npz, .xyz) point cloud to fit instead of the active object",
        subtype="FILE_PATH",
        options={"SKIP_SAVE"},
    )
    __annotations__.update(deform.settings_properties())  # noqa: F821 - the class body's annotations

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        if context.mode != "OBJECT":
            cls.poll_message_set("Switch to Object Mode first")
            return False
        if obj is None or obj.type not in {"MESH", "POINTCLOUD"}:
            if context.scene.recon_deform.points_file:
                return True
            cls.poll_message_set("Select a point cloud (a mesh with vertices or a Point Cloud object) as the active object")
            return False
        return True

    def invoke(self, context, event):
        self.take_scene_settings(context.scene.recon_deform, deform.SETTING_NAMES)
        return self.start_modal(context)  # submit() falls back to the panel's points file

    def submit(self, context):
        obj = context.active_object
        if not self.filepath and (obj is None or obj.type not in {"MESH", "POINTCLOUD"}):
            self.filepath = context.scene.recon_deform.points_file
        cloud = None if self.filepath else obj
        # The template: another selected mesh (not the cloud), else an ico-sphere.
        template = next((o for o in context.selected_objects if o.type == "MESH" and o is not cloud), None)
        config = {name: getattr(self, name) for name in deform.SETTING_NAMES}
        job, self._target = deform.prepare(context, cloud=cloud, filepath=self.filepath, template=template, config=config)
        return manager().submit(job)

    def finish(self, context, job):
        obj = deform.import_result(job, self._target)
        for other in context.selected_objects:
            other.select_set(False)
        obj.select_set(True)
        context.view_layer.objects.active = obj
        chamfer = job.summary.get("chamfer")
        self.report({"INFO"}, f"Fitted '{obj.name}': {len(obj.data.vertices)} vertices, chamfer {chamfer:.3g}")

