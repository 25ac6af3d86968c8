"""The human side of Sift: projects, taxonomies, items, the reviewer queue, annotations and audit."""
