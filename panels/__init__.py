# SPDX-License-Identifier: GPL-3.0-or-later
"""Sidebar panels (3D viewport, tab "Recon"): draw only."""

import bpy

from . import menus
from .body import RECON_PT_body, RECON_PT_body_settings
from .deform import RECON_PT_fit_mesh, RECON_PT_fit_mesh_settings
from .fields import RECON_PT_fields
from .jobs import RECON_PT_jobs
from .meshes import RECON_PT_meshes
from .sfm import RECON_PT_sfm
from .splats import RECON_PT_splats
from .textures import RECON_PT_textures

classes = (RECON_PT_sfm, RECON_PT_splats, RECON_PT_fields, RECON_PT_meshes, RECON_PT_textures, RECON_PT_fit_mesh, RECON_PT_fit_mesh_settings,
           RECON_PT_body, RECON_PT_body_settings, RECON_PT_jobs)


_register_classes, _unregister_classes = bpy.utils.register_classes_factory(classes)


def register():
    _register_classes()
    menus.register()


def unregister():
    menus.unregister()
    _unregister_classes()
