# SPDX-License-Identifier: GPL-3.0-or-later
import bpy
from bpy.props import CollectionProperty, StringProperty

from ..addon import body, photo_inputs
from ..addon.jobs import manager
from .modal import BackendJobOperator


class RECON_OT_fit_body(BackendJobOperator, bpy.types.Operator):
    """Fit a rigged human body to the selected photos (image datablocks or image empties), or to
    the selected cameras with background photos (fitted jointly, in the cameras' world): a mesh,
    an armature with the model's bones and skin weights, posed like the person"""

    bl_idname = "recon.fit_body"
    bl_label = "Fit Body"
    bl_options = {"REGISTER", "UNDO"}

    images: CollectionProperty(
        type=bpy.types.PropertyGroup, name="Images",
        description="Names of the photos' image datablocks (empty: the selected cameras, else the selected images)",
    )
    filepath: StringProperty(name="Photo", description="A photo of a person (or a folder of photos of one person) "
                             "instead of the selection", subtype="FILE_PATH", options={"SKIP_SAVE"})
    __annotations__.update(body.settings_properties())  # noqa: F821 - the class body's annotations

    @classmethod
    def poll(cls, context):
        if context.mode != "OBJECT":
            cls.poll_message_set("Switch to Object Mode first")
            return False
        return True

    def invoke(self, context, event):
        self.take_scene_settings(context.scene.recon_body, body.SETTING_NAMES)
        return self.start_modal(context)

    def submit(self, context):
        config = {name: getattr(self, name) for name in body.CONFIG_NAMES}
        names = [item.name for item in self.images]
        cameras = [] if names or self.filepath else body.selected_cameras(context)
        images = None
        if not cameras and not self.filepath:
            images = photo_inputs.images_from_context(context, names)
        job = body.prepare(context, config, images=images, cameras=cameras, photo_path=self.filepath,
                           keypoints=self.keypoints, model=self.model, model_file=self.model_file)
        return manager().submit(job)

    def finish(self, context, job):
        armature, mesh, cameras = body.import_result(job, context.scene)
        for other in context.selected_objects:
            other.select_set(False)
        armature.select_set(True)
        context.view_layer.objects.active = armature
        self.report(*fit_report(job.summary, armature))


def fit_report(summary: dict, armature) -> tuple[set, str]:
    """The operator's report of a body fit: what was fitted, and the photos without a person,
    left out, or with other people."""
    errors = list((summary.get("fit_error_px") or {}).values())
    error = ""
    if errors:
        error = f", median keypoint error {'up to ' if len(errors) > 1 else ''}{max(errors):.1f} px"
    height = summary.get("height_m", 0.0)
    size = f"{height:.2f} m" if summary.get("scale", 1.0) == 1.0 else f"{height:.2f} tall in the cameras' units"
    message = (f"Fitted {summary.get('model', 'a body')} ({summary.get('bones', '?')} bones, {size}) to "
               f"{', '.join(summary.get('photos', [])) or 'the photos'} as '{armature.name}'{error}")
    notes = []
    if summary.get("photos_without_person"):
        notes.append(f"no person found in {', '.join(summary['photos_without_person'])}")
    if summary.get("photos_left_out"):
        notes.append(f"left out (no cameras to fit them jointly): {', '.join(summary['photos_left_out'])}")
    for photo, people in (summary.get("other_people") or {}).items():
        notes.append(f"{photo}: fitted the largest person; also seen: {'; '.join(people)}")
    if notes:
        return {"WARNING"}, f"{message}; " + "; ".join(notes)
    return {"INFO"}, message


class RECON_OT_set_body_shape(BackendJobOperator, bpy.types.Operator):
    """Give the active fitted body the shape in its shape sliders (the rig's Recon Shape
    values), keeping its pose: the mesh and the bones' rest change in place"""

    bl_idname = "recon.set_body_shape"
    bl_label = "Set Body Shape"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        if context.mode not in {"OBJECT", "POSE"}:
            cls.poll_message_set("Switch to Object or Pose Mode first")
            return False
        if body.body_armature(context.active_object) is None:
            cls.poll_message_set("Make a body fitted by Recon (its rig or its mesh) the active object")
            return False
        return True

    def invoke(self, context, event):
        return self.start_modal(context)

    def submit(self, context):
        return manager().submit(body.prepare_shape(body.body_armature(context.active_object)))

    def finish(self, context, job):
        armature = body.import_shape_result(job)
        summary = job.summary
        clamped = summary.get("clamped") or []
        message = f"New shape for '{armature.name}': {summary.get('height_m', 0):.2f} m tall"
        if clamped:
            self.report({"WARNING"}, f"{message}; kept within the model's range: {', '.join(clamped)}")
        else:
            self.report({"INFO"}, message)
