"""Files on disk: audio (the only soundfile user), JSON-lines manifests, corpus importers, atomic writes."""
