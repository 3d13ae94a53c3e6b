"""The knowledge base: period summaries and notes (``documents``), embeddings (``embed``), the FAISS index
(``index``) and search (``search``). Nothing here is imported by the code location; sentence-transformers
and faiss load inside the functions that use them."""
