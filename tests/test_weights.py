"""Weights downloaded on first use, from a local HTTP server standing in for download.pytorch.org.

The server (standard library, loopback only) serves a real state dict under a hash-prefixed file name, as
torchvision's are; the registry's entry for mobilenet_v3_small is pointed at it for the test only.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from featx.cli import main

from featx.backbones import _registry as backbones
from featx.backbones._registry import get_backbone
from featx.backbones._weights import TorchvisionWeights
from featx.errors import UnknownNameError, WeightsUnavailableError

MODEL = "mobilenet_v3_small"


class WeightsServer:
    """Serves `files` (URL path -> bytes) on 127.0.0.1 and counts requests; `half` sends half a file, then closes;
    `together`: a barrier each request waits at before its body (so concurrent downloads really overlap)."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files, self.requests, self.half = files, 0, False
        self.together: threading.Barrier | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests += 1
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.together is not None:
                    server.together.wait()
                self.wfile.write(body[: len(body) // 2] if server.half else body)
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path, monkeypatch):
    """(server, URL, the state dict's bytes, the cache folder) with the registry's default weights of MODEL at URL."""
    monkeypatch.delenv("FEATX_OFFLINE")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    backbone = get_backbone(MODEL)
    model = backbone.build_model(backbone.weights("random"))
    torch.nn.init.constant_(model.classifier[-1].bias, 0.25)  # a mark no random initialisation has
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    data = buffer.getvalue()
    name = f"{MODEL}-{hashlib.sha256(data).hexdigest()[:8]}.pth"  # torchvision's naming: hash prefix checked
    server = WeightsServer({"/models/" + name: data})
    url = server.url("/models/" + name)
    enum = backbone.default_weights().weights
    monkeypatch.setitem(backbones.REGISTRY, MODEL,
                        dataclasses.replace(backbone, default_weights=lambda: TorchvisionWeights(enum.DEFAULT, url)))
    yield server, url, data, tmp_path / "torch" / "hub" / "checkpoints"
    server.stop()


def extract(folder: Path, store: Path, *options: str):
    return CliRunner().invoke(main, ["extract", str(folder), "--model", MODEL, "--workers", "0",
                                     "--store", str(store), *options])


def assert_one_line_naming(result, url: str, cache: Path, *words: str) -> None:
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for word in (url, url.rsplit("/", 1)[1], str(cache), *words):
        assert word in result.stderr


def test_first_use_downloads_with_progress_then_works_without_the_server(served, elpv_folder, tmp_path):
    server, url, data, cache = served
    first = extract(elpv_folder, tmp_path / "a.h5")
    assert first.exit_code == 0, first.output
    assert server.requests == 1
    assert f"Downloading {url}" in first.stderr and "%" in first.stderr  # torch hub's bar, on stderr
    assert [p.name for p in cache.iterdir()] == [url.rsplit("/", 1)[1]]
    assert (cache / url.rsplit("/", 1)[1]).read_bytes() == data
    model = get_backbone(MODEL).build_model(get_backbone(MODEL).weights())
    assert torch.all(model.classifier[-1].bias == 0.25)  # the served weights are the ones loaded

    server.stop()
    second = extract(elpv_folder, tmp_path / "b.h5", "--quiet")
    assert second.exit_code == 0 and "20 extracted" in second.output and second.stderr == ""
    assert server.requests == 1


def test_changed_bytes_give_the_hash_mismatch_line_and_leave_no_file(served, elpv_folder, tmp_path):
    server, url, data, cache = served
    path = url.split(str(server.httpd.server_address[1]))[1]
    server.files[path] = data[:-1] + bytes([data[-1] ^ 1])
    result = extract(elpv_folder, tmp_path / "a.h5", "-q")
    assert_one_line_naming(result, url, cache, "do not match the hash", "invalid hash value")
    assert list(cache.iterdir()) == [] and not (tmp_path / "a.h5").exists()


def test_a_connection_closed_half_way_leaves_no_file(served, elpv_folder, tmp_path):
    server, url, _, cache = served
    server.half = True
    result = extract(elpv_folder, tmp_path / "a.h5", "-q")
    assert_one_line_naming(result, url, cache, "cut short")  # urllib ends the body quietly: the hash tells
    assert server.requests == 1 and list(cache.iterdir()) == []


def test_offline_makes_no_request(served, elpv_folder, tmp_path, monkeypatch):
    server, url, _, cache = served
    assert_one_line_naming(extract(elpv_folder, tmp_path / "a.h5", "--offline"), url, cache, "offline")
    monkeypatch.setenv("FEATX_OFFLINE", "1")
    assert_one_line_naming(extract(elpv_folder, tmp_path / "a.h5"), url, cache, "offline")
    assert server.requests == 0


def test_unreachable_server_and_http_errors_are_one_line(served, elpv_folder, tmp_path, monkeypatch):
    server, url, _, cache = served
    enum = get_backbone(MODEL).default_weights().weights
    for broken, words in [(url.replace("/models/", "/elsewhere/"), ("HTTP Error 404",)),
                          ("http://127.0.0.1:9/models/" + url.rsplit("/", 1)[1], ("download failed",))]:
        monkeypatch.setitem(backbones.REGISTRY, MODEL, dataclasses.replace(
            get_backbone(MODEL), default_weights=lambda: TorchvisionWeights(enum.DEFAULT, broken)))
        assert_one_line_naming(extract(elpv_folder, tmp_path / "a.h5", "-q"), broken, cache, *words)
        assert not cache.exists() or list(cache.iterdir()) == []


def test_a_corrupt_cached_file_is_reported_with_the_same_advice(served, elpv_folder, tmp_path):
    server, url, data, cache = served
    cache.mkdir(parents=True)
    (cache / url.rsplit("/", 1)[1]).write_bytes(data[: len(data) // 3])  # as a crash would leave it
    result = extract(elpv_folder, tmp_path / "a.h5", "-q")
    assert_one_line_naming(result, url, cache, "corrupt", "--weights FILE")
    assert server.requests == 0


def test_two_fetches_at_once_both_end_with_the_whole_file(served):
    """torch hub writes each download to its own temporary file and moves it into place."""
    server, url, data, cache = served
    server.together = threading.Barrier(2, timeout=60)
    sources = [get_backbone(MODEL).weights() for _ in range(2)]
    errors: list[BaseException] = []

    def fetch(source):
        try:
            source.fetch(progress=False)
        except WeightsUnavailableError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=fetch, args=(s,)) for s in sources]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and server.requests == 2
    assert [p.read_bytes() == data for p in cache.iterdir()] == [True]  # one whole file, no temporary left


def test_lite2_extracts_with_no_network(elpv_folder, tmp_path):
    """Its weights ship in a package: offline (conftest sets FEATX_OFFLINE=1) it just works."""
    result = CliRunner().invoke(main, ["extract", str(elpv_folder), "--model", "efficientnet_lite2", "--offline",
                                       "--workers", "0", "-q", "--store", str(tmp_path / "l2.h5")])
    assert result.exit_code == 0 and "20 extracted" in result.output


class HubServer(WeightsServer):
    """The two requests of huggingface_hub's download (HEAD for the commit and ETag, then GET) on loopback."""

    def __init__(self, files: dict[str, bytes]) -> None:
        super().__init__(files)
        handler = self.httpd.RequestHandlerClass
        server = self

        def head(request, body=False):
            data = server.files.get(request.path)
            if data is None:  # huggingface_hub 2.4 also asks for /api/agent-harnesses (its user-agent list)
                request.send_error(404)
                return
            server.requests += 1
            request.send_response(200)
            request.send_header("Content-Length", str(len(data)))
            request.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            request.send_header("X-Repo-Commit", "0" * 40)
            request.end_headers()
            if body:
                request.wfile.write(data)

        handler.do_HEAD = head
        handler.do_GET = lambda request: head(request, body=True)


def test_timm_weights_download_into_the_hugging_face_cache_then_work_offline(elpv_folder, tmp_path, monkeypatch):
    """A fresh process with HF_ENDPOINT and HF_HUB_CACHE set (huggingface_hub reads them at import)."""
    import os
    import subprocess
    import sys

    import timm
    from huggingface_hub import constants
    from safetensors.torch import save

    model = timm.create_model("resnet10t", pretrained=False)
    torch.nn.init.constant_(model.fc.bias, 0.25)
    server = HubServer({"/timm/resnet10t.c3_in1k/resolve/main/model.safetensors": save(model.state_dict())})
    env = {**os.environ, "HF_ENDPOINT": server.url(""), "HF_HUB_CACHE": str(tmp_path / "hf")}
    env.pop("FEATX_OFFLINE")
    command = [sys.executable, "-c", "from featx.cli import main; main()", "extract", str(elpv_folder), "--model",
               "timm/resnet10t", "--workers", "0", "--store", str(tmp_path / "t.h5")]
    try:
        run = subprocess.run(command, env=env, capture_output=True, text=True)
    finally:
        server.stop()
    assert run.returncode == 0, run.stderr
    assert "20 extracted" in run.stdout and server.requests == 2  # HEAD and GET of the file
    assert f"Downloading {server.url('')}/timm/resnet10t.c3_in1k" in run.stderr
    files = list((tmp_path / "hf").rglob("model.safetensors"))
    assert len(files) == 1 and "models--timm--resnet10t.c3_in1k" in str(files[0])

    # offline now (FEATX_OFFLINE=1 from conftest), the cached file is found and is what was served
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    backbone = get_backbone("timm/resnet10t")
    assert backbone.weights().status() == "here (cached)"
    assert torch.all(backbone.build_model(backbone.weights()).fc.bias == 0.25)


@pytest.mark.parametrize("switch", ["FEATX_OFFLINE", "HF_HUB_OFFLINE"])
def test_timm_weights_offline_and_not_cached_are_one_line(elpv_folder, tmp_path, monkeypatch, switch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    if switch == "HF_HUB_OFFLINE":  # huggingface_hub reads the variable at import: its constant, as it would be
        monkeypatch.delenv("FEATX_OFFLINE")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert get_backbone("timm/resnet10t").weights().status() == "unavailable offline"
    result = CliRunner().invoke(main, ["extract", str(elpv_folder), "--model", "timm/resnet10t", "-q",
                                       "--store", str(tmp_path / "t.h5")])
    url = f"{constants.ENDPOINT}/timm/resnet10t.c3_in1k"
    assert_one_line_naming(result, url, tmp_path / "hf", "not cached and offline", "model.safetensors")


def test_timm_download_from_a_host_that_refuses_fails_at_once(tmp_path, monkeypatch):
    """#25 point 9: huggingface_hub retried a refused connection with backoff for 46 s before featx's line."""
    import socket

    from huggingface_hub import constants

    with socket.socket() as probe:  # a loopback port nothing listens on: connections are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.delenv("FEATX_OFFLINE")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(WeightsUnavailableError, match=f"download failed: cannot connect to 127.0.0.1:{port} "):
        get_backbone("timm/resnet10t").weights().fetch(progress=False)


def test_a_tagged_timm_name_is_a_model_whose_weights_are_not_cached(elpv_folder, tmp_path, monkeypatch):
    """`arch.tag` is how timm names pretrained weights (timm.is_model knows them; timm.list_models() does not)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    backbone = get_backbone("timm/resnet18.a1_in1k")
    assert backbone.feature_dim == 512 and backbone.preprocessing().resize == 235  # a1_in1k's crop_pct 0.95
    result = CliRunner().invoke(main, ["extract", str(elpv_folder), "--model", "timm/resnet18.a1_in1k", "--offline",
                                       "-q", "--store", str(tmp_path / "t.h5")])
    url = f"{constants.ENDPOINT}/timm/resnet18.a1_in1k"
    assert_one_line_naming(result, url, tmp_path / "hf", "not cached and offline", "model.safetensors")
    with pytest.raises(UnknownNameError, match=r"timm pretrained tag 'resnet18.no_such_tag'.*resnet18.a1_in1k"):
        get_backbone("timm/resnet18.no_such_tag")
