"""A real ONNX Runtime model server speaking the Open Inference Protocol (KServe V2).

It is the embedded default target of the load-testing harness: all-MiniLM-L6-v2 sentence
embeddings and a small fraud-scoring classifier, each in fp32 and int8, with dynamic batching,
a bounded queue, Server-Timing attribution and Prometheus metrics.
"""

__version__ = "0.1.0"
