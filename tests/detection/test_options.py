"""`--nms iou=F,score=F[,max=N]`: parsing, defaults and one-line errors."""

from __future__ import annotations

import pytest

from toolkit.detection.options import NmsOptions, parse_nms_option
from toolkit.errors import UsageError


def test_parses_all_keys_in_any_order() -> None:
    opts = parse_nms_option(" score=0.3 , iou=0.5,max=20")
    assert opts == NmsOptions(iou_threshold=0.5, score_threshold=0.3, max_detections=20)


def test_missing_keys_take_defaults_and_max_follows_max_detections() -> None:
    assert parse_nms_option("iou=0.45") == NmsOptions(0.45, 0.25, 100)
    assert parse_nms_option("score=0.1", default_max_detections=7).max_detections == 7
    assert parse_nms_option("IOU=0.6").iou_threshold == 0.6


def test_round_trips_through_its_text_form() -> None:
    opts = NmsOptions(0.7, 0.05, 300)
    assert parse_nms_option(opts.to_option()) == opts


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty value"),
        ("iou=0.5,,score=0.2", "empty item"),
        ("iou", "not KEY=VALUE"),
        ("iou=", "not KEY=VALUE"),
        ("conf=0.3", "unknown key 'conf'"),
        ("iou=high", "is not a number"),
        ("iou=nan", "not a finite number"),
        ("iou=1.5", "iou must be in [0, 1]"),
        ("score=-0.1", "score must be in [0, 1]"),
        ("max=2.5", "is not an integer"),
        ("max=0", "max must be >= 1"),
        ("iou=0.4,iou=0.5", "iou given twice"),
    ],
)
def test_bad_input_is_a_usage_error_with_one_line(text: str, fragment: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_nms_option(text)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message
    assert info.value.exit_code == 2


def test_module_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = ("import sys, toolkit.detection.options; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
