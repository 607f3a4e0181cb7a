"""Preprocessing: `exact` is bit-identical to the original torchvision pipeline, and `fast` (PIL's
resampling re-done in torch) to `exact`, on smooth, noisy, binary and odd-sized images."""
import numpy as np
import pytest
import torch
from PIL import Image

from student_teacher.oracle.preprocess import (CLIP_MEAN, CLIP_STD, crop_offsets, normalised, preprocess_exact,
                               preprocess_fast, resized_size, to_uint8)

SIZES = [(512, 512), (256, 320), (427, 640), (96, 64), (224, 224), (225, 224), (224, 300),
         (1, 5), (333, 1000), (31, 33)]


def img(h, w, seed=0):
    rs = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    ramp = np.stack([xx / w, yy / h, (xx + yy) / (w + h)], axis=-1)
    return ((0.6 * ramp + 0.4 * rs.rand(h, w, 3)) * 255).astype(np.uint8)


def test_resize_rule_truncates_long_side():
    assert resized_size(427, 640, 224) == (224, 335)  # 335.7 -> 335
    assert resized_size(96, 64, 224) == (336, 224)
    assert resized_size(512, 512, 224) == (224, 224)
    assert resized_size(256, 320, 224) == (224, 280)


def test_crop_offsets_use_python_rounding():
    assert crop_offsets(224, 335, 224) == (0, 56)  # 55.5 -> 56 (round half to even)
    assert crop_offsets(224, 225, 224) == (0, 0)  # 0.5 -> 0
    assert crop_offsets(227, 224, 224) == (2, 0)  # 1.5 -> 2


def test_comfy_float_to_uint8_truncates():
    x = torch.tensor([[[0.0, 0.5, 0.999]]])
    assert to_uint8(x).tolist() == [[[0, 127, 254]]]
    assert to_uint8(torch.tensor([[[-1.0, 2.0, 1.0]]])).tolist() == [[[0, 255, 255]]]
    u = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, -1)
    assert np.array_equal(to_uint8(torch.from_numpy(u).float() / 255.0), u)


def test_square_image_at_size_is_only_normalised():
    a = img(32, 32)
    out = preprocess_exact([a], 32)[0]
    ref = (torch.from_numpy(a).permute(2, 0, 1).float() / 255 - torch.tensor(CLIP_MEAN)[:, None, None]) \
        / torch.tensor(CLIP_STD)[:, None, None]
    assert torch.allclose(out, ref, atol=1e-6)


@pytest.mark.parametrize("hw", SIZES)
def test_exact_matches_torchvision_bit_for_bit(hw):
    tv = pytest.importorskip("torchvision.transforms")
    try:
        from torchvision.transforms import InterpolationMode
        bicubic = InterpolationMode.BICUBIC
    except ImportError:  # pragma: no cover
        bicubic = Image.BICUBIC
    original = tv.Compose([tv.Resize(224, interpolation=bicubic), tv.CenterCrop(224),
                           lambda im: im.convert("RGB"), tv.ToTensor(),
                           tv.Normalize(CLIP_MEAN, CLIP_STD)])
    a = img(*hw, seed=hw[0])
    ref = original(Image.fromarray(a))
    ours = preprocess_exact([torch.from_numpy(a).float() / 255.0], 224)[0]
    assert torch.equal(ours, ref)


def adversarial(h, w, pattern, seed=0):
    rs = np.random.RandomState(seed)
    if pattern == "noise":
        return rs.randint(0, 256, (h, w, 3)).astype(np.uint8)
    if pattern == "binary":
        return (rs.rand(h, w, 3) > 0.5).astype(np.uint8) * 255
    yy, xx = np.mgrid[0:h, 0:w]
    return np.repeat((((yy + xx) % 2) * 255).astype(np.uint8)[..., None], 3, axis=-1)


@pytest.mark.parametrize("crop", ["round", "floor"])
@pytest.mark.parametrize("pattern", ["noise", "binary", "checker"])
def test_fast_equals_exact(pattern, crop):
    for hw in [(256, 320), (96, 64), (427, 640), (224, 224), (1024, 1024), (31, 700), (225, 224)]:
        a = torch.from_numpy(adversarial(*hw, pattern)).float() / 255.0
        e = preprocess_exact([a], 224, crop=crop)
        f = preprocess_fast(a[None], 224, crop=crop)
        assert f.shape == e.shape == (1, 3, 224, 224)
        assert torch.equal(f, e), (hw, pattern, crop)


def test_crop_offsets_floor_like_transformers():
    assert crop_offsets(224, 335, 224, rounding="floor") == (0, 55)
    assert crop_offsets(225, 224, 224, rounding="floor") == (0, 0)
    with pytest.raises(ValueError):
        crop_offsets(224, 335, 224, rounding="ceil")


def test_fast_batch_and_list_inputs():
    b = torch.rand(3, 50, 70, 3)
    assert preprocess_fast(b, 32).shape == (3, 3, 32, 32)
    lst = [torch.rand(50, 70, 3), torch.rand(20, 10, 3)]
    assert preprocess_fast(lst, 32).shape == (2, 3, 32, 32)
    assert preprocess_exact(lst, 32).shape == (2, 3, 32, 32)


def test_grey_and_rgba_inputs():
    g = torch.rand(1, 40, 40, 1)
    rgba = torch.rand(1, 40, 40, 4)
    for x in (g, rgba):
        assert preprocess_exact(x, 32).shape == (1, 3, 32, 32)
        assert preprocess_fast(x, 32).shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="channels"):
        preprocess_exact(torch.rand(1, 8, 8, 2), 32)
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        preprocess_exact(torch.rand(8, 8), 32)


# tall and wide images, and large downscales: Pillow 13 resizes some of them vertical pass first
TALL_WIDE = [(1000, 300), (300, 1000), (1031, 257), (257, 1031), (4000, 1000), (1000, 4000), (3000, 240)]


@pytest.mark.parametrize("hw", TALL_WIDE + [(1000, 300, 100, 224), (2000, 2000, 224, 50)])
def test_pil_resize_equals_installed_pillow(hw):
    from student_teacher.oracle.pil_resize import pil_bicubic_resize
    h, w = hw[:2]
    nh, nw = hw[2:] or resized_size(h, w, 224)
    a = adversarial(h, w, "noise", seed=h + w)
    want = np.asarray(Image.fromarray(a).resize((nw, nh), Image.BICUBIC))
    got = pil_bicubic_resize(torch.from_numpy(a).permute(2, 0, 1), nh, nw).permute(1, 2, 0)
    assert np.array_equal(got.numpy().astype(np.uint8), want)


@pytest.mark.parametrize("crop", ["round", "floor"])
@pytest.mark.parametrize("hw", TALL_WIDE)
def test_fast_equals_exact_on_tall_and_wide_images(hw, crop):
    a = torch.from_numpy(adversarial(*hw, "noise", seed=hw[0])).float() / 255.0
    assert torch.equal(preprocess_fast(a[None], 224, crop=crop), preprocess_exact([a], 224, crop=crop))


def test_pass_order_follows_the_pillow_version():
    from student_teacher.oracle.pil_resize import vertical_first
    assert vertical_first(1000, 300, 746, 224, pillow_major=13)  # 254 rows lost > 2 x 76 columns
    assert not vertical_first(1000, 300, 746, 224, pillow_major=12)  # Pillow < 13: horizontal first
    assert not vertical_first(300, 1000, 224, 746, pillow_major=13)
    assert not vertical_first(1000, 400, 700, 250, pillow_major=13)  # 300 = 2 x 150: not more than twice
    assert not vertical_first(100, 1000, 200, 224, pillow_major=13)  # the height grows


@pytest.mark.parametrize("hw", [(300, 200), (200, 300), (224, 224), (512, 512), (96, 64), (1000, 300), (224, 100)])
def test_pad_keeps_the_whole_image_and_fast_equals_exact(hw):
    """HPSv2 (the hpsv2 package's score()): the long side to 224, black bars on the short side."""
    h, w = hw
    a = torch.from_numpy(adversarial(h, w, "noise", seed=h)).float() / 255.0
    exact = preprocess_exact([a], 224, crop="pad")[0]
    assert torch.equal(preprocess_fast(a[None], 224, crop="pad")[0], exact)
    short = round(min(h, w) * 224 / max(h, w))
    bars = exact if h >= w else exact.transpose(-1, -2)  # bars as columns
    left, right = (224 - short) // 2, 224 - short - (224 - short) // 2
    black = normalised(torch.zeros(3, 1, 1)).expand(3, 224, left + right)
    assert torch.equal(torch.cat([bars[..., :left], bars[..., 224 - right:]], -1), black)
    if short:
        assert not torch.equal(bars[..., left:left + 1], black[..., :1])
