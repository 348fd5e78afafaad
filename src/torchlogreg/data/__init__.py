"""Data in and out: class names, pictures, the readers of input files, dataset folders, datasets in
memory, the defaults that follow from the data, batch sources and conversion. It imports nothing, so
importing one module loads only what that needs."""
