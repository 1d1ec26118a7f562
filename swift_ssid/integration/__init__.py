"""The glue to ms-swift and evalscope: settings, templates, datasets, the sft metric, the evalscope benchmark,
the retriever over ms-swift's engine, checkpoint inspection and registration (:mod:`.register`).

``compat/`` holds one file per patch of a dependency's internals, each naming the version it patches.
"""
