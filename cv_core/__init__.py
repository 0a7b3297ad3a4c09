"""Class Vector Studio: edit CLIP image classifiers class by class.

The library never imports the app (Streamlit). Entry points: ``cv_core.pipeline`` (use cases),
``python -m cv_core`` (the CLI).
"""
__version__ = "0.1.0"
