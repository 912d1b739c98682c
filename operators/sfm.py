# SPDX-License-Identifier: GPL-3.0-or-later
import bpy
from bpy.props import StringProperty

from ..addon import photo_inputs, reconstruction, sfm
from ..addon.jobs import manager
from .modal import BackendJobOperator

SCENE_SOURCE_NAMES = ("source", "clip", "frame_step")  # the panel's; images come from the selection


class RECON_OT_run_sfm(BackendJobOperator, bpy.types.Operator):
    """Solve the cameras of a folder of photos (Structure-from-Motion): one calibrated camera
    per photo, with the photo as its background, and the scene's points in colour"""

    bl_idname = "recon.run_sfm"
    bl_label = "Solve Cameras"
    bl_options = {"REGISTER", "UNDO"}

    directory: StringProperty(name="Photos", description="A folder of photos of the subject", subtype="DIR_PATH")
    __annotations__.update(sfm.settings_properties())  # noqa: F821 - the class body's annotations
    __annotations__.update(reconstruction.import_properties(align_default=True))  # noqa: F821
    __annotations__.update(photo_inputs.source_properties())  # noqa: F821

    @classmethod
    def poll(cls, context):
        if context.mode != "OBJECT":
            cls.poll_message_set("Switch to Object Mode first")
            return False
        return True

    _explicit: frozenset | None = None  # from invoke: the settings the caller gave (not taken from the panel)

    def invoke(self, context, event):
        self._explicit = frozenset(name for name in ("matcher", "animated_camera") if self.properties.is_property_set(name))
        self.take_scene_settings(context.scene.recon_sfm, ("directory", *SCENE_SOURCE_NAMES, *sfm.SETTING_NAMES,
                                                           *reconstruction.IMPORT_NAMES))
        return self.start_modal(context)

    def submit(self, context):
        config = {name: getattr(self, name) for name in sfm.SETTING_NAMES}
        if self.source == "CLIP":  # video, unless the caller chose otherwise: frames in order, one moving camera too
            explicit = self._explicit
            if explicit is None:  # called from a script: execute only
                explicit = {n for n in ("matcher", "animated_camera") if self.properties.is_property_set(n)}
            if "animated_camera" not in explicit:
                self.animated_camera = True
            if "matcher" not in explicit:
                config["matcher"] = "sequential"
        job = sfm.prepare_from_source(context, self.source, self.directory, [item.name for item in self.images],
                                      self.clip, self.frame_step, config)
        return manager().submit(job)

    def finish(self, context, job):
        collection = sfm.import_result(job, context.scene, **{name: getattr(self, name) for name in reconstruction.IMPORT_NAMES})
        summary = job.summary
        message = f"Solved {summary['registered']} of {summary['photos']} photos into '{collection.name}'"
        if summary.get("unregistered"):
            names = ", ".join(summary["unregistered"][:8])
            more = f" and {len(summary['unregistered']) - 8} more" if len(summary["unregistered"]) > 8 else ""
            self.report({"WARNING"}, f"{message}; not registered: {names}{more}")
        else:
            self.report({"INFO"}, f"{message}, mean reprojection error {summary['mean_reprojection_error_px']:.2f} px")
