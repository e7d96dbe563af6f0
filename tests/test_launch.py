"""launch/launch.py --dry-run: the exact commands for TPU VMs, GPU VMs and SSH hosts."""

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "launch"))
import launch  # pylint: disable=g-import-not-at-top,wrong-import-position


def _run(capsys, *argv):
  assert launch.main(["--dry-run" if a == "DRY" else a for a in argv]) == 0
  return [l[2:] for l in capsys.readouterr().out.splitlines() if l.startswith("+ ")]


def test_tpu_train_and_sweep(capsys):
  cmds = _run(capsys, "create", "--provider", "tpu", "--name", "pod", "--accelerator", "v4-16",
              "DRY")
  assert cmds == ["gcloud compute tpus tpu-vm create pod --zone=us-central2-b "
                  "--accelerator-type=v4-16 --version=tpu-ubuntu2204-base"]
  cmds = _run(capsys, "setup", "--provider", "tpu", "--name", "pod", "DRY")
  assert len(cmds) == 1 and "--worker=all" in cmds[0] and "pip install" in cmds[0]
  cmds = _run(capsys, "train", "--provider", "tpu", "--name", "pod", "--workdir",
              "gs://b/run", "DRY", "--", "--config", "configs/quickstart.py",
              "--config.num_train_steps=100")
  assert len(cmds) == 1 and cmds[0].startswith("gcloud compute tpus tpu-vm ssh pod")
  assert "--worker=all" in cmds[0]
  assert ("im2latex_jax.main train --workdir gs://b/run --config configs/quickstart.py "
          "--config.num_train_steps=100 --distributed") in cmds[0]
  assert "JAX_COORDINATOR_ADDRESS" not in cmds[0]  # TPU VMs find each other
  cmds = _run(capsys, "sweep", "--provider", "tpu", "--name", "pod", "--storage",
              "postgresql://u:p@db/optuna", "DRY", "--", "--space", "s.py", "--study", "x")
  assert "sweep --storage postgresql://u:p@db/optuna --workers 1" in cmds[0]
  assert "--space s.py --study x" in cmds[0] and "nohup" in cmds[0]


def test_gpu_vms(capsys):
  cmds = _run(capsys, "create", "--provider", "gpu", "--name", "g", "--count", "2",
              "--zone", "us-east1-b", "DRY")
  assert [c.split()[4] for c in cmds] == ["g-0", "g-1"]
  assert all("gcloud compute instances create" in c and "--accelerator=type=nvidia-l4,count=1"
             in c for c in cmds)
  cmds = _run(capsys, "train", "--provider", "gpu", "--name", "g", "--count", "2", "--zone",
              "us-east1-b", "--workdir", "gs://b/r", "DRY", "--", "--config", "c.py")
  assert len(cmds) == 2
  for i, c in enumerate(cmds):
    assert c.startswith(f"gcloud compute ssh g-{i} --zone=us-east1-b '--command=")
    assert "JAX_COORDINATOR_ADDRESS=g-0:8476 JAX_NUM_PROCESSES=2" in c
    assert f"JAX_PROCESS_ID={i} " in c and "--distributed" not in c
  cmds = _run(capsys, "collect-logs", "--provider", "gpu", "--name", "g", "--count", "2",
              "--dest", "out", "DRY")
  assert any(c.startswith("gcloud compute scp --recurse") and "g-1:~/im2latex_logs" in c
             and c.endswith(" out/g-1") for c in cmds)


def test_ssh_host_list(tmp_path, capsys):
  hosts = tmp_path / "hosts.txt"
  hosts.write_text("# lab machines\nalice@10.0.0.5\n10.0.0.6  # second\n\n")
  cmds = _run(capsys, "setup", "--provider", "ssh", "--hosts", str(hosts), "--rsync", "/src",
              "DRY")
  assert cmds[:2] == ["rsync -az --delete --exclude=.git --exclude=sweeps /src/ "
                      "alice@10.0.0.5:im2latex-jax/",
                      "rsync -az --delete --exclude=.git --exclude=sweeps /src/ 10.0.0.6:im2latex-jax/"]
  assert cmds[2].startswith("ssh -o BatchMode=yes alice@10.0.0.5 ")
  cmds = _run(capsys, "train", "--provider", "ssh", "--hosts", str(hosts), "--workdir",
              "/nfs/run", "DRY", "--", "--config", "configs/quickstart.py")
  assert len(cmds) == 2
  assert "JAX_COORDINATOR_ADDRESS=10.0.0.5:8476 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=1" in cmds[1]
  assert cmds[1].startswith("ssh -o BatchMode=yes 10.0.0.6 ")
  cmds = _run(capsys, "sweep", "--provider", "ssh", "--hosts", str(hosts), "--storage",
              "mysql://db/o", "--workers-per-host", "2", "DRY", "--", "--space", "s.py",
              "--study", "x", "--trials", "16")
  assert len(cmds) == 2 and all("--workers 2" in c and "--trials 16" in c for c in cmds)
  cmds = _run(capsys, "collect-logs", "--provider", "ssh", "--hosts", str(hosts), "--dest",
              "L", "DRY")
  assert "rsync -az alice@10.0.0.5:im2latex_logs L/alice_10.0.0.5/" in cmds


@pytest.mark.parametrize("argv,msg", [
    (["train", "--provider", "ssh", "--workdir", "w", "--", "--config", "c"], "needs --hosts"),
    (["sweep", "--provider", "tpu", "--name", "p", "--", "--space", "s", "--study", "x"],
     "shared --storage"),
    (["train", "--provider", "gpu", "--name", "g", "--workdir", "w"], "needs --config"),
])
def test_errors(argv, msg, capsys):
  with pytest.raises(SystemExit, match=msg):
    launch.main(argv + ["--dry-run"] if "--" not in argv else
                argv[:argv.index("--")] + ["--dry-run"] + argv[argv.index("--"):])
