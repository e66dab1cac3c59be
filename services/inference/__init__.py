"""The BentoML inference service of driftloop's production model."""
