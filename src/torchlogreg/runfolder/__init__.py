"""A run folder's format: its files written and read (model, weights, history, metrics, checkpoints) and
an interrupted training's state; reading a run needs no training module. It imports nothing, so importing
one module loads only what that needs."""
