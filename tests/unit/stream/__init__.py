"""SSE decoding, stream events, ``client.stream()`` (``ccr/_sse.py``, ``_streaming.py``, ``_stream.py``)."""
