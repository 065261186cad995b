"""Flavours: one runtime module each, behind ``nxc.flavours.base.Runtime``."""

from nxc.flavours.base import DEFAULT_FLAVOUR, FLAVOURS, Runtime, StartOptions, get_runtime

__all__ = ["DEFAULT_FLAVOUR", "FLAVOURS", "Runtime", "StartOptions", "get_runtime"]
