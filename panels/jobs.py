# SPDX-License-Identifier: GPL-3.0-or-later
import bpy

from ..addon.jobs import manager
from .base import SidebarPanel

STATUS_ICONS = {"succeeded": "CHECKMARK", "failed": "ERROR", "cancelled": "CANCEL"}


class RECON_PT_jobs(SidebarPanel, bpy.types.Panel):
    bl_label = "Jobs"

    def draw(self, context):
        layout = self.layout
        mgr = manager()
        jobs = list(mgr.jobs.values())[-5:]
        if not jobs:
            layout.label(text="No jobs yet")
        for job in reversed(jobs):
            box = layout.box()
            row = box.row()
            if job.active:
                row.progress(factor=job.fraction, type="BAR", text=f"{job.kind}: {job.stage} {100 * job.fraction:.0f}%")
                row.operator("recon.cancel_job", text="", icon="CANCEL").job = job.id
                if job.message:
                    box.label(text=job.message)
            else:
                row.label(text=f"{job.kind}: {job.status}", icon=STATUS_ICONS.get(job.status, "NONE"))
                if job.status == "failed":
                    for line in _wrap(job.error.get("message", ""), 60):
                        box.label(text=line)
                    if job.error.get("hint"):
                        for line in _wrap(job.error["hint"], 60):
                            box.label(text=line, icon="INFO")
                    box.label(text=f"Log: {job.error.get('log') or job.log_path}")


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width)[:6]
