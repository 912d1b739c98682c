# SPDX-License-Identifier: GPL-3.0-or-later
"""Reconstructions in and out: ``recon.import_reconstruction`` (a COLMAP model or a
``transforms.json``, read by the backend's ``import`` job) and ``recon.export_cameras``
(Blender cameras to a COLMAP text model and a ``transforms.json``, written here)."""

import bpy
from bpy.props import BoolProperty, EnumProperty, StringProperty

from ..addon import reconstruction
from .modal import BackendJobOperator


class RECON_OT_import_reconstruction(BackendJobOperator, bpy.types.Operator):
    """Import a COLMAP model (text or binary) or a NeRF/nerfstudio transforms.json: calibrated
    cameras with the photos as backgrounds, and the sparse points in colour"""

    bl_idname = "recon.import_reconstruction"
    bl_label = "Import Reconstruction"
    bl_options = {"REGISTER", "UNDO"}

    filepath: StringProperty(
        name="Reconstruction", subtype="FILE_PATH",
        description="A transforms.json, a COLMAP model folder, or any file of a COLMAP model (cameras.bin, images.txt, ...)",
    )
    filter_glob: StringProperty(default="*.json;*.bin;*.txt", options={"HIDDEN"})
    images: StringProperty(
        name="Photos", subtype="DIR_PATH",
        description="The folder of the photos when they are not beside the model (leave empty to find them)",
    )
    __annotations__.update(reconstruction.import_properties(align_default=False))  # noqa: F821

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def submit(self, context):
        from ..addon.jobs import manager

        return manager().submit(reconstruction.prepare_import(self.filepath, self.images))

    def finish(self, context, job):
        options = {name: getattr(self, name) for name in reconstruction.IMPORT_NAMES}
        collection = reconstruction.import_job_result(job, context.scene, **options)
        summary = job.summary
        message = f"Imported {summary['cameras']} cameras and {summary['points']} points into '{collection.name}'"
        missing = summary.get("missing_photos") or []
        if missing:
            self.report({"WARNING"}, f"{message}; {len(missing)} photos not found (e.g. {missing[0]}): set Photos to their folder")
        else:
            self.report({"INFO"}, message)


class RECON_OT_export_cameras(bpy.types.Operator):
    """Export cameras (and their resolution) as a COLMAP text model and a transforms.json, for
    NeRF and splatting tools and Recon's own jobs"""

    bl_idname = "recon.export_cameras"
    bl_label = "Export Cameras"
    bl_options = {"REGISTER"}

    directory: StringProperty(name="Folder", subtype="DIR_PATH", description="Where to write colmap/ and transforms.json")
    formats: EnumProperty(
        name="Formats", options={"ENUM_FLAG"}, default={"COLMAP", "TRANSFORMS"},
        items=[("COLMAP", "COLMAP", "colmap/cameras.txt, images.txt, points3D.txt"),
               ("TRANSFORMS", "transforms.json", "NeRF/nerfstudio transforms.json (points in points.ply)")],
    )
    use_selection: BoolProperty(name="Selected Only", default=True, description="Only the selected cameras (else every camera in the scene)")
    include_points: BoolProperty(name="Points", default=True, description="Also write the selected point clouds and meshes' points, in world space")

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        objects = context.selected_objects if self.use_selection else context.scene.objects
        cameras = sorted((o for o in objects if o.type == "CAMERA"), key=lambda o: o.name)
        if not cameras:
            self.report({"ERROR"}, "No cameras to export: select camera objects, or untick Selected Only")
            return {"CANCELLED"}
        if not self.directory:
            self.report({"ERROR"}, "Choose a folder to export to")
            return {"CANCELLED"}
        if not self.formats:
            self.report({"ERROR"}, "Choose at least one format (COLMAP or transforms.json)")
            return {"CANCELLED"}
        point_objects = [o for o in context.selected_objects if o.type in ("POINTCLOUD", "MESH")] if self.include_points else []
        try:
            written = reconstruction.export_cameras(cameras, context.scene, self.directory, set(self.formats), point_objects)
        except (OSError, ValueError, TypeError) as exc:
            self.report({"ERROR"}, f"Could not export the cameras: {exc}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Exported {len(cameras)} cameras to {', '.join(str(p) for p in written)}")
        return {"FINISHED"}
