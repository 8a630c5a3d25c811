"""API-format ComfyUI graphs and their parameter manifests (data only)."""
