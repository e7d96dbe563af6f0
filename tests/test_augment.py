"""Tests for im2latex_jax.data.augment: stateless TF augmentation of bucket images."""

import os
import pathlib

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from im2latex_jax import defaults
from im2latex_jax.data import augment

FIXTURES = sorted(
    (pathlib.Path(__file__).parent / 'fixtures' / 'images').glob('*.png'))


def _image(i=0):
  return tf.constant(np.asarray(Image.open(FIXTURES[i]))[..., None])


def _only(stage, **fields):
  cfg = defaults.augment_config()
  cfg[stage].enabled = True
  cfg[stage].prob = 1.0
  for k, v in fields.items():
    cfg[stage][k] = v
  return cfg


CONFIGS = {
    'scale': _only('geometry', scale=0.3),
    'rotate': _only('geometry', rotate_deg=3.0),
    'translate': _only('geometry', translate_px=40, margin=2),
    'blur': _only('blur', sigma_max=1.0),
    'noise': _only('noise', std_max=20.0),
    'binarize': _only('binarize'),
    'jpeg': _only('jpeg', min_quality=20, max_quality=40),
    'background': _only('background', min_level=180, max_ink_level=80),
    'robust': defaults.robust_augment_config(),
}


def _ink_box(a, thr=128):
  ys, xs = np.nonzero(a[..., 0] < thr)
  return ys.min(), xs.min(), ys.max() + 1, xs.max() + 1


def test_default_config_is_identity():
  x = _image()
  y = augment.augment(x, tf.constant([1, 2]), defaults.augment_config())
  np.testing.assert_array_equal(x.numpy(), y.numpy())


@pytest.mark.parametrize('name', list(CONFIGS))
def test_shape_dtype_legibility(name):
  cfg = CONFIGS[name]
  for i, path in enumerate(FIXTURES[:3]):
    x = _image(i)
    ref_ink = (x.numpy() < 128).mean()
    for s in range(3):
      y = augment.augment(x, tf.constant([s, i], tf.int64), cfg).numpy()
      assert y.shape == tuple(x.shape) and y.dtype == np.uint8, name
      ink = (y < 128).mean()
      # The formula is neither erased nor smeared over the canvas.
      assert 0.3 * ref_ink <= ink <= 3.0 * ref_ink + 0.02, (name, path, ink)
      assert 120 <= y.mean() <= 255, (name, y.mean())
      # Ink stays inside the canvas: the border rows/cols stay paper.
      if name in ('scale', 'rotate', 'translate', 'robust'):
        t, l, b, r = _ink_box(y)
        assert t >= 1 and l >= 1 and b <= y.shape[0] - 1 and r <= y.shape[1] - 1


@pytest.mark.parametrize('name', ['robust', 'noise', 'translate', 'jpeg'])
def test_determinism(name):
  x = _image(1)
  a = augment.augment(x, tf.constant([3, 4]), CONFIGS[name]).numpy()
  b = augment.augment(x, tf.constant([3, 4]), CONFIGS[name]).numpy()
  c = augment.augment(x, tf.constant([5, 6]), CONFIGS[name]).numpy()
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_translate_keeps_size_and_moves():
  x = _image(2)
  y = augment.augment(x, tf.constant([7, 7]), CONFIGS['translate']).numpy()
  bx, by = _ink_box(x.numpy()), _ink_box(y)
  assert abs((by[2] - by[0]) - (bx[2] - bx[0])) <= 1
  assert abs((by[3] - by[1]) - (bx[3] - bx[1])) <= 1
  assert bx != by


def test_scale_is_capped_to_fit():
  x = _image(0)
  cfg = _only('geometry', scale=1.0, margin=3)  # up to 2x: must be capped
  for s in range(5):
    y = augment.augment(x, tf.constant([s, 0]), cfg).numpy()
    t, l, b, r = _ink_box(y, thr=250)
    assert t >= 2 and l >= 2 and b <= y.shape[0] - 2 and r <= y.shape[1] - 2


def test_blank_image_survives():
  x = tf.fill([40, 160, 1], tf.constant(255, tf.uint8))
  y = augment.augment(x, tf.constant([0, 1]), CONFIGS['scale'])
  assert y.shape == x.shape


def test_in_tf_data_map_with_static_shape():
  x = _image(0)
  ds = tf.data.Dataset.from_tensors(x).repeat(4).enumerate().map(
      lambda i, im: augment.augment(im, tf.stack([i, i + 1]),
                                    defaults.robust_augment_config()),
      num_parallel_calls=2, deterministic=True)
  outs = [o.numpy() for o in ds]
  assert all(o.shape == tuple(x.shape) for o in outs)
  assert ds.element_spec.shape == x.shape
  assert len({o.tobytes() for o in outs}) == 4
