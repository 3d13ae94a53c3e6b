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
