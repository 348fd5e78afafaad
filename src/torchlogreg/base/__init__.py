"""What every layer uses: the errors, the one writer, the training settings with the registry of datasets
they check, the choice of device, signals and the version. It imports nothing, so importing one module
loads only what that needs."""
