# SPDX-License-Identifier: GPL-3.0-or-later
"""Radiance fields: ``recon.train_field`` (the ``nerf`` job on a reconstruction) and
``recon.render_field`` (the field seen through the active camera, into an image)."""

import bpy
from bpy.props import BoolProperty, StringProperty

from ..addon import fields
from ..addon.jobs import manager
from .modal import BackendJobOperator


class RECON_OT_train_field(BackendJobOperator, bpy.types.Operator):
    """Train a radiance field (Instant-NGP hash grid) on the reconstruction's cameras and photos.
    The preview shows a held-out photo as the field learns it; Esc stops and keeps the last
    checkpoint, and training again continues from it"""

    bl_idname = "recon.train_field"
    bl_label = "Train Field"
    bl_options = {"REGISTER"}

    collection: StringProperty(name="Collection", description="The reconstruction to train on (empty: the active one)")
    resume: BoolProperty(name="Continue", default=True,
                         description="Continue from the checkpoint of a training of this reconstruction stopped "
                                     "with Esc, when there is one")
    __annotations__.update(fields.settings_properties())  # noqa: F821 - the class body's annotations

    _target: str = ""

    @classmethod
    def poll(cls, context):
        if context.mode != "OBJECT":
            cls.poll_message_set("Switch to Object Mode first")
            return False
        if any(job.kind == "nerf" for job in manager().active_jobs()):
            cls.poll_message_set("A field is training: wait for it, or press Esc")
            return False
        return True

    def invoke(self, context, event):
        self.take_scene_settings(context.scene.recon_fields, fields.SETTING_NAMES)
        return self.start_modal(context)

    def submit(self, context):
        collection = fields.reconstruction_collection(context, self.collection)
        if collection is None and self.collection:
            raise ValueError(f"There is no collection '{self.collection}'")
        config = {name: getattr(self, name) for name in fields.SETTING_NAMES}
        job = fields.prepare_train(context, collection, config, self.resume)
        self._target = collection.name
        return manager().submit(job)

    def modal(self, context, event):
        if event.type == "TIMER" and self._job is not None:
            manager().pump()
            fields.update_preview(self._job)
        return super().modal(context, event)

    def finish(self, context, job):
        collection = bpy.data.collections.get(self._target)
        if collection is None:
            raise RuntimeError(f"the collection '{self._target}' is gone; the field is in {job.dir}")
        fields.finish_train(job, collection)
        summary = job.summary
        psnr = summary.get("holdout_psnr")
        quality = f", held-out PSNR {psnr:.2f} dB" if isinstance(psnr, (int, float)) else ""
        views = int(summary.get("train_views") or 0)
        message = f"Trained a field on {views} photos of '{collection.name}' ({summary.get('steps', '?')} steps{quality})"
        if views < fields.FEW_VIEWS:
            self.report({"WARNING"}, f"{message}; with fewer than {fields.FEW_VIEWS} photos expect blur and floaters "
                                     "where no photo looks: 50 to 100 photos all around the subject work best")
        else:
            self.report({"INFO"}, message)

    def _conclude(self, context, job):
        if job.status == "cancelled" and (job.dir / fields.FIELD_JSON).is_file():
            self.report({"WARNING"}, f"Training stopped; its checkpoint is kept in {job.dir}: Train Field again "
                                     "continues from it")
            return {"CANCELLED"}
        return super()._conclude(context, job)


class RECON_OT_render_field(BackendJobOperator, bpy.types.Operator):
    """Render the reconstruction's trained field through the active camera (its exact lens, sensor
    and shift, at the scene's resolution) into the image "Recon Field Render": the current frame, or
    every frame of the range as an image sequence (PNGs in the job folder)"""

    bl_idname = "recon.render_field"
    bl_label = "Render Field"
    bl_options = {"REGISTER"}

    collection: StringProperty(name="Collection", description="The reconstruction whose field renders (empty: "
                                                                "the camera's, or the active one)")
    __annotations__.update(fields.render_properties())  # noqa: F821 - the class body's annotations

    _frames: list = []

    @classmethod
    def poll(cls, context):
        if context.scene.camera is None:
            cls.poll_message_set("The scene has no active camera")
            return False
        return True

    def invoke(self, context, event):
        self.take_scene_settings(context.scene.recon_fields, fields.RENDER_NAMES)
        return self.start_modal(context)

    def submit(self, context):
        camera = context.scene.camera
        collection = fields.field_collection(context, self.collection, camera)
        if collection is None and self.collection:
            raise ValueError(f"'{self.collection}' has no trained field: train one first")
        self._frames = fields.render_frames(context.scene, self.animation)
        job = fields.prepare_render(context, collection, camera, self._frames, self.transparent)
        return manager().submit(job)

    def finish(self, context, job):
        image = fields.finish_render(job, self._frames)
        frames = self._frames
        what = f"frame {frames[0]}" if len(frames) == 1 else f"frames {frames[0]}-{frames[-1]} as an image sequence"
        self.report({"INFO"}, f"Rendered the field through '{job.title}' ({what}) into '{image.name}' ({job.dir})")
