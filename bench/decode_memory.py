"""Peak memory of decoding the hostile images: each decode in a fresh process, its peak RSS (VmHWM).

    python -m bench.decode_memory [--side 11300] [--code ROOT] [--only NAME ...] [--scan N] [--out FILE]

``--code ROOT`` measures another checkout (for example main before a change) with the same files.
``--scan N`` also runs N float TIFFs through one classifier's decode pool, as a chunk of a scan does.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.hostile import hostile_set

PACKAGES = ("model", "jobs", "worker", "training", "migrations")

# Peak RSS is VmHWM, not getrusage's ru_maxrss: a child started by vfork and exec inherits its parent's
# peak in ru_maxrss, so a large parent (a test run) would hide the decode's own figure.

# Runs in the measured checkout: decode one file (or a scan's worth), print the figures as JSON.
_DECODE = """
import json, sys, time
from PIL import Image
Image.MAX_IMAGE_PIXELS = None  # an operator who raised the pixel limit: the memory budget must hold
from aiscan.model import decode

def status(field):
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) for l in fh if l.startswith(field + ":"))

data = open(sys.argv[1], "rb").read()
before = status("VmRSS")
t = time.perf_counter()
estimate = None
if hasattr(decode, "open_image"):  # main before the budget has no estimate
    with decode.open_image(data, max_pixels=10**10) as opened:
        estimate = opened.cost
try:
    full = decode.decode_full(data, max_pixels=10**10)
    shape, error = list(full.pixels.shape), None
except decode.DecodeError as e:
    shape, error = None, str(e)
seconds = time.perf_counter() - t
peak = status("VmHWM")
print(json.dumps({"before_kib": before, "peak_kib": peak, "seconds": seconds, "shape": shape,
                  "error": error, "estimate": estimate}))
"""

# A chunk: the files decoded and squashed by one classifier's decode pool (score_batches), no model.
_SCAN = """
import json, sys
import numpy as np
from PIL import Image
Image.MAX_IMAGE_PIXELS = None
from aiscan.model.batching import score_batches
from aiscan.model.classifier import ImageClassifier
from aiscan.model.thresholds import Thresholds

class Runner:
    input_size, batch_size = 299, 8
    def predict(self, pixels):
        return np.zeros(len(pixels))

def status(field):
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) for l in fh if l.startswith(field + ":"))

classifier = ImageClassifier(Runner(), Thresholds(), max_pixels=10**10)
files = [open(p, "rb").read() for p in sys.argv[1:]]
errors = []
def views(data):
    try:
        return classifier.decode(data).views
    except Exception as e:
        errors.append(str(e))
        return None
classifier.prefetch_batches  # the device probe's imports before the baseline
before = status("VmRSS")
scored = sum(s is not None for _, s in score_batches(files, views, classifier))
peak = status("VmHWM")
print(json.dumps({"before_kib": before, "peak_kib": peak, "scored": scored, "errors": errors}))
"""


def code_path(root: Path, scratch: Path) -> str:
    """PYTHONPATH that imports ``aiscan`` from the checkout at ``root``."""
    links = scratch / "typecheck" / "aiscan"
    links.mkdir(parents=True, exist_ok=True)
    for package in PACKAGES:
        link = links / package
        if not link.exists():
            link.symlink_to(root.resolve() / package)
    return f"{links.parent}{os.pathsep}{root.resolve()}"


def decode_peak(path: Path, pythonpath: str) -> dict[str, object]:
    """Decode ``path`` in a fresh process: ``decode_mb`` (peak RSS growth), ``estimate`` (bytes), ..."""
    return _run(_DECODE, [str(path)], pythonpath)


def _run(script: str, args: list[str], pythonpath: str) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": pythonpath, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, timeout=900
    )
    if done.returncode != 0:
        return {"failed": done.returncode, "stderr": done.stderr[-2000:]}
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    growth = int(result["peak_kib"]) - int(result["before_kib"])  # type: ignore[call-overload]
    result["peak_mb"] = round(int(result["peak_kib"]) / 1024)  # type: ignore[call-overload]
    result["growth_kib"] = growth
    result["decode_mb"] = round(growth / 1024)
    return result


def measure(side: int, code: Path, only: list[str], scan: int) -> dict[str, object]:
    """Each hostile image's decode peak, and the scan of ``scan`` float TIFFs, in fresh processes."""
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="aiscan-hostile-") as tmp:
        scratch = Path(tmp)
        pythonpath = code_path(code, scratch)
        for hostile in hostile_set(side):
            if only and hostile.name not in only:
                continue
            path = hostile.write(scratch)
            result = decode_peak(path, pythonpath)
            result.update(size=f"{hostile.width}x{hostile.height}", file_kb=path.stat().st_size // 1024)
            results[hostile.name] = result
            print(hostile.name, json.dumps(result), file=sys.stderr, flush=True)
            path.unlink()
        if scan:
            float_tiff = next(h for h in hostile_set(side) if h.name == "float32.tif")
            paths = [float_tiff.write(scratch)] * scan
            results[f"scan_{scan}_float32"] = _run(_SCAN, [str(p) for p in paths], pythonpath)
            print("scan", json.dumps(results[f"scan_{scan}_float32"]), file=sys.stderr, flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--side", type=int, default=11300)
    parser.add_argument("--code", type=Path, default=Path.cwd(), help="checkout whose decoder is measured")
    parser.add_argument("--only", action="append", default=[], help="one hostile file name (repeatable)")
    parser.add_argument("--scan", type=int, default=0, help="float TIFFs in one classifier scan (0: none)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    results = measure(args.side, args.code, args.only, args.scan)
    text = json.dumps(results, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
