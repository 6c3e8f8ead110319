"""Operational tools that check a running CCR from the outside: ``verify`` and ``loadtest``.

They are products built on ccr-client, not part of it: everything here goes through the
public API of :mod:`ccr` (the same client an agent uses), never through its private
modules, and a unit test holds them to that. The ``ccr-client verify`` and
``ccr-client loadtest`` commands are thin argparse layers over these packages:

* :mod:`ccr.ops.verify`: a fixed list of named checks against a live CCR, returned as
  data, and its text, JSON and JUnit renderings;
* :mod:`ccr.ops.loadtest`: load plans, the runner that drives ``route_request``, the
  report with thresholds, and the comparison with an archived baseline.

Nothing is imported here, so ``import ccr.ops.verify`` does not pay for the load tester.
"""
