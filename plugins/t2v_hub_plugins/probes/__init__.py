"""Probe adapters per timm family."""
