"""Put this folder first on PYTHONPATH to make a process see no NVIDIA driver (``import pynvml`` fails, so
``engine.config.gpu.detect_gpus()`` finds no GPU): the daemon's checker processes then judge a job as a CPU-only
machine would, on any test machine."""

raise ImportError("pynvml hidden by tests/daemon/no_gpu: this process sees no NVIDIA driver")
