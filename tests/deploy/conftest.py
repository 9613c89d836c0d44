# crd_validate.py runs inside .venv-tools (it imports the CRD models installed only there): not a test module.
collect_ignore = ["crd_validate.py"]
