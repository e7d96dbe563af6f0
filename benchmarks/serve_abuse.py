"""A legal but hostile upload next to a good one, against a real `serve` process.

    python benchmarks/serve_abuse.py [--workdir W] [--out serve_abuse.json]

Starts `im2latex-jax serve` on a free local port (the shipped model unless
--workdir), then measures:
- a good request alone (a dataset image, tests/fixtures), median of 3;
- a 5000x5000 random-noise JPEG (the best quality under the 10 MB limit):
  status and time;
- the same JPEG and, 0.1 s later, a good request in parallel: both times;
- the server's resident memory (VmRSS) before and after.
Prints the figures with `uptime`'s load average before and after.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import json
import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
from PIL import Image

from im2latex_jax import bench
from im2latex_jax.serve import app

REPO = pathlib.Path(__file__).resolve().parents[1]
GOOD = REPO / "tests" / "fixtures" / "images" / "train_00126.png"
MAX_UPLOAD_BYTES = app.MAX_UPLOAD_BYTES


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _post(url: str, data: bytes, content_type: str) -> tuple[int, float]:
  req = urllib.request.Request(url, data=data, headers={"Content-Type": content_type})
  t = time.perf_counter()
  try:
    with urllib.request.urlopen(req, timeout=120) as r:
      r.read()
      status = r.status
  except urllib.error.HTTPError as e:
    e.read()
    status = e.code
  return status, time.perf_counter() - t


def _rss_mb(pid: int) -> float:
  with open(f"/proc/{pid}/status") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) / 1024
  return float("nan")


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--workdir", default=None)
  p.add_argument("--out", default=None)
  p.add_argument("--jpeg-mb", type=float, default=MAX_UPLOAD_BYTES / 1e6,
                 help="largest size of the noise JPEG, MB (default: the upload limit)")
  args = p.parse_args()
  port = _free_port()
  cmd = [sys.executable, "-m", "im2latex_jax.main", "serve", "--port", str(port)]
  if args.workdir:
    cmd += ["--workdir", args.workdir]
  server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  base = f"http://127.0.0.1:{port}"
  out: dict = {"cpu": bench.cpu_info().get("cpu_model", "unknown"), "nproc": os.cpu_count(),
               "load_before": os.getloadavg()}
  try:
    for _ in range(600):
      try:
        with urllib.request.urlopen(base + "/healthz", timeout=5) as r:
          if r.status == 200:
            break
      except (urllib.error.URLError, ConnectionError):
        time.sleep(0.5)
    good = GOOD.read_bytes()
    api = base + "/api/predict"
    _post(api, good, "image/png")  # compile this bucket
    alone = [_post(api, good, "image/png")[1] for _ in range(3)]
    out["good_alone_s"] = float(np.median(alone))
    noise = np.random.default_rng(0).integers(0, 256, (5000, 5000, 3), np.uint8)
    for quality in range(60, 0, -10):  # the best quality that stays under the limit
      buf = io.BytesIO()
      Image.fromarray(noise).save(buf, "JPEG", quality=quality)
      if buf.tell() < min(0.98 * MAX_UPLOAD_BYTES, args.jpeg_mb * 1e6):
        break
    bad = buf.getvalue()
    out["bad_bytes"] = len(bad)
    out["rss_mb_before"] = _rss_mb(server.pid)
    out["bad_status"], out["bad_alone_s"] = _post(api, bad, "image/jpeg")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
      f_bad = pool.submit(_post, api, bad, "image/jpeg")
      time.sleep(0.1)
      f_good = pool.submit(_post, api, good, "image/png")
      out["parallel_bad_status"], out["parallel_bad_s"] = f_bad.result()
      out["parallel_good_status"], out["parallel_good_s"] = f_good.result()
    out["rss_mb_after"] = _rss_mb(server.pid)
  finally:
    server.terminate()
    server.wait(30)
  out["load_after"] = os.getloadavg()
  print(json.dumps(out, indent=1))
  print(f"5000^2 JPEG ({out['bad_bytes'] / 1e6:.1f} MB): {out['bad_status']} in "
        f"{out['bad_alone_s']:.2f} s; good request alone {out['good_alone_s']:.2f} s, beside the "
        f"JPEG {out['parallel_good_s']:.2f} s; server RSS {out['rss_mb_before']:.0f} -> "
        f"{out['rss_mb_after']:.0f} MB; load {out['load_before'][0]:.2f} -> "
        f"{out['load_after'][0]:.2f}")
  if args.out:
    with open(args.out, "w") as f:
      json.dump(out, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
