"""The toolkit's version, in a module of its own: the manifest and the device probe record it
without importing the package face."""

__version__ = "0.1.0"
