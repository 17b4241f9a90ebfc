"""Load time of the bundled models: cached float weights vs dequantizing the GGUF, in one run.

Each measurement runs in a fresh Python process, as a user's script would:
  - import:  `import mechlin, transformers, transformer_lens.model_bridge`
  - gguf:    the peer - transformers reading and dequantizing the GGUF (tokenizer + model),
             which is what every load would cost without mechlin's cache
  - cached:  `mechlin.load_model(name)` with the cache already built (first call in the process)
  - again:   a second `load_model(name)` in the same process (imports and lazy init paid)

Run: .venv/bin/python benchmarks/load_model.py [--models smollm2-135m gemma-3-270m] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

_IMPORTS = "import mechlin, transformers, transformer_lens.model_bridge"

_SNIPPETS = {
    "import": f"""
import time; t = time.perf_counter(); {_IMPORTS}; print(time.perf_counter() - t)
""",
    "gguf": f"""
{_IMPORTS}
import tempfile, time, torch
from pathlib import Path
from transformers import AutoModelForCausalLM, AutoTokenizer
from mechlin.models import BUNDLED_MODELS
spec = BUNDLED_MODELS[NAME]
with tempfile.TemporaryDirectory() as d:
    gguf = spec.write_gguf(Path(d))  # Gemma's GGUF is assembled from parts, untimed
    t = time.perf_counter()
    AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    print(time.perf_counter() - t)
""",
    "build": f"""
{_IMPORTS}
mechlin.load_model(NAME, device="cpu")  # builds the cache if it is missing (untimed)
""",
}


def _run(code: str, name: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", code.replace("NAME", repr(name))],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return float(out.strip().splitlines()[-1])


def _cached_times(name: str) -> tuple[float, float]:
    code = f"""
{_IMPORTS}
import time
t = time.perf_counter(); mechlin.load_model(NAME, device="cpu"); first = time.perf_counter() - t
t = time.perf_counter(); mechlin.load_model(NAME, device="cpu"); again = time.perf_counter() - t
print(first, again)
"""
    out = subprocess.run(
        [sys.executable, "-c", code.replace("NAME", repr(name))],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    first, again = out.strip().splitlines()[-1].split()
    return float(first), float(again)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma-3-270m"])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    results = {}
    imports = statistics.median(_run(_SNIPPETS["import"], "") for _ in range(args.repeat))
    print(f"imports (fresh process): {imports:.2f} s")
    for name in args.models:
        subprocess.run(
            [sys.executable, "-c", _SNIPPETS["build"].replace("NAME", repr(name))],
            check=True,
            capture_output=True,
        )
        gguf = statistics.median(_run(_SNIPPETS["gguf"], name) for _ in range(args.repeat))
        pairs = [_cached_times(name) for _ in range(args.repeat)]
        cached = statistics.median(p[0] for p in pairs)
        again = statistics.median(p[1] for p in pairs)
        results[name] = {"gguf_s": gguf, "cached_first_s": cached, "cached_again_s": again}
        print(
            f"{name}: dequantize GGUF {gguf:.1f} s | load_model from cache: {cached:.2f} s "
            f"(first call in a process), {again:.2f} s (again) | "
            f"speed-up vs GGUF: {gguf / cached:.1f}x / {gguf / again:.1f}x"
        )
    print(json.dumps({"imports_s": imports, **results}))


if __name__ == "__main__":
    main()
