"""Test shim: on PYTHONPATH, makes `import dvc_s3` fail as if the plugin were not installed."""

raise ImportError("No module named 'dvc_s3' (hidden by the test shim)")
