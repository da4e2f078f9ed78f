"""The package version, in a module of its own: the package's __init__ and the modules that stamp
it into checkpoints and bundles read it here without importing the package facade."""

__version__ = "0.1.0"
