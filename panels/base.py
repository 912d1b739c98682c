# SPDX-License-Identifier: GPL-3.0-or-later


class SidebarPanel:
    """Where every Recon panel lives: the 3D viewport's sidebar, tab "Recon"."""

    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Recon"


def settings_column(layout, settings, names) -> None:
    """The settings ``names`` of the property group ``settings``, one per row, labels on the left."""
    col = layout.column()
    col.use_property_split = True
    col.use_property_decorate = False
    for name in names:
        col.prop(settings, name)


def running_job(kind: str):
    """The newest job of ``kind`` still running, or None."""
    from ..addon.jobs import manager

    return next((job for job in reversed(manager().active_jobs()) if job.kind == kind), None)


def job_progress(layout, job) -> None:
    """A running job's progress bar with its cancel button, and its latest message."""
    box = layout.box()
    row = box.row()
    row.progress(factor=job.fraction, type="BAR", text=f"{job.stage} {100 * job.fraction:.0f}%")
    row.operator("recon.cancel_job", text="", icon="CANCEL").job = job.id
    if job.message:
        box.label(text=job.message)
