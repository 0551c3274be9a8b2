"""The embedding model: loading it at the precision the CPU runs best (embedding, cpu), its
ONNX/OpenVINO runtime (onnx_encoder, pooling), the stand-in encoder for tests, and embedding on a
Ray cluster (ray_embed)."""
