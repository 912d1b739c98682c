# SPDX-License-Identifier: GPL-3.0-or-later
"""Gaussian splats: ``recon.import_splats`` (any 3DGS .ply), ``recon.export_splats`` (the
active splat object back to .ply), ``recon.crop_splats`` (to a box), ``recon.delete_splats``
(the selected Gaussians) and ``recon.setup_splat_render`` run in Blender; ``recon.train_splats`` runs
the backend's ``splat`` job on a reconstruction's cameras, and ``recon.import_job_splats`` brings in
the last state of a cancelled one."""

from pathlib import Path

import bpy
from bpy.props import BoolProperty, EnumProperty, StringProperty

from ..addon import splat_io, splat_train, splats
from ..addon.jobs import manager
from .modal import SUBMIT_ERRORS, BackendJobOperator

DISPLAY_BLENDING_DESCRIPTION = (
    "Blend the splats' display colours as the 3DGS rasteriser does: its exact look, rendered with the Raw view "
    "transform (other objects' colours are then off). Off: colours decoded to scene linear for the Standard view "
    "transform; opaque splats show their trained colours, soft edges come out a little brighter"
)


def _active_splats(cls, context, modes=("OBJECT",)):
    obj = context.active_object
    if not splats.is_splat_object(obj):
        cls.poll_message_set("Make a splat object the active object (import one with File > Import > Gaussian Splats)")
        return None
    if obj.mode not in modes:
        cls.poll_message_set("Switch to Object Mode first")
        return None
    return obj


def _select_only(context, obj) -> None:
    for other in context.selected_objects:
        other.select_set(False)
    obj.select_set(True)
    context.view_layer.objects.active = obj


class RECON_OT_import_splats(bpy.types.Operator):
    """Import Gaussian splats from a 3DGS .ply (any trainer: the reference code, gsplat, nerfstudio,
    Postshot, ...) as one object that shows and renders as splats"""

    bl_idname = "recon.import_splats"
    bl_label = "Import Gaussian Splats"
    bl_options = {"REGISTER", "UNDO"}

    filepath: StringProperty(name="File", subtype="FILE_PATH", description="A 3D Gaussian splatting .ply")
    filter_glob: StringProperty(default="*.ply", options={"HIDDEN"})
    display_blending: BoolProperty(name="Display Blending", default=False, description=DISPLAY_BLENDING_DESCRIPTION)
    setup_render: BoolProperty(
        name="Set Up Render", default=True,
        description="Set the scene's view transform (Standard, or Raw with Display Blending), no look, and enough "
                    "Cycles transparent bounces, so that the splats render with their trained colours",
    )

    @classmethod
    def poll(cls, context):
        if context.mode != "OBJECT":
            cls.poll_message_set("Switch to Object Mode first")
            return False
        return True

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        if not self.filepath:
            self.report({"ERROR"}, "Choose a 3DGS .ply file to import")
            return {"CANCELLED"}
        path = Path(bpy.path.abspath(self.filepath))
        collection = context.collection or context.scene.collection
        try:
            obj = splats.import_splats(path, collection)
        except splat_io.SplatFileError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        except MemoryError:
            self.report({"ERROR"}, f"Not enough memory to import '{path.name}': close other files or crop it in another tool")
            return {"CANCELLED"}
        if self.display_blending:
            splats.set_display_blending(obj, True)
        _select_only(context, obj)
        count, degree = splats.count_and_degree(obj)
        message = f"Imported {count:,} Gaussians (SH degree {degree}) from '{path.name}' as '{obj.name}'"
        changes = splats.render_settings(context.scene, self.display_blending) if self.setup_render else []
        self.report({"INFO"}, f"{message}; set {', '.join(changes)}" if changes else message)
        return {"FINISHED"}

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        layout.prop(self, "display_blending")
        layout.prop(self, "setup_render")


class RECON_OT_export_splats(bpy.types.Operator):
    """Export the active splat object as a standard 3DGS .ply (every attribute in float32), for any
    splat viewer or trainer"""

    bl_idname = "recon.export_splats"
    bl_label = "Export Gaussian Splats"
    bl_options = {"REGISTER"}

    filepath: StringProperty(name="File", subtype="FILE_PATH", description="Where to write the .ply")
    filter_glob: StringProperty(default="*.ply", options={"HIDDEN"})
    check_existing: BoolProperty(default=True, options={"HIDDEN"})
    apply_transform: BoolProperty(
        name="Apply Transform", default=True,
        description="Write the Gaussians where they stand in the scene: the object's location, rotation and uniform "
                    "scale applied, view-dependent colours turned with them. Off: in the object's own frame, as imported",
    )

    @classmethod
    def poll(cls, context):
        return _active_splats(cls, context, modes=("OBJECT", "EDIT")) is not None

    def invoke(self, context, event):
        if not self.filepath:
            folder = Path(bpy.path.abspath("//")) if bpy.data.filepath else Path.home()
            self.filepath = str(folder / bpy.path.clean_name(context.active_object.name)) + ".ply"
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def check(self, context):
        fixed = bpy.path.ensure_ext(self.filepath, ".ply")
        changed = fixed != self.filepath
        self.filepath = fixed
        return changed

    def execute(self, context):
        obj = context.active_object
        if not self.filepath:
            self.report({"ERROR"}, "Choose where to write the .ply")
            return {"CANCELLED"}
        path = Path(bpy.path.abspath(bpy.path.ensure_ext(self.filepath, ".ply")))
        try:
            splats.export_splats(obj, path, self.apply_transform)
        except OSError as exc:
            self.report({"ERROR"}, f"Could not write '{path}': {exc.strerror or exc}")
            return {"CANCELLED"}
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        frame = "as placed in the scene" if self.apply_transform else f"in '{obj.name}''s own frame"
        self.report({"INFO"}, f"Exported {len(obj.data.points):,} Gaussians to '{path}' ({frame})")
        return {"FINISHED"}


def _box_object(context, obj):
    return next((o for o in context.selected_objects if o is not obj and o.type in {"MESH", "EMPTY"}), None)


class RECON_OT_crop_splats(bpy.types.Operator):
    """Keep only the Gaussians whose centres lie inside (or outside) the selected box: a mesh such
    as a cube (its bounding box) or an empty (its display cube), moved, rotated and scaled as you like"""

    bl_idname = "recon.crop_splats"
    bl_label = "Crop Splats to Box"
    bl_options = {"REGISTER", "UNDO"}

    keep: EnumProperty(
        name="Keep", default="INSIDE",
        items=[("INSIDE", "Inside", "Keep the Gaussians inside the box"),
               ("OUTSIDE", "Outside", "Keep the Gaussians outside the box (cut the box's contents away)")],
    )

    @classmethod
    def poll(cls, context):
        obj = _active_splats(cls, context)
        if obj is None:
            return False
        if _box_object(context, obj) is None:
            cls.poll_message_set("Also select the box to crop to: a mesh (e.g. a cube) or an empty")
            return False
        return True

    def execute(self, context):
        obj = context.active_object
        box = _box_object(context, obj)
        try:
            inside = splats.inside_box(obj, box)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        keep = inside if self.keep == "INSIDE" else ~inside
        total, kept = len(keep), int(keep.sum())
        if kept == 0:
            where = "inside" if self.keep == "INSIDE" else "outside"
            self.report({"ERROR"}, f"No Gaussians of '{obj.name}' lie {where} '{box.name}': move or scale the box")
            return {"CANCELLED"}
        splats.keep_splats(obj, keep)
        self.report({"INFO"}, f"Kept {kept:,} of {total:,} Gaussians ({self.keep.lower()} '{box.name}')")
        return {"FINISHED"}


class RECON_OT_delete_splats(bpy.types.Operator):
    """Delete the selected Gaussians of the active splat object (select them in Edit Mode)"""

    bl_idname = "recon.delete_splats"
    bl_label = "Delete Selected Splats"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return _active_splats(cls, context, modes=("OBJECT", "EDIT")) is not None

    def execute(self, context):
        obj = context.active_object
        selected = splats.selected(obj)
        if not selected.any():
            self.report({"ERROR"}, f"No Gaussians of '{obj.name}' are selected: select some in Edit Mode (Tab) first")
            return {"CANCELLED"}
        total = len(selected)
        if obj.mode == "EDIT":
            result = bpy.ops.pointcloud.delete()
            if result != {"FINISHED"}:
                self.report({"ERROR"}, f"Blender could not delete the selected points ({result})")
                return {"CANCELLED"}
        else:
            splats.keep_splats(obj, ~selected)
        self.report({"INFO"}, f"Deleted {int(selected.sum()):,} of {total:,} Gaussians")
        return {"FINISHED"}


class RECON_OT_setup_splat_render(bpy.types.Operator):
    """Set the scene up to render splats with their trained colours: view transform (Standard, or Raw
    when the active splats use Display Blending), no look, and enough Cycles transparent bounces"""

    bl_idname = "recon.setup_splat_render"
    bl_label = "Set Up Render for Splats"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        obj = context.active_object
        blending = splats.is_splat_object(obj) and splats.display_blending(obj)
        changes = splats.render_settings(context.scene, blending)
        self.report({"INFO"}, f"Set {', '.join(changes)}" if changes else "The scene was already set up for splats")
        return {"FINISHED"}


class RECON_OT_train_splats(BackendJobOperator, bpy.types.Operator):
    """Train Gaussian splats on the photos of the active reconstruction (a 'Recon' collection of
    cameras with their photos and the solved points) or of the selected cameras; the splats come
    in lined up with the cameras. Esc stops training and keeps its last state for import"""

    bl_idname = "recon.train_splats"
    bl_label = "Train Splats"
    bl_options = {"REGISTER", "UNDO"}

    source: EnumProperty(
        name="Cameras", default="AUTO",
        items=[("AUTO", "Automatic", "The selected cameras when two or more are, else the active collection's"),
               ("COLLECTION", "Collection", "The cameras of the active collection (or of the active object's)"),
               ("SELECTED", "Selected", "The selected cameras")],
    )
    collection: StringProperty(name="Collection", description="Train on this collection's cameras and points "
                               "(empty: the active one)")
    __annotations__.update(splat_train.settings_properties())  # noqa: F821 - the class body's annotations

    @classmethod
    def poll(cls, context):
        if context.mode != "OBJECT":
            cls.poll_message_set("Switch to Object Mode first")
            return False
        return True

    _last_preview = 0.0

    def invoke(self, context, event):
        self.take_scene_settings(context.scene.recon_splat, splat_train.SETTING_NAMES)
        return self.start_modal(context)

    def submit(self, context):
        collection = None
        if self.collection:
            collection = bpy.data.collections.get(self.collection)
            if collection is None:
                raise ValueError(f"There is no collection '{self.collection}'")
        config = {name: getattr(self, name) for name in splat_train.SETTING_NAMES}
        job = splat_train.prepare(context, config, collection=collection,
                                  source="COLLECTION" if collection is not None else self.source)
        return manager().submit(job)

    def execute(self, context):  # from a script: block, keeping the preview image fresh
        try:
            job = self.submit(context)
        except SUBMIT_ERRORS as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        job.wait(on_progress=splat_train.preview_refresher())
        return self._conclude(context, job)

    def modal(self, context, event):
        if event.type == "TIMER" and self._job is not None:
            import time

            now = time.monotonic()
            if now - self._last_preview >= splat_train.PREVIEW_SECONDS or not self._job.active:
                self._last_preview = now
                splat_train.refresh_preview(self._job)
        return super().modal(context, event)

    def finish(self, context, job):
        splat_train.refresh_preview(job)
        obj = splat_train.import_job_splats(job, context.scene)
        _select_only(context, obj)
        changes = splats.render_settings(context.scene, False)
        summary = job.summary
        psnr = summary.get("psnr_held_out")
        quality = f", held-out PSNR {psnr:.2f} dB" if psnr is not None else ""
        message = (f"Trained {summary.get('gaussians', 0):,} Gaussians in {summary.get('iterations', 0)} iterations "
                   f"({summary.get('train_seconds', 0.0):.0f} s{quality}) into '{obj.users_collection[0].name}'")
        self.report({"INFO"}, f"{message}; set {', '.join(changes)}" if changes else message)

    def _conclude(self, context, job):
        if job.status == "cancelled" and splat_train.splats_path(job) is not None:
            splat_train.refresh_preview(job)
            iteration = splat_train.iteration_of(job)
            at = f" at iteration {iteration}" if iteration is not None else ""
            self.report({"WARNING"}, f"Training cancelled{at}; the scene is unchanged. Its last state is kept: "
                        f"'Import Last State' in the Gaussian Splats panel brings it in "
                        f"(or import {splat_train.splats_path(job)})")
            return {"CANCELLED"}
        return super()._conclude(context, job)


class RECON_OT_import_job_splats(bpy.types.Operator):
    """Import the splats a splat job left: the last state of a cancelled training, into the
    collection it trained on"""

    bl_idname = "recon.import_job_splats"
    bl_label = "Import Last State"
    bl_options = {"REGISTER", "UNDO"}

    job: StringProperty(name="Job", description="The splat job's id (empty: the latest cancelled one)")

    @classmethod
    def poll(cls, context):
        if context.mode != "OBJECT":
            cls.poll_message_set("Switch to Object Mode first")
            return False
        return True

    def execute(self, context):
        job = splat_train.find_job(self.job)
        if job is None or job.kind != "splat":
            self.report({"ERROR"}, "No cancelled splat training has a state to import")
            return {"CANCELLED"}
        try:
            obj = splat_train.import_job_splats(job, context.scene)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        _select_only(context, obj)
        splats.render_settings(context.scene, False)
        iteration = splat_train.iteration_of(job)
        at = f" (iteration {iteration})" if iteration is not None else ""
        self.report({"INFO"}, f"Imported {len(obj.data.points):,} Gaussians{at} as '{obj.name}'")
        return {"FINISHED"}
