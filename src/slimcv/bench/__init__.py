"""Cost of a model: parameters, MACs, file size, latency per runtime, throughput and peak memory (`slimcv.bench`)."""
