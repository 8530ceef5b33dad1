"""Discrete-event simulator running the core policies on simulated SGLang replicas."""
