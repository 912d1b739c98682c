# SPDX-License-Identifier: GPL-3.0-or-later
"""The shape every job operator shares.

From a script (``execute``): submit, wait while pumping events, import, return
``{'FINISHED'}``. Interactively (``invoke`` -> :meth:`start_modal`): submit, then a modal
handler pumps events on a timer, shows progress in the status bar, cancels on Esc, and
imports when the job succeeds. Nothing in the scene changes before that import, so a
failed or cancelled job leaves the scene as it was, and the import is one undo step.
"""

from __future__ import annotations

from ..addon.bridge import BackendUnavailable
from ..addon.jobs import Job, manager

# What a submit may raise for bad input or a missing backend: reported, never a traceback.
SUBMIT_ERRORS = (ValueError, BackendUnavailable)


class BackendJobOperator:
    _job: Job | None = None
    _timer = None

    # -- to implement ---------------------------------------------------------------
    def submit(self, context) -> Job:
        raise NotImplementedError

    def finish(self, context, job: Job) -> None:
        """Create the Blender data from a succeeded job (may raise: the job is then reported failed)."""
        raise NotImplementedError

    # -- scripts --------------------------------------------------------------------
    def execute(self, context):
        try:
            job = self.submit(context)
        except SUBMIT_ERRORS as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        job.wait()
        return self._conclude(context, job)

    # -- interactive ----------------------------------------------------------------
    def take_scene_settings(self, scene_settings, names) -> None:
        """From the panel: the scene's settings for every property the caller did not set."""
        for name in names:
            if not self.properties.is_property_set(name):
                setattr(self, name, getattr(scene_settings, name))

    def start_modal(self, context):
        try:
            self._job = self.submit(context)
        except SUBMIT_ERRORS as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.1, window=context.window)
        wm.modal_handler_add(self)
        self._status(context, f"{self.bl_label}: starting the backend... (Esc to cancel)")
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        job = self._job
        if event.type == "ESC" and event.value == "PRESS":
            job.cancel()
            self._status(context, f"{self.bl_label}: cancelling...")
            return {"RUNNING_MODAL"}
        if event.type == "TIMER":
            manager().pump()
            if job.active:
                percent = f"{100 * job.fraction:.0f}% " if job.total else ""
                self._status(context, f"{self.bl_label}: {percent}{job.stage} {job.message} (Esc to cancel)")
            for area in context.screen.areas if context.screen else ():
                if area.type == "VIEW_3D":
                    area.tag_redraw()
        if job.active:
            return {"PASS_THROUGH"}
        context.window_manager.event_timer_remove(self._timer)
        self._status(context, None)
        return self._conclude(context, job)

    def cancel(self, context):  # Blender calls this when the modal operator is aborted (e.g. file load)
        if self._job is not None and self._job.active:
            self._job.cancel()
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
        self._status(context, None)

    # -- shared ---------------------------------------------------------------------
    def _conclude(self, context, job: Job):
        if job.status == "succeeded":
            try:
                self.finish(context, job)
            except Exception as exc:  # noqa: BLE001 - any import failure is reported, scene rolled back
                self.report({"ERROR"}, f"The job finished but its result could not be imported: {exc} (job folder: {job.dir})")
                return {"CANCELLED"}
            return {"FINISHED"}
        if job.status == "cancelled":
            self.report({"WARNING"}, f"{self.bl_label} cancelled; the scene is unchanged (log: {job.log_path})")
        else:
            self.report({"ERROR"}, job.error_text())
        return {"CANCELLED"}

    @staticmethod
    def _status(context, text):
        workspace = getattr(context, "workspace", None)
        if workspace is not None:
            workspace.status_text_set(text)
