"""Video and audio inputs in the form each provider takes them (its ``media`` entry).

A provider entry says, per media input key, how it takes it: ``url`` (the URL as it is, after
presigning), ``frames`` (a video as a few frames sampled evenly over the clip, sent as JPEG
images), ``data`` (the bytes inline: audio as base64 WAV or MP3). Frames are decoded with PyAV,
which ships its own ffmpeg. Media is fetched only when a provider needs its bytes: from a
presigned or plain ``http(s)`` URL, ``file://`` or a local path.
"""

from __future__ import annotations

import base64
import io
import posixpath
import urllib.request
from collections.abc import Mapping, Sequence
from urllib.parse import urlparse

from cluster_assets.labeling.inputs import TEXT, Part

URL, FRAMES, DATA = "url", "frames", "data"
AUDIO_DATA = "input_audio"  # a prepared part: value "<format>;base64,<data>"
AUDIO_FORMATS = {".wav": "wav", ".mp3": "mp3"}
FRAMES_PER_VIDEO = 4
FRAME_MAX_SIDE = 512
MAX_MEDIA_BYTES = 64 * 1024 * 1024


class MediaError(ValueError):
    """A media input that cannot be sent (unreadable, not a video, an audio format the provider does not take)."""


def fetch(url: str, timeout: float = 30.0) -> bytes:
    parsed = urlparse(url)
    if parsed.scheme in ("http", "https"):
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - http(s) only
            data = response.read(MAX_MEDIA_BYTES + 1)
    elif parsed.scheme in ("", "file"):
        with open(parsed.path if parsed.scheme == "file" else url, "rb") as handle:
            data = handle.read(MAX_MEDIA_BYTES + 1)
    else:
        raise MediaError(f"cannot fetch a {parsed.scheme}:// media URL")
    if len(data) > MAX_MEDIA_BYTES:
        raise MediaError(f"media larger than {MAX_MEDIA_BYTES // (1024 * 1024)} MB")
    return data


def video_frames(data: bytes, count: int = FRAMES_PER_VIDEO, max_side: int = FRAME_MAX_SIDE) -> list[bytes]:
    """``count`` frames spread evenly over the clip, as JPEG bytes no larger than ``max_side``."""
    import av

    def frames_of(picks: set[int] | None):
        with av.open(io.BytesIO(data)) as container:
            if not container.streams.video:
                raise MediaError("no video stream")
            for index, frame in enumerate(container.decode(video=0)):
                if picks is None or index in picks:
                    yield index, frame

    def recorded_frames() -> int:  # the container's own count, 0 when it records none
        with av.open(io.BytesIO(data)) as container:
            return container.streams.video[0].frames if container.streams.video else 0

    try:
        # decode to count only when the container does not say: a long clip holds one frame at a time
        total = recorded_frames() or sum(1 for _ in frames_of(None))
        if not total:
            raise MediaError("the video has no frames")
        picks = {round(i * (total - 1) / max(count - 1, 1)) for i in range(min(count, total))}
        frames = [frame.to_image() for _, frame in frames_of(picks)]
    except av.FFmpegError as exc:
        raise MediaError(f"not a readable video ({exc})") from None
    out = []
    for image in frames:
        image = image.convert("RGB")
        image.thumbnail((max_side, max_side))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
        out.append(buffer.getvalue())
    return out


def audio_format(url: str) -> str:
    ext = posixpath.splitext(urlparse(url).path)[1].lower()
    if ext not in AUDIO_FORMATS:
        raise MediaError(f"audio {ext or 'without an extension'}: only {', '.join(AUDIO_FORMATS)} can be sent")
    return AUDIO_FORMATS[ext]


def prepare(parts: Sequence[Part], media: Mapping[str, str]) -> list[Part]:
    """Parts as the provider takes them (``media``: input key -> url | frames | data)."""
    out: list[Part] = []
    for part in parts:
        how = media.get(part.kind, URL) if part.kind != TEXT else None
        if how == FRAMES:
            for frame in video_frames(fetch(part.value)):
                out.append(Part("image_url", "data:image/jpeg;base64," + base64.b64encode(frame).decode()))
        elif how == DATA:
            fmt = audio_format(part.value)
            out.append(Part(AUDIO_DATA, f"{fmt};base64," + base64.b64encode(fetch(part.value)).decode()))
        else:
            out.append(part)
    return out


def split_audio(value: str) -> tuple[str, str]:
    fmt, _, data = value.partition(";base64,")
    return fmt, data
