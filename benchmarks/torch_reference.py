"""A PyTorch twin of the im2markup model, for a side-by-side speed reference.

The same architecture and loss as im2latex_jax/models/im2markup.py (CNN as in
the Torch original, row BiLSTM with a learned initial state per row index,
1-layer LSTM decoder with input feeding and Luong "general" attention,
token-mean cross-entropy over non-PAD targets) and the same update (SGD with
per-tensor gradient-norm clipping, im2markup's recipe). Written the way a
careful PyTorch user would: cuDNN/oneDNN layers, a Python loop over decoder
steps, the vocabulary projection applied once to all steps.

Not a dependency of the package: `im2latex-jax bench` imports it by path when
torch is installed (CPU wheel: `pip install torch==2.13.0`), and it runs alone:

  python benchmarks/torch_reference.py --batch 32 --hw 50x200 --tokens 102

Simplifications that do not change the work done on the benchmark's batches:
every image fills its bucket (so the row lengths and the attention mask are
all-valid and packing is not needed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

PAD, BOS, EOS = 0, 1, 2


class CNN(nn.Module):
  """conv64 → pool → conv128 → pool → conv256+BN → conv256 → pool(2,1) →
  conv512+BN → pool(1,2) → conv512+BN; all 3×3 stride 1 pad 1."""

  def __init__(self, f=(64, 128, 256, 256, 512, 512)):
    super().__init__()
    c = lambda i, o: nn.Conv2d(i, o, 3, 1, 1)
    self.c0, self.c1, self.c2 = c(1, f[0]), c(f[0], f[1]), c(f[1], f[2])
    self.c3, self.c4, self.c5 = c(f[2], f[3]), c(f[3], f[4]), c(f[4], f[5])
    self.b2 = nn.BatchNorm2d(f[2], momentum=0.1, eps=1e-5)
    self.b4 = nn.BatchNorm2d(f[4], momentum=0.1, eps=1e-5)
    self.b5 = nn.BatchNorm2d(f[5], momentum=0.1, eps=1e-5)

  def forward(self, x):                                        # [B, 1, H, W]
    x = F.max_pool2d(F.relu(self.c0(x)), 2, 2)
    x = F.max_pool2d(F.relu(self.c1(x)), 2, 2)
    x = F.relu(self.b2(self.c2(x)))
    x = F.max_pool2d(F.relu(self.c3(x)), (2, 1), (2, 1))
    x = F.max_pool2d(F.relu(self.b4(self.c4(x))), (1, 2), (1, 2))
    return F.relu(self.b5(self.c5(x)))                         # [B, C, H', W']


class Im2Markup(nn.Module):
  """The full model; forward(images uint8 [B,H,W], tokens [B,T]) -> logits."""

  def __init__(self, vocab_size, cnn_features=(64, 128, 256, 256, 512, 512),
               encoder_hidden=256, max_rows=100, decoder_hidden=512, embed_dim=80):
    super().__init__()
    self.cnn = CNN(cnn_features)
    self.max_rows = max_rows
    self.rnn = nn.LSTM(cnn_features[-1], encoder_hidden, batch_first=True,
                       bidirectional=True)
    # Learned per-row initial (h, c) for both directions: [rows, 2 dirs, 2, hidden].
    self.row_init = nn.Parameter(torch.zeros(max_rows, 2, 2, encoder_hidden))
    self.key_proj = nn.Linear(2 * encoder_hidden, decoder_hidden, bias=False)
    self.embed = nn.Embedding(vocab_size, embed_dim)
    self.cell = nn.LSTMCell(embed_dim + decoder_hidden, decoder_hidden)
    self.combine = nn.Linear(2 * encoder_hidden + decoder_hidden, decoder_hidden, bias=False)
    self.out = nn.Linear(decoder_hidden, vocab_size)
    self.hidden = decoder_hidden
    for p in self.parameters():   # im2markup's U[-0.05, 0.05]
      nn.init.uniform_(p, -0.05, 0.05)
    for bn in (self.cnn.b2, self.cnn.b4, self.cnn.b5):
      nn.init.ones_(bn.weight)
      nn.init.zeros_(bn.bias)

  def encode(self, images):
    x = (images.float().unsqueeze(1) - 128.0) / 128.0
    f = self.cnn(x)                                             # [B, C, H', W']
    b, c, fh, fw = f.shape
    rows = f.permute(0, 2, 3, 1).reshape(b * fh, fw, c)
    idx = torch.clamp(torch.arange(fh), max=self.max_rows - 1)
    init = self.row_init[idx]                                   # [H', 2, 2, h]
    init = init.unsqueeze(0).expand(b, -1, -1, -1, -1).reshape(b * fh, 2, 2, -1)
    h0 = init[:, :, 0].permute(1, 0, 2).contiguous()            # [2, B*H', h]
    c0 = init[:, :, 1].permute(1, 0, 2).contiguous()
    out, _ = self.rnn(rows, (h0, c0))                           # [B*H', W', 2h]
    memory = out.reshape(b, fh * fw, -1)
    return memory, self.key_proj(memory)

  def step(self, memory, keys, state, o_prev, token):
    h, c = self.cell(torch.cat([self.embed(token), o_prev], -1), state)
    scores = torch.bmm(keys, h.unsqueeze(2)).squeeze(2)         # [B, N]
    attn = torch.softmax(scores, -1)
    ctx = torch.bmm(attn.unsqueeze(1), memory).squeeze(1)
    o = torch.tanh(self.combine(torch.cat([ctx, h], -1)))
    return (h, c), o

  def forward(self, images, decoder_inputs):
    memory, keys = self.encode(images)
    b = images.shape[0]
    z = memory.new_zeros(b, self.hidden)
    state, o = (z, z), z
    outs = []
    for t in range(decoder_inputs.shape[1]):
      state, o = self.step(memory, keys, state, o, decoder_inputs[:, t])
      outs.append(o)
    return self.out(torch.stack(outs, 1))                       # [B, T, V]

  @torch.no_grad()
  def greedy(self, images, max_len):
    memory, keys = self.encode(images)
    b = images.shape[0]
    z = memory.new_zeros(b, self.hidden)
    state, o = (z, z), z
    tok = torch.full((b,), BOS, dtype=torch.long)
    out = []
    for _ in range(max_len):
      state, o = self.step(memory, keys, state, o, tok)
      tok = self.out(o).argmax(-1)
      out.append(tok)
    return torch.stack(out, 1)


def loss_fn(logits, targets):
  return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                         ignore_index=PAD)


def make_batch(batch=32, h=50, w=200, tokens=102, vocab=500, seed=0):
  rng = np.random.default_rng(seed)
  ink = rng.random((batch, h, w)) < 0.08
  images = np.where(ink, rng.integers(0, 96, (batch, h, w)), 255).astype(np.uint8)
  toks = rng.integers(4, vocab, (batch, tokens)).astype(np.int64)
  toks[:, 0] = BOS
  toks[:, -1] = EOS
  return images, toks


def make_steps(images: np.ndarray, tokens: np.ndarray, vocab_size: int, *,
               threads: int | None = None, model_kwargs: dict | None = None,
               bf16: bool = False, max_len: int | None = None, seed: int = 0):
  """(train_step, greedy): callables that run one train step (fwd+bwd+clip+SGD;
  returns the loss) and one greedy decode of the batch, for interleaved timing.

  bf16: the forward and loss under `torch.autocast('cpu', torch.bfloat16)`,
  the mixed precision a PyTorch user turns on (oneDNN's bf16 kernels; AMX
  where the CPU has it); parameters and the SGD update stay fp32.
  """
  threads = threads or len(os.sched_getaffinity(0))
  torch.set_num_threads(threads)
  torch.manual_seed(seed)
  model = Im2Markup(vocab_size, **(model_kwargs or {}))
  opt = torch.optim.SGD(model.parameters(), lr=0.1)
  x = torch.from_numpy(np.asarray(images).reshape(images.shape[:3]).copy())
  t = torch.from_numpy(np.asarray(tokens).astype(np.int64))
  max_len = max_len or tokens.shape[1]

  def autocast():
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)

  def train_step():
    model.train()
    opt.zero_grad(set_to_none=True)
    with autocast():
      loss = loss_fn(model(x, t[:, :-1]).float(), t[:, 1:])
    loss.backward()
    for p in model.parameters():      # im2markup: per-tensor norm clip 5
      torch.nn.utils.clip_grad_norm_([p], 5.0)
    opt.step()
    return float(loss.detach())

  def greedy():
    model.eval()
    with autocast():
      return model.greedy(x, max_len)

  return train_step, greedy, model


def benchmark(images: np.ndarray, tokens: np.ndarray, vocab_size: int, *, steps: int = 5,
              warmup: int = 2, threads: int | None = None, max_len: int | None = None,
              model_kwargs: dict | None = None, decode_reps: int = 3,
              bf16: bool = False) -> dict:
  """Times a train step (fwd+bwd+clip+SGD) and greedy decoding on one batch.

  Args:
    images: uint8 [B, H, W] or [B, H, W, 1].
    tokens: int [B, T] (BOS … EOS PAD…).
    vocab_size: V.
    steps, warmup: timed and untimed train steps; the median is reported.
    threads: torch.set_num_threads (default: the cores this process may use).
    bf16: autocast to bfloat16 (see make_steps).
  """
  threads = threads or len(os.sched_getaffinity(0))
  train_step, greedy, model = make_steps(images, tokens, vocab_size, threads=threads,
                                         model_kwargs=model_kwargs, bf16=bf16,
                                         max_len=max_len)
  losses, times = [], []
  for i in range(warmup + steps):
    t0 = time.perf_counter()
    losses.append(train_step())
    if i >= warmup:
      times.append(time.perf_counter() - t0)
  max_len = max_len or tokens.shape[1]
  greedy()  # warm-up
  dec = []
  for _ in range(decode_reps):
    t0 = time.perf_counter()
    greedy()
    dec.append(time.perf_counter() - t0)
  step_s = statistics.median(times)
  return {"torch_version": torch.__version__, "threads": threads, "bf16": bf16,
          "params": int(sum(p.numel() for p in model.parameters())),
          "train_step_s": step_s, "train_samples_per_s": images.shape[0] / step_s,
          "train_step_times_s": times, "first_loss": losses[0],
          "greedy_batch_s": statistics.median(dec), "greedy_max_len": max_len,
          "greedy_images_per_s": images.shape[0] / statistics.median(dec)}


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--hw", default="50x200")
  p.add_argument("--tokens", type=int, default=102, help="T incl. BOS/EOS")
  p.add_argument("--vocab", type=int, default=500)
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--threads", type=int, default=None)
  p.add_argument("--bf16", action="store_true", help="torch.autocast to bfloat16")
  a = p.parse_args()
  h, w = (int(v) for v in a.hw.split("x"))
  images, tokens = make_batch(a.batch, h, w, a.tokens, a.vocab)
  print(json.dumps(benchmark(images, tokens, a.vocab, steps=a.steps, threads=a.threads,
                             bf16=a.bf16), indent=1))


if __name__ == "__main__":
  main()
