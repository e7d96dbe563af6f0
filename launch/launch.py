#!/usr/bin/env python3
"""Create/use a set of VMs, install im2latex-jax on each, and start on them
(a) one multi-host training run or (b) sweep workers sharing one storage.

  launch.py create  --provider {tpu,gpu} --name N [--zone Z] [--accelerator A] [--count K]
  launch.py setup   --provider P --name N | --hosts FILE  [--repo URL | --rsync DIR]
  launch.py train   --provider P ... --workdir W -- --config configs/x.py [--config.k=v]
  launch.py sweep   --provider P ... --storage URL -- --space S --study NAME [--trials T]
  launch.py collect-logs --provider P ... --dest DIR [--workdir W]

Providers: `tpu` (Cloud TPU VMs, `gcloud compute tpus tpu-vm ... --worker=all`;
JAX finds the other hosts itself, train gets `--distributed`), `gpu` (Compute
Engine VMs `<name>-0..K-1` with one GPU each) and `ssh` (a host list file, one
`[user@]host` a line; the first is the coordinator). For gpu/ssh each host gets
JAX_COORDINATOR_ADDRESS=<host0>:PORT JAX_NUM_PROCESSES=K JAX_PROCESS_ID=i, which
im2latex_jax/sharding.maybe_initialize_distributed reads.

`--dry-run` prints every command instead of running it. Remote runs are
started under nohup; each host's log is `~/im2latex_logs/<job>.log`, and
collect-logs copies them to DEST/<host>/.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys

REMOTE_DIR = "~/im2latex-jax"
LOG_DIR = "~/im2latex_logs"
DEFAULT_REPO = "https://github.com/im2latex-jax/im2latex-jax.git"


class Runner:
  """Runs or (dry run) prints commands."""

  def __init__(self, dry_run: bool):
    self.dry_run = dry_run

  def __call__(self, cmd: list[str]) -> None:
    print("+ " + shlex.join(cmd), flush=True)
    if not self.dry_run:
      subprocess.run(cmd, check=True)


# ------------------------------------------------------------- providers
def hosts_of(args) -> list[str]:
  """The hosts in process order (host 0 is the coordinator)."""
  if args.provider == "ssh":
    if not args.hosts:
      raise SystemExit("error: --provider ssh needs --hosts FILE (one [user@]host a line).")
    try:
      lines = open(args.hosts, encoding="utf-8").read().splitlines()
    except OSError as e:
      raise SystemExit(f"error: cannot read --hosts {args.hosts}: {e.strerror}.") from None
    hosts = [l.split("#")[0].strip() for l in lines]
    hosts = [h for h in hosts if h]
    if not hosts:
      raise SystemExit(f"error: {args.hosts} lists no hosts.")
    return hosts
  if not args.name:
    raise SystemExit(f"error: --provider {args.provider} needs --name.")
  if args.provider == "gpu":
    return [f"{args.name}-{i}" for i in range(args.count)]
  return [f"{args.name}:worker={i}" for i in range(args.count)]  # TPU workers


def _ssh(args, host: str, remote: str) -> list[str]:
  """One command on one host (gpu/ssh), or on every TPU worker (tpu)."""
  if args.provider == "tpu":
    return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", args.name, f"--zone={args.zone}",
            f"--worker={host}", f"--command={remote}"]
  if args.provider == "gpu":
    return ["gcloud", "compute", "ssh", host, f"--zone={args.zone}", f"--command={remote}"]
  return ["ssh", "-o", "BatchMode=yes", host, remote]


def _each_host(args, fn) -> None:
  """fn(host, index) -> remote command; TPU runs one command on --worker=all."""
  run = Runner(args.dry_run)
  if args.provider == "tpu" and getattr(args, "tpu_all", True):
    run(_ssh(args, "all", fn("all", None)))
    return
  for i, h in enumerate(hosts_of(args)):
    run(_ssh(args, h, fn(h, i)))


def _nohup(job: str, cmd: str, env: dict[str, str] | None = None) -> str:
  envs = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
  return (f"mkdir -p {LOG_DIR} && cd {REMOTE_DIR} && "
          f"{envs + ' ' if envs else ''}nohup {cmd} > {LOG_DIR}/{job}.log 2>&1 &")


# -------------------------------------------------------------- commands
def cmd_create(args) -> None:
  run = Runner(args.dry_run)
  if args.provider == "tpu":
    run(["gcloud", "compute", "tpus", "tpu-vm", "create", args.name, f"--zone={args.zone}",
         f"--accelerator-type={args.accelerator or 'v4-16'}",
         f"--version={args.tpu_version}"])
  elif args.provider == "gpu":
    for h in hosts_of(args):
      run(["gcloud", "compute", "instances", "create", h, f"--zone={args.zone}",
           f"--machine-type={args.machine_type}",
           f"--accelerator=type={args.accelerator or 'nvidia-l4'},count=1",
           "--maintenance-policy=TERMINATE",
           "--image-family=common-cu124-debian-11", "--image-project=deeplearning-platform-release",
           "--boot-disk-size=200GB", "--metadata=install-nvidia-driver=True"])
  else:
    raise SystemExit("error: --provider ssh uses existing hosts; there is nothing to create.")


def cmd_setup(args) -> None:
  extra = {"tpu": "jax[tpu]", "gpu": "jax[cuda12]", "ssh": "jax"}[args.provider]
  if args.rsync:
    run = Runner(args.dry_run)
    for h in hosts_of(args) if args.provider != "tpu" else []:
      dest = f"{h}:{REMOTE_DIR.replace('~/', '')}/"
      run(["rsync", "-az", "--delete", "--exclude=.git", "--exclude=sweeps",
           args.rsync.rstrip("/") + "/", dest] if args.provider == "ssh" else
          ["gcloud", "compute", "scp", "--recurse", f"--zone={args.zone}",
           args.rsync, f"{h}:{REMOTE_DIR}"])
    if args.provider == "tpu":
      run(["gcloud", "compute", "tpus", "tpu-vm", "scp", "--recurse", args.rsync,
           f"{args.name}:{REMOTE_DIR}", f"--zone={args.zone}", "--worker=all"])
    fetch = "true"
  else:
    fetch = (f"(test -d {REMOTE_DIR}/.git && git -C {REMOTE_DIR} pull --ff-only) || "
             f"git clone {shlex.quote(args.repo)} {REMOTE_DIR}")
  install = (f"{fetch} && cd {REMOTE_DIR} && python3 -m pip install -q -U pip && "
             f"python3 -m pip install -q '{extra}' -e '.[sweep]'")
  _each_host(args, lambda h, i: install)


def _dist_env(args, i: int, n: int, hosts: list[str]) -> dict[str, str]:
  coord = args.coordinator or hosts[0].split("@")[-1]
  return {"JAX_COORDINATOR_ADDRESS": f"{coord}:{args.port}", "JAX_NUM_PROCESSES": str(n),
          "JAX_PROCESS_ID": str(i)}


def cmd_train(args) -> None:
  rest = _rest(args, "train", ("--config",))
  job = args.job or "train"
  base = f"python3 -m im2latex_jax.main train --workdir {shlex.quote(args.workdir)} " + \
      shlex.join(rest)
  if args.provider == "tpu":
    _each_host(args, lambda h, i: _nohup(job, base + " --distributed"))
    return
  hosts = hosts_of(args)
  _each_host(args, lambda h, i: _nohup(job, base, {
      **_dist_env(args, i, len(hosts), hosts), "WANDB_MODE": args.wandb_mode}))


def cmd_sweep(args) -> None:
  rest = _rest(args, "sweep", ("--space", "--study"))
  if not args.storage:
    raise SystemExit("error: sweep workers on several VMs need one shared --storage URL "
                     "(e.g. postgresql://user:pw@dbhost/optuna).")
  job = args.job or "sweep"
  cmd = (f"python3 -m im2latex_jax.main sweep --storage {shlex.quote(args.storage)} "
         f"--workers {args.workers_per_host} --root {shlex.quote(args.root)} " +
         shlex.join(rest))
  _each_host(args, lambda h, i: _nohup(job, cmd, {"WANDB_MODE": args.wandb_mode}))


def cmd_collect_logs(args) -> None:
  run = Runner(args.dry_run)
  hosts = hosts_of(args)
  for i, h in enumerate(hosts):
    local = f"{args.dest}/{h.replace(':', '_').replace('@', '_')}"
    run(["mkdir", "-p", local])
    srcs = [LOG_DIR] + ([f"{args.workdir}/train.log"] if args.workdir else [])
    for src in srcs:
      if args.provider == "ssh":
        run(["rsync", "-az", f"{h}:{src.replace('~/', '')}", local + "/"])
      elif args.provider == "gpu":
        run(["gcloud", "compute", "scp", "--recurse", f"--zone={args.zone}", f"{h}:{src}", local])
      else:
        run(["gcloud", "compute", "tpus", "tpu-vm", "scp", "--recurse",
             f"{args.name}:{src}", local, f"--zone={args.zone}", f"--worker={i}"])


def _rest(args, what: str, required: tuple[str, ...]) -> list[str]:
  rest = [a for a in args.rest if a != "--"]
  for r in required:
    if not any(a == r or a.startswith(r + "=") for a in rest):
      raise SystemExit(f"error: {what} needs {r} after '--' (passed to im2latex-jax {what}).")
  return rest


def parse_args(argv: list[str]) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  sub = p.add_subparsers(dest="cmd", required=True)
  common = argparse.ArgumentParser(add_help=False)
  common.add_argument("--provider", choices=("tpu", "gpu", "ssh"), required=True)
  common.add_argument("--name", help="TPU VM name, or GPU VM name prefix (NAME-0..K-1)")
  common.add_argument("--zone", default="us-central2-b")
  common.add_argument("--count", type=int, default=2, help="hosts (TPU: workers of the slice)")
  common.add_argument("--hosts", help="ssh: file with one [user@]host a line")
  common.add_argument("--dry-run", action="store_true", help="print the commands only")
  c = sub.add_parser("create", parents=[common])
  c.add_argument("--accelerator", help="TPU type (v4-16) or GPU type (nvidia-l4)")
  c.add_argument("--tpu-version", default="tpu-ubuntu2204-base")
  c.add_argument("--machine-type", default="g2-standard-8")
  s = sub.add_parser("setup", parents=[common])
  s.add_argument("--repo", default=DEFAULT_REPO)
  s.add_argument("--rsync", help="copy this local checkout instead of git clone")
  for name, fn in (("train", cmd_train), ("sweep", cmd_sweep)):
    t = sub.add_parser(name, parents=[common])
    t.add_argument("--job", help="log name (default: the command)")
    t.add_argument("--wandb-mode", default="auto")
    if name == "train":
      t.add_argument("--workdir", required=True,
                     help="shared by all hosts (e.g. gs://bucket/run for Orbax)")
      t.add_argument("--coordinator", help="host0 address as the others reach it")
      t.add_argument("--port", type=int, default=8476)
    else:
      t.add_argument("--storage", help="shared Optuna storage URL")
      t.add_argument("--workers-per-host", type=int, default=1)
      t.add_argument("--root", default="sweeps")
    t.add_argument("rest", nargs=argparse.REMAINDER, help="-- then im2latex-jax flags")
  l = sub.add_parser("collect-logs", parents=[common])
  l.add_argument("--dest", default="logs")
  l.add_argument("--workdir", help="also fetch WORKDIR/train.log")
  return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  fn = {"create": cmd_create, "setup": cmd_setup, "train": cmd_train, "sweep": cmd_sweep,
        "collect-logs": cmd_collect_logs}[args.cmd]
  try:
    fn(args)
  except subprocess.CalledProcessError as e:
    sys.stderr.write(f"error: {shlex.join(e.cmd)} exited with {e.returncode}.\n")
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
