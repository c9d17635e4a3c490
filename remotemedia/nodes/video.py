"""Built-in video node: resize and pixel-format conversion through FFmpeg's swscale."""

from __future__ import annotations

from typing import Any

from ..frames import VIDEO_FORMATS, VideoFrame
from ..node import Node
from ._checks import positive_int

__all__ = ["VideoTransformNode"]


class VideoTransformNode(Node):
    """
    Resize video frames and/or convert their pixel format.

    ``VideoTransformNode(format="gray")`` makes grayscale frames;
    ``VideoTransformNode(width=320, height=240)`` resizes. The work is done by
    FFmpeg's swscale (PyAV ``VideoFrame.reformat``), off the event loop.
    """

    def __init__(
        self,
        width: int | None = None,
        height: int | None = None,
        format: str | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        positive_int("width", width, optional=True)
        positive_int("height", height, optional=True)
        if format is not None and format not in VIDEO_FORMATS:
            raise ValueError(
                f"unsupported pixel format {format!r}; use one of {', '.join(VIDEO_FORMATS)}"
            )
        #: Output width in pixels; ``None`` keeps the input's.
        self.width = width
        #: Output height in pixels; ``None`` keeps the input's.
        self.height = height
        #: Output pixel format; ``None`` keeps the input's.
        self.format = format

    def process(self, data: Any) -> VideoFrame:
        if not isinstance(data, VideoFrame):
            raise TypeError(
                f"{type(self).__name__} {self.name!r} takes VideoFrame inputs, "
                f"not {type(data).__name__}"
            )
        target = self.format or data.format
        converted = data.to_av().reformat(
            width=self.width or data.width,
            height=self.height or data.height,
            format=target,
        )
        return VideoFrame(converted.to_ndarray(), target, data.timestamp)
