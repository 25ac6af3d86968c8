"""Thin DRF views, serializers and URL routes. Views validate input, call one service or selector, and shape output."""
