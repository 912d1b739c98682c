# SPDX-License-Identifier: GPL-3.0-or-later


class SidebarPanel:
    """Where every Recon panel lives: the 3D viewport's sidebar, tab "Recon"."""

    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Recon"
