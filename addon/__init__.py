# SPDX-License-Identifier: GPL-3.0-or-later
"""The Blender side's plumbing: preferences, the backend bridge, the job registry and pump,
and converters that create Blender data in bulk. Imports bpy, numpy and the standard
library only (plus ``backend.protocol``), never torch or other compute packages."""

# The extension's package ("bl_ext.<repo>.recon" when installed): preferences are keyed by it.
ADDON_ID = __package__.rpartition(".")[0]
