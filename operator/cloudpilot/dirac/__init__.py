"""CloudPilot as a DIRAC pilot factory that speaks DiracX.

* :mod:`.registration`: which pilots to register in DiracX and which statuses to send (pure).
* :mod:`.vanished`: which pilots to end whose VM vanished while no operator watched (pure).
* :mod:`.demand`: waiting jobs to a desired pilot count, bounded and smoothed (pure).
* :mod:`.client`: the DiracX REST adapter (aiohttp; never the heavy diracx-client package).
* :mod:`.link`: the per-pool state between cycles, concurrency bounds and back-off: what the
  reconciler calls.

Nothing here may stop VM management: every DiracX problem ends as a status field and a
retry, never as an exception out of the reconciler.
"""
