"""What a benchmark's JSON records about the machine it ran on."""

from __future__ import annotations

import os
import subprocess


def cpu() -> dict:
    """The CPU's model, core count and the features that change how vLLM and oneDNN run (AVX-512, AMX)."""
    text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    flags = fields.get("Flags", "").split()
    return {"model": fields.get("Model name", "?").strip(), "cores": os.cpu_count(),
            "features": sorted(f for f in flags if f.startswith(("avx512", "amx")))}
