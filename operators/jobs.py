# SPDX-License-Identifier: GPL-3.0-or-later
import json

import bpy
from bpy.props import StringProperty

from ..addon.bridge import BackendUnavailable, wait_for
from ..addon.jobs import manager


class RECON_OT_cancel_job(bpy.types.Operator):
    """Stop a running Recon job. The scene is left as it was; the job's folder keeps its log"""

    bl_idname = "recon.cancel_job"
    bl_label = "Cancel Job"

    job: StringProperty(name="Job", description="The job's id; empty cancels every running job")

    @classmethod
    def poll(cls, context):
        if not manager().active_jobs():
            cls.poll_message_set("No Recon job is running")
            return False
        return True

    def execute(self, context):
        jobs = [j for j in manager().active_jobs() if not self.job or j.id == self.job]
        for job in jobs:
            job.cancel()
        return {"FINISHED"}


class RECON_OT_backend_doctor(bpy.types.Operator):
    """Start the backend and report what it can use (Python, torch, GPU, optional packages)"""

    bl_idname = "recon.backend_doctor"
    bl_label = "Check Backend"

    def execute(self, context):
        mgr = manager()
        try:
            backend = mgr.ensure_backend()
        except BackendUnavailable as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        def answered():
            mgr.pump()
            return backend.capabilities is not None or not backend.alive

        if not wait_for(answered, 60.0) or backend.capabilities is None:
            self.report({"ERROR"}, f"The backend did not answer within 60 s (log: {backend.log_path})")
            return {"CANCELLED"}
        caps = backend.capabilities or {}
        torch = caps.get("torch", {})
        if not torch.get("available"):
            self.report({"ERROR"}, f"The backend Python {caps.get('executable')} cannot import torch: {torch.get('error')}. "
                        "Set 'Backend Python' in the preferences to an environment with the backend's packages.")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Backend OK: Python {caps.get('python')}, torch {torch.get('version')}, device {caps.get('device')}")
        print(json.dumps(caps, indent=2))
        return {"FINISHED"}
