"""Offline work: anchors, training, export, quantization, TensorRT builds, verification, benchmarks.

Benchmark modules (`anchorvla bench NAME`) expose add_arguments(parser) and main(args) -> (figures, ok);
they import heavy frameworks inside main, so listing the benchmarks stays cheap."""
