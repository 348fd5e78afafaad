"""Training: the one engine, metrics, torch.distributed, a config turned into a run, its TensorBoard
callback, the run's life, live training and sweeps. It imports nothing, so importing one module loads
only what that needs."""
