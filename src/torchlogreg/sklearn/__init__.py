"""The scikit-learn estimator and its full-batch solvers. It imports nothing, so importing one module
loads only what that needs."""
