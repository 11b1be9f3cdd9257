from slimcv.registry import Registry

MODELS: Registry = Registry("model")
