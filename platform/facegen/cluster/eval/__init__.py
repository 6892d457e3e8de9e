"""Evaluation: the papers' protocol (face similarity, CLIP-T), on Ray, with a report."""
