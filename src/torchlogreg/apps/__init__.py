"""The front ends: batch prediction, the web demo and the playground (with their `static/` files), ONNX
export, reports, the tutorials' demos and the command line. It imports nothing, so importing one module
loads only what that needs."""
