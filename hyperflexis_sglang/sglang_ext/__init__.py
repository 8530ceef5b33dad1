"""SGLang integration: plugin entry points, hooks, CPU platform, test model builder."""
