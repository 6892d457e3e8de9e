"""The platform on Ray, on top of `facegen.core`: the self-augmented data build (Ray Data), training (Ray Train +
DeepSpeed / DDP), evaluation, serving (Ray Serve), the miniature world, and what the job entry points share."""
