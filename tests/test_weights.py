"""Pretrained weights: downloaded on first use from a local HTTP server (127.0.0.1) standing in for the real hosts,
verified, written atomically; the cache used offline; one-line errors; the DDP rank rule; `status`; the
huggingface_hub path through a pre-populated cache with HF_HUB_OFFLINE=1. Nothing here touches the real hosts."""

import hashlib
import http.server
import io
import json
import os
import threading
import zipfile
from pathlib import Path

import pytest
import torch
import warm_python

from gslrm.weights import MissingWeightsError, destination, ensure, fetch, source, verify
from gslrm.weights.download import WeightsChecksumError

ROOT = Path(__file__).resolve().parents[1]


class Server:
    """Serves ``files`` (name -> bytes) on 127.0.0.1; names in ``cut`` are sent half and the connection closed."""

    def __init__(self) -> None:
        self.files, self.cut, self.requests = {}, set(), []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the stdlib's name
                name = self.path.lstrip("/")
                server.requests.append(name)
                if name not in server.files:
                    self.send_error(404)
                    return
                data = server.files[name]
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2] if name in server.cut else data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def state_dict_bytes(seed: int) -> bytes:
    buffer = io.BytesIO()
    torch.save({"weight": torch.randn(8, 8, generator=torch.Generator().manual_seed(seed))}, buffer)
    return buffer.getvalue()


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A local server with stand-in files, registered for vgg19/vgg16/midas through GSLRM_WEIGHTS_SOURCES, and
    empty caches (TORCH_HOME, HF_HOME) under tmp_path."""
    server = Server()
    sources = {}
    for name, seed in (("vgg19", 1), ("vgg16", 2), ("midas", 3)):
        data = state_dict_bytes(seed)
        server.files[f"{name}.pth"] = data
        sources[name] = {
            "url": f"{server.url}/{name}.pth",
            "checksum": "sha256:" + hashlib.sha256(data).hexdigest()[:8],
        }
    overrides = tmp_path / "sources.json"
    overrides.write_text(json.dumps(sources))
    monkeypatch.setenv("GSLRM_WEIGHTS_SOURCES", str(overrides))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.delenv("GSLRM_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    server.overrides, server.sources = overrides, sources
    yield server
    server.close()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".lock"))


def test_download_into_an_empty_cache_then_the_cache_without_network(mirror):
    path = fetch("vgg19")
    assert path == destination(source("vgg19")) and path.name == "vgg19-dcbb9e9d.pth"
    assert path.read_bytes() == mirror.files["vgg19.pth"] and mirror.requests == ["vgg19.pth"]
    assert leftovers(path.parent) == ["vgg19-dcbb9e9d.pth"]  # no partial file
    mirror.close()  # no network from here on
    assert ensure("vgg19") == path and mirror.requests == ["vgg19.pth"]
    from gslrm.weights import load_state_dict

    assert list(load_state_dict(None, "vgg19", "loss.perceptual.weights_path")) == ["weight"]  # what the loss loads


def test_a_checksum_mismatch_is_an_error_and_leaves_nothing(mirror):
    mirror.files["vgg16.pth"] = b"tampered" + mirror.files["vgg16.pth"]
    with pytest.raises(WeightsChecksumError, match="checksum mismatch .* nothing was written"):
        fetch("vgg16")
    folder = destination(source("vgg16")).parent
    assert leftovers(folder) == []


def test_an_interrupted_download_leaves_no_file(mirror):
    mirror.cut.add("midas.pth")
    with pytest.raises(MissingWeightsError) as error:
        fetch("midas")
    assert "connection closed after" in str(error.value) and "\n" not in str(error.value)
    assert leftovers(destination(source("midas")).parent) == []
    mirror.cut.clear()
    assert fetch("midas").read_bytes() == mirror.files["midas.pth"]  # the next try succeeds


def test_offline_and_missing_is_one_line_with_path_and_command(mirror, monkeypatch):
    monkeypatch.setenv("GSLRM_OFFLINE", "1")
    with pytest.raises(MissingWeightsError) as error:
        ensure("vgg19")
    message = str(error.value)
    expected = destination(source("vgg19"))
    assert f"vgg19-dcbb9e9d.pth not found at {expected}" in message
    assert "python -m gslrm.weights fetch vgg19" in message and "\n" not in message
    assert mirror.requests == []
    monkeypatch.delenv("GSLRM_OFFLINE")
    mirror.close()  # unreachable host: the same kind of line, with the reason
    with pytest.raises(MissingWeightsError, match="downloading http://127.0.0.1:.* failed"):
        ensure("vgg19")


def test_midas_repository_zip_is_extracted_as_torch_hub_does(mirror, tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("isl-org-MiDaS-abc123/hubconf.py", "dependencies = []\n")
        archive.writestr("isl-org-MiDaS-abc123/midas/__init__.py", "")
    mirror.files["midas.zip"] = buffer.getvalue()
    sources = json.loads(mirror.overrides.read_text())
    sources["midas_repo"] = {"url": f"{mirror.url}/midas.zip"}
    mirror.overrides.write_text(json.dumps(sources))
    repo = ensure("midas_repo")
    assert repo.name == "intel-isl_MiDaS_master" and (repo / "hubconf.py").is_file()
    assert (repo / "midas" / "__init__.py").is_file()
    assert sorted(p.name for p in repo.parent.iterdir() if not p.name.endswith(".lock")) == ["intel-isl_MiDaS_master"]


@pytest.mark.slow  # starts a Python process (an entry point, a compile, a spawned job)
def test_status_lists_every_network(mirror):
    fetch("vgg19")
    path = destination(source("vgg16"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"corrupt copy")
    env = dict(os.environ)
    done = warm_python.run(["-m", "gslrm.weights", "status"], env=env, cwd=ROOT)
    lines = {line.split()[0]: line for line in done.stdout.splitlines()}
    assert set(lines) == {"vgg19", "vgg16", "vgg19_mat", "midas_repo", "midas", "facelift"}
    assert (
        "present" in lines["vgg19"]
        and "checksum ok" in lines["vgg19"]
        and str(destination(source("vgg19"))) in lines["vgg19"]
    )
    assert "0.0 MiB" in lines["vgg19"] or "MiB" in lines["vgg19"]
    assert "CHECKSUM MISMATCH" in lines["vgg16"] and done.returncode == 1
    assert "missing" in lines["midas"] and "missing" in lines["facelift"]
    assert verify("vgg19")[2] == "checksum ok"


@pytest.mark.slow  # starts a Python process (an entry point, a compile, a spawned job)
def test_fetch_command_with_a_cache_folder(mirror, tmp_path):
    cache = tmp_path / "cluster_cache"
    done = warm_python.run(
        ["-m", "gslrm.weights", "fetch", "vgg19", "vgg16", "--cache", str(cache)], env=dict(os.environ), cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert (cache / "torch" / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth").is_file()
    assert (cache / "torch" / "hub" / "checkpoints" / "vgg16-397923af.pth").is_file()
    assert not (tmp_path / "torch").exists()  # nothing went to the default cache


DDP_SCRIPT = """
import os, sys, torch.distributed as dist
from gslrm.weights import ensure
rank = int(sys.argv[1])
os.environ["LOCAL_RANK"] = str(rank)
dist.init_process_group("gloo", init_method="tcp://127.0.0.1:" + sys.argv[2], rank=rank, world_size=2)
path = ensure("vgg19")
dist.barrier()
print("RANK", rank, "PATH", path, "BYTES", path.stat().st_size)
dist.destroy_process_group()
"""


@pytest.mark.slow  # starts a Python process (an entry point, a compile, a spawned job)
def test_only_local_rank_0_downloads_the_other_rank_waits(mirror):
    """Rank 1 starts first; rank 0 downloads, rank 1 waits for its file (one request reaches the server)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    env = dict(os.environ)
    ranks = [warm_python.start(["-c", DDP_SCRIPT, str(rank), port], env=env, cwd=ROOT) for rank in (1, 0)]
    outputs = [rank.communicate(timeout=180) for rank in ranks]
    assert all("RANK" in out for out, _ in outputs), outputs
    assert all(rank.returncode == 0 for rank in ranks), outputs
    assert mirror.requests == ["vgg19.pth"]  # one download, by rank 0
    size = len(mirror.files["vgg19.pth"])
    assert all(f"BYTES {size}" in out for out, _ in outputs)


@pytest.mark.slow  # starts a Python process (an entry point, a compile, a spawned job)
def test_facelift_from_a_populated_hub_cache_offline(tmp_path, monkeypatch):
    """huggingface_hub's cache layout, HF_HUB_OFFLINE=1: model.init_from=facelift resolves without the network."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--wlyu--OpenFaceLift"
    snapshot = repo / "snapshots" / commit / "gslrm"
    snapshot.mkdir(parents=True)
    (snapshot / "ckpt_0000000000021125.pt").write_bytes(state_dict_bytes(5))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    code = (
        "from gslrm.model.gslrm import pretrained_path; import torch; p = pretrained_path('facelift'); "
        "print('PATH', p); print('KEYS', sorted(torch.load(p, weights_only=True)))"
    )
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")
    done = warm_python.run(["-c", code], env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert f"PATH {snapshot / 'ckpt_0000000000021125.pt'}" in done.stdout and "KEYS ['weight']" in done.stdout
    env["HF_HOME"] = str(tmp_path / "empty")  # not cached, offline: the one line
    done = warm_python.run(["-c", code], env=env, cwd=ROOT)
    assert done.returncode != 0
    assert (
        "ckpt_0000000000021125.pt not found at" in done.stderr
        and "python -m gslrm.weights fetch facelift" in done.stderr
    )
