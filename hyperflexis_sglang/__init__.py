"""HyperFlexis for SGLang: multi-SLO scheduling, routing, scaling and weight loading."""
__version__ = "0.1.0"
