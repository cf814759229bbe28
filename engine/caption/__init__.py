"""``wanlora caption``: a video language model writes the guide's recipe-style captions next to the clips."""
