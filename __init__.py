# SPDX-License-Identifier: GPL-3.0-or-later
"""Recon: photos to 3D inside Blender. Registration only.

Registers the preferences and property groups from ``addon/``, then the classes in
``operators/`` and ``panels/``, in that order, and unregisters them in reverse.
"""

from . import operators, panels
from .addon import jobs, preferences, properties

_modules = (preferences, properties, jobs, operators, panels)


def register():
    for module in _modules:
        module.register()


def unregister():
    for module in reversed(_modules):
        module.unregister()
