"""Scaling controller and provisioners (local SGLang processes)."""
