"""No planted secret leaves the library (``ccr/_redact.py``; marker ``secrets``)."""
