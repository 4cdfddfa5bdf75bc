"""Application and control protocols spoken over streams."""
