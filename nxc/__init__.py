"""nxc: compose reproducible distributed environments with Nix and run experiments on them."""

__version__ = "0.1.0"
