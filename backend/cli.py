# SPDX-License-Identifier: GPL-3.0-or-later
"""``python -m backend``: the backend's command line.

    python -m backend serve                 # the JSON-lines server Blender talks to
    python -m backend doctor                # capabilities as JSON
    python -m backend deform --points CLOUD.ply --out DIR [options]
    python -m backend sfm --images PHOTOS --out DIR [options]
    python -m backend import --source MODEL_OR_JSON --out DIR

Job subcommands write exactly the files Blender would import, into ``--out``.
Exit codes: 0 success, 1 internal error, 2 bad input or missing dependency, 130 cancelled.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
import threading
import uuid
from pathlib import Path

from . import __version__, protocol
from . import config as config_mod
from .errors import ReconError

# (subcommand, one-line help); each job module has Config, Inputs (path_input fields) and run()
JOB_COMMANDS = (
    ("deform", "fit a template mesh to a point cloud"),
    ("sfm", "photos to calibrated cameras and a sparse point cloud"),
    ("import", "read a COLMAP model or transforms.json into Recon's cameras.npz and points"),
    ("splat", "train 3D Gaussian splats from posed photos"),
    ("render-splats", "render 3D Gaussian splats (a 3DGS .ply) from cameras into PNGs"),
    ("body", "photos of a person to a posed, rigged human body (Anny, or an SMPL-family file)"),
    ("body_shape", "a fitted body (body.npz) with new shape parameters, in the same pose"),
    ("nerf", "train a radiance field (Instant-NGP hash grid, or the original NeRF) from posed photos"),
    ("render-nerf", "render a trained radiance field from cameras into PNGs"),
    ("texture", "a mesh with a UV atlas and a texture baked from posed photos"),
    ("mesh", "a mesh (vertex colours) from a trained radiance field or Gaussian splats"),
)


def _add_job(sub, kind: str, help_text: str) -> None:
    from .jobs import load

    module = load(kind)
    parser = sub.add_parser(kind, help=help_text, description=module.__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    for field in dataclasses.fields(module.Inputs):
        parser.add_argument("--" + field.name.replace("_", "-"), dest=field.name, default="",
                            required=field.metadata.get("required", False), help=field.metadata.get("help"))
    parser.add_argument("--out", required=True, type=Path, help="output directory: the job's folder")
    config_mod.add_arguments(parser, module.Config)
    parser.set_defaults(run=lambda args: _run_cli_job(kind, module, args))


def _run_cli_job(kind: str, module, args) -> int:
    inputs = {f.name: str(Path(getattr(args, f.name)).expanduser().resolve()) if getattr(args, f.name) else ""
              for f in dataclasses.fields(module.Inputs)}
    overrides = module.cli_overrides(inputs, args) if hasattr(module, "cli_overrides") else {}
    try:
        config = config_mod.from_args(module.Config, args, **overrides)
    except ReconError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return _run_job(kind, config, module.Inputs(**inputs), args.out)


def _run_job(kind: str, config, inputs, out: Path) -> int:
    from .jobs.runner import run_job

    cancel = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: cancel.set())  # Ctrl+C: cooperative cancel

    def emit(type_: str, fields: dict) -> None:
        if type_ == protocol.PROGRESS:
            print(f"[{fields['stage']}] {fields['done']}/{fields['total']} {fields['message']}", file=sys.stderr)
        elif type_ == protocol.LOG:
            print(f"{fields['level']}: {fields['message']}", file=sys.stderr)

    out = out.resolve()
    # The CLI's --out is the job directory itself.
    type_, fields = run_job(kind, config, inputs, f"cli-{uuid.uuid4().hex[:8]}", out, emit, cancel)
    if type_ == protocol.RESULT:
        print(json.dumps(fields["summary"], indent=2))
        return 0
    if type_ == protocol.CANCELLED:
        print(f"cancelled; the log is in {out / protocol.LOG_FILE}", file=sys.stderr)
        return 130
    print(f"error: {fields['message']}", file=sys.stderr)
    if fields.get("hint"):
        print(f"hint: {fields['hint']}", file=sys.stderr)
    print(f"log: {fields['log']}", file=sys.stderr)
    return 1 if fields["code"] == protocol.E_INTERNAL else 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m backend", description="Recon's compute backend.")
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the JSON-lines protocol on stdin/stdout")
    serve.set_defaults(run=lambda args: _serve())
    doctor = sub.add_parser("doctor", help="print capabilities as JSON")
    doctor.set_defaults(run=lambda args: _doctor())
    for kind, help_text in JOB_COMMANDS:
        _add_job(sub, kind, help_text)
    return parser


def _serve() -> int:
    from .server import serve

    return serve()


def _doctor() -> int:
    from .capabilities import capabilities

    print(json.dumps(capabilities(deep=True), indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return args.run(args)
