"""The search service: one query in, ranked images out; the layer above ``integration``.

* :mod:`~swift_ssid.service.engine`: the model and trie loaded once (:class:`SearchEngine`), answering texts with
  the in-process :class:`~swift_ssid.integration.retrieval.Retriever`, so results equal ``swift-ssid retrieve``;
* :mod:`~swift_ssid.service.batching`: concurrent requests gathered into engine batches (one worker thread);
* :mod:`~swift_ssid.service.images`: thumbnails of the images the index names, and nothing else;
* :mod:`~swift_ssid.service.app`: the FastAPI app (``POST /search``, ``GET /health``, ``GET /images/{n}``, the
  search page ``page.html``); HTTP stays in this module and never reaches the engine code.

``swift-ssid search`` and ``swift-ssid serve`` (``cli/``) start them.
"""
