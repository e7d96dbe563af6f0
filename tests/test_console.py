"""console.Progress: the progress lines of long commands."""

import io

from im2latex_jax import console


def _progress(total, elapsed_s, **kw):
  p = console.Progress(total, "formulas", "rendered", stream=io.StringIO(), **kw)
  p._clock = lambda: p.start + elapsed_s  # pylint: disable=protected-access
  return p


def test_rate_and_eta_by_hand():
  # 50 of 200 in 10 s: 5.0/s, 150 left at 5/s = 30 s.
  assert _progress(200, 10).line(50) == "rendered 50/200 formulas, 5.0/s, ETA 0:30"
  # Slow units: 2 in 50 s is 25 s each; 18 left = 450 s = 7:30.
  assert _progress(20, 50).line(2) == "rendered 2/20 formulas, 25 s each, ETA 7:30"
  # No total, no ETA.
  assert _progress(None, 4).line(8) == "rendered 8 formulas, 2.0/s"


def test_prints_at_most_every_interval_and_always_the_last():
  p = _progress(10, 1, every_s=10.0)
  p.update(3)  # 1 s since the start: held back
  p.update(10)  # the last: printed
  assert p.stream.getvalue().splitlines() == ["rendered 10/10 formulas, 10.0/s, ETA 0:00"]
