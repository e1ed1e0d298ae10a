"""A/B experiments: assignment, variant routing, exposure logging, attribution, analysis."""
