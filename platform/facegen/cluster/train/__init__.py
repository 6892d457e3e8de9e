"""Training: typed config, training data from build_data, tasks (M², FaceCLIP), the Ray Train loop, run + export."""
