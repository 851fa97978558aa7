"""Training the fused model: the trainer and its stages, data, losses (looked up by name), the SFD2 teacher,
the distillation adapter, ablations, and learning stability from a reference map."""
