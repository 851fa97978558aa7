"""Localization: scenes and maps, one step per module (pairs, retrieval, triangulation, reconstruction,
localize, recall), the pipeline that chains them, the demo scene, figures and reports."""
