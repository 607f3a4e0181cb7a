"""Guidance-scale (w) embedding: equal to diffusers' LCM pipeline, both w conventions, w lists."""
import math

import pytest
import torch

from student_teacher.schedulers.errors import InputError
from student_teacher.schedulers.guidance import guidance_embedding, parse_w, w_per_sample, w_rows


def diffusers_embedding(w, dim):
    from diffusers import LatentConsistencyModelPipeline
    return LatentConsistencyModelPipeline.get_guidance_scale_embedding(None, w, embedding_dim=dim)


@pytest.mark.parametrize("dim", [256, 255, 512])
def test_equals_diffusers_on_w_minus_one(dim):
    ws = [1.0, 2.5, 8.0, 9.0, 15.0, 2.1, 4.2, 8.1, 8.6, 16.7]  # the last ones are not exact in float32
    # what diffusers' LCM pipelines do: get_guidance_scale_embedding(torch.tensor(guidance_scale - 1))
    reference = torch.cat([diffusers_embedding(torch.tensor(w - 1).reshape(1), dim) for w in ws])
    torch.testing.assert_close(guidance_embedding(torch.tensor(ws, dtype=torch.float64), dim), reference, rtol=0,
                               atol=1e-6)
    torch.testing.assert_close(guidance_embedding(ws, dim), reference, rtol=0, atol=1e-6)


def test_original_lcm_convention_embeds_w_itself():
    w = torch.tensor([8.0])
    torch.testing.assert_close(guidance_embedding(w, 256, "original"), diffusers_embedding(w, 256), rtol=0, atol=1e-6)
    assert not torch.allclose(guidance_embedding(w, 256, "original"), guidance_embedding(w, 256))
    with pytest.raises(InputError, match="w_convention"):
        guidance_embedding(w, 256, "lcm")


def test_w_lists():
    assert parse_w("8") == [8.0] and parse_w(" 3, 5;7 ,9 ") == [3.0, 5.0, 7.0, 9.0] and parse_w("") == []
    with pytest.raises(InputError, match="w: 'high' is not a number"):
        parse_w("3, high")
    with pytest.raises(InputError, match="w: got nan"):
        parse_w("nan")

    for far in ("1e306", "-1", "51"):  # 1e306 * 1000 overflows to inf: the embedding would be NaN
        with pytest.raises(InputError, match="w: w = .* is outside 0..50"):
            parse_w(far)
    assert w_per_sample([3, 5, 7, 9], [0, 1, 2, 3, 4, 9]) == [3, 5, 7, 9, 3, 5]
    assert w_per_sample([3, 5], [7]) == w_per_sample([3, 5], [0, 7])[1:]  # a sample's w is its own


def test_rows_of_a_cfg_call():
    w = torch.tensor([3.0, 5.0])
    assert w_rows(w, 2).tolist() == [3, 5] and w_rows(w, 4).tolist() == [3, 5, 3, 5]  # cond then uncond
    with pytest.raises(InputError, match="w: 2 per-sample w values for a model call over 3 rows"):
        w_rows(w, 3)
    assert math.isclose(float(guidance_embedding(torch.tensor([1.0]), 8)[0, 4]), 1.0)  # w - 1 = 0: cos 0
