# SPDX-License-Identifier: GPL-3.0-or-later
"""Human bodies from photos: body models behind one interface (``model``), Anny (the
default, ``anny_model``) and user-given SMPL/SMPL-H/SMPL-X files (``smpl``, read with the
restricted unpickler of ``safe_pickle``), 2D keypoints (``keypoints``: MediaPipe, or a COCO
or OpenPose JSON), the SMPLify-style fit (``fit``) and the files Blender builds a rigged
body from (``export``).

Conventions: model space is Z up, -Y front (the way a character faces in Blender's front
view), +X the body's left, in metres. Cameras are OpenCV (x right, y down, z forward) with
``w2c`` world-to-camera 4x4 matrices and 3x3 ``K``, as in the ``sfm`` job's cameras.npz.
"""
