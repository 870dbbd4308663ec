"""Test shim: on PYTHONPATH, makes `import dvc_ssh` fail as if the plugin were not installed."""

raise ImportError("No module named 'dvc_ssh' (hidden by the test shim)")
