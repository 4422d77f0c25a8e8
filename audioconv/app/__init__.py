"""Applications built on the library: the demo, its corpus, the offline HTML report."""
