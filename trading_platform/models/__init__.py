"""Models: labels, walk-forward splits, training, evaluation, the promotion gate. No Dagster here."""
