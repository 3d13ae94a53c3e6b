"""Chart patterns: a synthetic generator, a rule-based labeler, a TCN classifier, its frozen
evaluation set, its promotion gate and a point-in-time scan. No Dagster, no MLflow here.

Importing this package (or any module in it except ``tcn``) does not import torch: the TCN
module is imported by whoever trains or serves it, inside the function that needs it.
"""

PATTERNS = (
    "head_and_shoulders",
    "inverse_head_and_shoulders",
    "double_top",
    "double_bottom",
    "triple_top",
    "triple_bottom",
    "ascending_triangle",
    "descending_triangle",
    "symmetrical_triangle",
    "rising_wedge",
    "falling_wedge",
    "bull_flag",
    "bear_flag",
    "pennant",
    "cup_and_handle",
    "rectangle",
)
NONE = "none"
CLASSES = PATTERNS + (NONE,)  # the model's output order
CLASS_INDEX = {c: i for i, c in enumerate(CLASSES)}

# what a pattern announces when it completes, by the textbook: +1 a rise, -1 a fall, 0 either way
# (the pennant's side is its pole's; triangles and rectangles break either way). The synthetic market
# completes its planted patterns this way; the gate asks whether detections say so in stored history.
DIRECTION = {
    "head_and_shoulders": -1, "inverse_head_and_shoulders": 1, "double_top": -1, "double_bottom": 1,
    "triple_top": -1, "triple_bottom": 1, "ascending_triangle": 1, "descending_triangle": -1,
    "symmetrical_triangle": 0, "rising_wedge": -1, "falling_wedge": 1, "bull_flag": 1, "bear_flag": -1,
    "pennant": 0, "cup_and_handle": 1, "rectangle": 0,
}
assert tuple(DIRECTION) == PATTERNS
