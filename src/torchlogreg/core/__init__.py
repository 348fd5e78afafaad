"""The model and what it minimises: logistic regression, the objective, the optimizers, when minimising
stops, and the fused C kernel (`_fused.c`). It imports nothing, so importing one module loads only what
that needs."""
