"""Apps that worker processes load (``stackshift worker bench.apps.stackshift_app:app``)."""
