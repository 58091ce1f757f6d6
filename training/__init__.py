"""Labelled folders -> trained, evaluated model artifacts; synthetic data for tests and the demo."""
