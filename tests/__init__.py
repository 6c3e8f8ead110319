"""The test suites: unit (``tests/unit``), integration (a live CCR and real Redis), chaos, load."""
