"""The miniature world (`make learn`): people, base models trained on them, and the experiment that shows training
makes the person appear (docs/learn.md)."""
