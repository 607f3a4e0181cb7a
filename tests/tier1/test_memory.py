"""The rule Separate Student Weights follows before copying a UNet."""
import pytest

from student_teacher.schedulers.memory import GiB, HEADROOM_BYTES, gib, room_for_copy


def test_a_copy_that_leaves_the_headroom_fits():
    assert room_for_copy(2 * GiB, 2 * GiB + HEADROOM_BYTES)
    assert room_for_copy(5 * GiB, 24 * GiB)


def test_a_copy_that_eats_into_the_headroom_does_not():
    assert not room_for_copy(2 * GiB, 2 * GiB + HEADROOM_BYTES - 1)
    assert not room_for_copy(5 * GiB, 4 * GiB)
    assert not room_for_copy(1, 0, headroom_bytes=0)


def test_negative_sizes_are_refused():
    with pytest.raises(ValueError):
        room_for_copy(-1, GiB)


def test_gib_formats_for_messages():
    assert gib(int(1.5 * GiB)) == "1.5 GiB"


def test_on_a_gpu_a_copy_pays_only_if_student_and_teacher_both_stay_loaded():
    from student_teacher.schedulers.memory import copy_pays_off
    assert copy_pays_off(2 * GiB, 24 * GiB)          # SD1.5 on a 24 GB card: both stay
    assert copy_pays_off(5 * GiB, 24 * GiB)          # SDXL
    assert not copy_pays_off(24 * GiB, 40 * GiB)     # FLUX.1 bf16 on a 48 GB card (40 GiB free)
    assert not copy_pays_off(41 * GiB, 80 * GiB)     # Qwen-Image bf16 on an 80 GB card
