"""Protocol buffers and generated gRPC stubs (generated files are committed)."""
