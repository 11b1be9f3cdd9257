from slimcv.registry import Registry

DATASETS: Registry = Registry("dataset")
