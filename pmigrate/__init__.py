"""pmigrate: move a live Plik deployment between metadata and data backends."""

__version__ = "0.1.0"
