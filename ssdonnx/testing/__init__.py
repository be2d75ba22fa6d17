"""The seed's algorithms as loops (``reference``): the oracle the tests hold the
vectorised code against, and the benchmarks' baseline. Nothing in the library calls it."""
