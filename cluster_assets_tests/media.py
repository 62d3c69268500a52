"""Small media made in the test: a few video frames encoded with PyAV, a tone written as WAV."""

from __future__ import annotations

import wave

import numpy as np


def write_video(path, frames: int = 12, size: int = 32) -> str:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=6)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            image = np.full((size, size, 3), i * 20, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


def write_tone(path, seconds: float = 0.2, rate: int = 8000) -> str:
    samples = (np.sin(2 * np.pi * 440 * np.arange(int(seconds * rate)) / rate) * 20000).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return str(path)
