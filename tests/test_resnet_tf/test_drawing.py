"""``resnet_tf.plots.draw_boxes``, the one box drawer, and the two file
drawers built on it (``draw_detections``, ``draw_localizations``)."""

import numpy as np
from PIL import Image

from resnet_tf.plots import BOX_COLORS, draw_boxes

RED, GREEN = (230, 25, 75), (0, 200, 0)


def test_boxes_are_yxyx_pixels_outlined_in_their_colour_at_scale():
    image = np.zeros((20, 30, 3), np.uint8)
    image[0, 0] = 255
    out = np.asarray(draw_boxes(image, [[4, 10, 12, 26]], colors=[GREEN], scale=2))
    assert out.shape == (40, 60, 3)
    assert (out[0:2, 0:2] == 255).all()  # nearest-neighbour enlargement
    # (ymin 4, xmin 10, ymax 12, xmax 26) -> rows 8..24, columns 20..52 at scale 2.
    assert tuple(out[16, 20]) == GREEN and tuple(out[16, 52]) == GREEN  # left, right
    assert tuple(out[8, 36]) == GREEN and tuple(out[24, 36]) == GREEN  # top, bottom
    assert (out[12:21, 24:49] == 0).all()  # inside untouched
    outside = out.copy()
    outside[0:2, 0:2] = 0
    assert (outside[:7] == 0).all() and (outside[:, :19] == 0).all()  # no label, no spill
    # No colour given: the first of BOX_COLORS (red).
    plain = np.asarray(draw_boxes(image, [[4, 10, 12, 26]]))
    assert tuple(plain[8, 10]) == BOX_COLORS[0] == RED
    # No boxes: the image itself.
    assert (np.asarray(draw_boxes(image, [])) == image).all()


def test_labels_go_above_the_box_or_just_inside_it():
    image = np.zeros((60, 80, 3), np.uint8)
    box = [[30, 10, 55, 70]]
    above = np.asarray(draw_boxes(image, box, ["WWW"], [GREEN]))
    inside = np.asarray(draw_boxes(image, box, ["WWW"], [GREEN], label_inside=True))
    plain = np.asarray(draw_boxes(image, box, [""], [GREEN]))
    # Text is anti-aliased: look for its ink, not its exact colour.
    assert above[18:29].any() and not plain[:29].any()
    assert not inside[:29].any() and inside[33:45, 13:60].any()
    assert not plain[33:45, 13:60].any()
    # A box at the top edge keeps its label inside the image.
    top = np.asarray(draw_boxes(image, [[2, 10, 40, 70]], ["WWW"], [GREEN]))
    assert top[4:12, 13:60].any()  # below its outline (rows 2-3)


def _photo(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(np.full((48, 64, 3), 40, np.uint8)).save(path)
    return str(path)


def test_draw_detections_colours_each_class_and_skips_low_scores(tmp_path):
    from detection.evaluate import draw_detections

    row = {"boxes": [[4, 4, 20, 30], [24, 34, 44, 60], [5, 40, 15, 60]],
           "classes": [1, 7, 0], "names": ["a", "b", "c"], "scores": [0.9, 0.5, 0.1]}
    out = draw_detections(_photo(tmp_path), row, str(tmp_path / "d.png"), min_score=0.3)
    drawn = np.asarray(Image.open(out).convert("RGB"))
    assert drawn.shape == (48, 64, 3)
    assert tuple(drawn[12, 4]) == BOX_COLORS[1]  # class 1's left edge
    assert tuple(drawn[34, 34]) == BOX_COLORS[7 % len(BOX_COLORS)]
    assert (drawn[5:16, 40:61] == 40).all()  # score 0.1 < 0.3: not drawn
    # "a 0.90" just inside the box's top-left corner, nothing above the box.
    assert (drawn[0:4] == 40).all() and (drawn[6:16, 6:28] != 40).any()


def test_draw_localizations_colours_by_rank_and_draws_the_top_guesses(tmp_path):
    from localization.evaluate import draw_localizations

    preds = [{"name": "cat", "probability": 0.8, "box": [4, 4, 20, 30]},
             {"name": "dog", "probability": 0.1, "box": [24, 34, 44, 60]}]
    out = str(tmp_path / "sub" / "l.png")
    draw_localizations(_photo(tmp_path), {"predictions": preds}, out, top=1)
    one = np.asarray(Image.open(out).convert("RGB"))
    assert tuple(one[12, 4]) == BOX_COLORS[0] and (one[24:45, 34:61] == 40).all()
    draw_localizations(_photo(tmp_path), {"predictions": preds}, out, top=2)
    two = np.asarray(Image.open(out).convert("RGB"))
    assert tuple(two[34, 34]) == BOX_COLORS[1]
