"""The image of an image item: ``ItemImage``, the names of its derived files in the ``images`` storage.

An item has at most one image. The files are re-encodings (labeling/services/images/decode.py), never the bytes a
user sent; ``original_name`` is set only where the project keeps originals, and the original is never served.
The row is deleted with its item's hard deletion, and its files after that commits (labeling/services/images/).
"""

from __future__ import annotations

from django.db import models


class ItemImage(models.Model):
    item = models.OneToOneField("labeling.Item", on_delete=models.CASCADE, primary_key=True, related_name="image")
    project = models.ForeignKey("labeling.Project", on_delete=models.CASCADE, related_name="+")
    display_name = models.CharField(max_length=255, help_text="Storage name of the display-size re-encoding.")
    thumb_name = models.CharField(max_length=255, help_text="Storage name of the thumbnail.")
    original_name = models.CharField(max_length=255, blank=True, default="",
                                     help_text="Storage name of the original as sent; only if the project keeps them.")
    content_type = models.CharField(max_length=32, help_text="Of the display and thumbnail files.")
    source_name = models.CharField(max_length=255, help_text="The file's name in the upload (shown, never a path).")
    source_format = models.CharField(max_length=8)
    # sha256 of the bytes as sent: re-importing the same image changes nothing.
    source_sha256 = models.CharField(max_length=64)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    display_width = models.PositiveIntegerField()
    display_height = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"image of item {self.item_id}"

    def stored_names(self) -> list[str]:
        return [name for name in (self.display_name, self.thumb_name, self.original_name) if name]
