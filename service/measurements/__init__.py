"""Measurements of the service (a real ``ncap serve``, its load, API fuzzing, chaos, the memory guard, Ray's scale
and the web page's screenshots): they drive the service layer, so they live in it, not in ``ncap.bench`` (the
benchmarks of the method). Each is run as ``python -m ncap.service.measurements.<name>`` and writes its results to
``bench/results/``."""
