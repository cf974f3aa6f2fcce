"""Books to sections: ingestion (txt, EPUB), chapters, token estimates and sectioning.

Pure functions over text; the pipeline step :mod:`fantasy_kg.pipeline.sections` adds the file
system and the exact token counter around them.
"""
