# SPDX-License-Identifier: GPL-3.0-or-later
"""The real backend subprocess speaking the JSON-lines protocol: hello, submit, progress,
artifacts, exactly one terminal event, cancel, bad input, malformed requests, shutdown."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest

from backend import protocol
from tests.backend_client import BackendClient


@pytest.fixture
def client(tmp_path):
    c = BackendClient(tmp_path / "backend.log")
    yield c
    c.close()


def ellipsoid_points(path, n=400, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.normal(size=(n, 3))
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    np.savez(path, points=(p * [1.0, 2.0, 0.5] + [3.0, -1.0, 2.0]).astype(np.float32))
    return path


def test_hello_reports_capabilities(client):
    client.send(protocol.HELLO)
    event = client.until(lambda e: e["type"] == protocol.HELLO)[-1]
    assert event["v"] == 1 and event["protocol"] == 1
    caps = event["capabilities"]
    assert caps["torch"]["available"] and caps["device"] in ("cpu", "cuda")
    assert set(caps["packages"]) >= {"pycolmap", "gsplat", "tinycudann", "anny"}


def test_submit_runs_a_job_to_one_result(client, tmp_path):
    points = ellipsoid_points(tmp_path / "cloud.npz")
    client.send(protocol.SUBMIT, "job-a", kind="deform", config={"iterations": 150, "samples": 2000},
                inputs={"points": str(points)}, workdir=str(tmp_path / "jobs"))
    events = client.terminal("job-a")
    types = [e["type"] for e in events if e.get("job") == "job-a"]
    assert types[0] == protocol.ACCEPTED
    assert protocol.PROGRESS in types and types.count(protocol.ARTIFACT) == 2
    assert types[-1] == protocol.RESULT and sum(t in protocol.TERMINAL for t in types) == 1
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    result = events[-1]
    # 150 steps: roughly fitted (squared distances; the ellipsoid is 4 units long).
    assert result["summary"]["vertices"] == 2562 and result["summary"]["chamfer"] < 0.25
    job_dir = tmp_path / "jobs" / "job-a"
    manifest = json.loads((job_dir / "manifest.json").read_text())
    assert manifest["status"] == "succeeded" and {a["name"] for a in manifest["artifacts"]} == {"mesh", "mesh_arrays"}
    assert json.loads((job_dir / "config.json").read_text())["iterations"] == 150
    assert "succeeded" in (job_dir / "job.log").read_text()
    with np.load(job_dir / "mesh.npz") as mesh:
        # Returned in the cloud's frame: centred where the cloud is, not at the origin.
        assert np.allclose(mesh["vertices"].mean(0), [3.0, -1.0, 2.0], atol=0.15)
    assert not list(job_dir.glob(".tmp-*")), "a temporary file was left behind"


def test_cancel_half_way_ends_cancelled_and_keeps_the_log(client, tmp_path):
    points = ellipsoid_points(tmp_path / "cloud.npz")
    client.send(protocol.SUBMIT, "job-c", kind="deform", config={"iterations": 1_000_000},
                inputs={"points": str(points)}, workdir=str(tmp_path / "jobs"))
    client.until(lambda e: e["type"] == protocol.PROGRESS and e.get("stage") == "fit" and e["done"] > 0)
    client.send(protocol.CANCEL, "job-c")
    events = client.terminal("job-c", timeout=30)
    assert events[-1]["type"] == protocol.CANCELLED
    job_dir = tmp_path / "jobs" / "job-c"
    assert json.loads((job_dir / "manifest.json").read_text())["status"] == "cancelled"
    assert "cancelled" in (job_dir / "job.log").read_text()
    # The server is still there for the next job.
    client.send(protocol.HELLO)
    client.until(lambda e: e["type"] == protocol.HELLO)


def test_cancel_of_a_queued_job(client, tmp_path):
    points = ellipsoid_points(tmp_path / "cloud.npz")
    for job in ("first", "second"):
        client.send(protocol.SUBMIT, job, kind="deform", config={"iterations": 1_000_000},
                    inputs={"points": str(points)}, workdir=str(tmp_path / "jobs"))
    client.send(protocol.CANCEL, "second")
    assert client.terminal("second", timeout=30)[-1]["type"] == protocol.CANCELLED
    client.send(protocol.CANCEL, "first")
    assert client.terminal("first", timeout=30)[-1]["type"] == protocol.CANCELLED


@pytest.mark.parametrize(
    "case, expect",
    [
        ("nan", "NaN or infinite"),
        ("not_ply", "is not a PLY file"),
        ("ply_no_vertices", "has no points"),
        ("empty_npz", "has no points"),
        ("missing", "does not exist"),
    ],
)
def test_bad_input_is_an_input_error_naming_the_file(client, tmp_path, case, expect):
    path = tmp_path / {"nan": "nan.npz", "not_ply": "photo.ply", "ply_no_vertices": "empty.ply",
                       "empty_npz": "empty.npz", "missing": "gone.ply"}[case]
    if case == "nan":
        p = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
        p[7, 1] = np.nan
        np.savez(path, points=p)
    elif case == "not_ply":
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    elif case == "ply_no_vertices":
        path.write_text("ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nproperty float y\nproperty float z\nend_header\n")
    elif case == "empty_npz":
        np.savez(path, points=np.zeros((0, 3), np.float32))
    client.send(protocol.SUBMIT, "bad", kind="deform", config={}, inputs={"points": str(path)}, workdir=str(tmp_path / "jobs"))
    event = client.terminal("bad", timeout=60)[-1]
    assert event["type"] == protocol.ERROR and event["code"] == protocol.E_INPUT
    assert expect in event["message"] and str(path) in event["message"], event["message"]
    assert (tmp_path / "jobs" / "bad" / "job.log").is_file()


def test_bad_settings_name_the_setting(client, tmp_path):
    points = ellipsoid_points(tmp_path / "cloud.npz")
    client.send(protocol.SUBMIT, "cfg", kind="deform", config={"iterations": 0, "speed": 3},
                inputs={"points": str(points)}, workdir=str(tmp_path / "jobs"))
    event = client.terminal("cfg")[-1]
    assert event["type"] == protocol.ERROR and "speed" in event["message"]
    client.send(protocol.SUBMIT, "cfg2", kind="deform", config={"iterations": 0},
                inputs={"points": str(points)}, workdir=str(tmp_path / "jobs"))
    event = client.terminal("cfg2")[-1]
    assert event["code"] == protocol.E_INPUT and "iterations" in event["message"]


def test_malformed_requests_get_protocol_errors_and_the_server_goes_on(client, tmp_path):
    client.send_raw(b"this is not json\n")
    assert client.next_event()["code"] == protocol.E_PROTOCOL
    client.send_raw(b'{"v": 99, "type": "hello"}\n')
    assert client.next_event()["code"] == protocol.E_PROTOCOL
    client.send(protocol.SUBMIT, "../escape", kind="deform", workdir=str(tmp_path))
    assert client.next_event()["code"] == protocol.E_PROTOCOL
    client.send(protocol.SUBMIT, "unknown-kind", kind="teleport", workdir=str(tmp_path))
    event = client.terminal("unknown-kind")[-1]
    assert event["type"] == protocol.ERROR and "teleport" in event["message"]
    client.send(protocol.HELLO)
    assert client.until(lambda e: e["type"] == protocol.HELLO)


def test_shutdown_and_end_of_input_stop_the_server(tmp_path):
    c = BackendClient(tmp_path / "a.log")
    c.send(protocol.SHUTDOWN)
    assert c.proc.wait(30) == 0
    c.close()
    c = BackendClient(tmp_path / "b.log")
    c.proc.stdin.close()
    assert c.proc.wait(30) == 0
    c.close()


def test_a_killed_backend_closes_its_stream(client, tmp_path):
    points = ellipsoid_points(tmp_path / "cloud.npz")
    client.send(protocol.SUBMIT, "doomed", kind="deform", config={"iterations": 1_000_000},
                inputs={"points": str(points)}, workdir=str(tmp_path / "jobs"))
    client.until(lambda e: e["type"] == protocol.PROGRESS and e.get("stage") == "fit")
    os.killpg(client.proc.pid, signal.SIGKILL)
    assert client.until(lambda e: e["type"] == "__exit__", timeout=30)[-1]["returncode"] == -signal.SIGKILL
    assert (tmp_path / "jobs" / "doomed" / "job.log").is_file()


def test_stdout_carries_protocol_only(client, tmp_path):
    """Output printed by Python or C code inside a job goes to the log, not to stdout."""
    points = ellipsoid_points(tmp_path / "cloud.npz")
    client.send(protocol.SUBMIT, "j", kind="deform", config={"iterations": 20},
                inputs={"points": str(points)}, workdir=str(tmp_path / "jobs"))
    client.terminal("j")
    assert all(json.loads(line)["v"] == 1 for line in client.raw_lines)
