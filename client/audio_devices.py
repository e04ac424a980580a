"""Audio capture devices, through `soundcard`.

Why soundcard and not sounddevice/PortAudio: on Linux soundcard talks to PulseAudio (and
PipeWire's PulseAudio server) itself, so each input *and each output's monitor* is a device
it lists and opens by name, two at once in one process; Debian's PortAudio 19.6 reaches
PulseAudio only through ALSA's `pulse` plugin, where a monitor is chosen by an environment
variable for the whole process and never listed. soundcard also records WASAPI loopback
(what an output plays) on Windows. On macOS it records inputs only: system audio needs a
loopback driver (BlackHole, Loopback), which then appears as an input.

soundcard is imported when a device is first used: replaying files needs no sound server.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np

CAPTURE_RATE = 48000
PRESENCE_CHECK_S = 2.0


class DeviceError(Exception):
    """A device that cannot be found or opened (said in one line)."""


class DeviceLost(DeviceError):
    """A device that stopped delivering audio while it was being recorded."""


@dataclass(frozen=True)
class AudioDevice:
    id: str  # what the sound server calls it (PulseAudio: the source name)
    name: str  # what people see
    loopback: bool  # records what an output plays


def _soundcard() -> Any:
    try:
        import soundcard
    except (ImportError, OSError, RuntimeError, AssertionError) as exc:
        # On Linux soundcard loads libpulse and connects at import.
        raise DeviceError(f"no sound server to record from ({type(exc).__name__}: {exc})") from None
    return soundcard


def list_devices() -> list[AudioDevice]:
    sc = _soundcard()
    return [
        AudioDevice(str(m.id), str(m.name), bool(m.isloopback))
        for m in sc.all_microphones(include_loopback=True)
    ]


def _match(spec: str, devices: list[AudioDevice]) -> AudioDevice | None:
    for exact in (lambda d: d.id == spec, lambda d: d.name == spec):
        found = [d for d in devices if exact(d)]
        if found:
            return found[0]
    needle = spec.lower()
    found = [d for d in devices if needle in d.id.lower() or needle in d.name.lower()]
    return found[0] if len(found) == 1 else None


def find_microphone(spec: str | None) -> AudioDevice:
    """`spec`: an id, a name or a unique part of one (any input, a monitor too); None: the
    default input."""
    devices = list_devices()
    if spec is None:
        default = _soundcard().default_microphone()
        spec = str(default.id)
    found = _match(spec, devices)
    if found is None:
        raise DeviceError(f"no input device matches {spec!r} (see --list-devices)")
    return found


def find_loopback(spec: str | None) -> AudioDevice:
    """`spec`: a loopback's id or name, an output's (its loopback is taken), or an input
    that carries system audio; None: the loopback of the default output."""
    sc = _soundcard()
    loopbacks = [d for d in list_devices() if d.loopback]
    speakers = {str(s.id): str(s.name) for s in sc.all_speakers()}
    explicit_default = spec is None
    if spec is None:
        spec = str(sc.default_speaker().id)
    found = _match(spec, loopbacks)
    if found is None and (spec in speakers or spec in speakers.values()):
        speaker_id = spec if spec in speakers else next(i for i, n in speakers.items() if n == spec)
        # PulseAudio names an output's monitor "<sink>.monitor", "Monitor of <name>";
        # WASAPI gives a loopback the output's own id.
        found = _match(speaker_id + ".monitor", loopbacks) or _match(speaker_id, loopbacks)
    if found is None and not explicit_default:
        # macOS has no loopback of its own: a loopback driver (BlackHole) is an input.
        found = _match(spec, [d for d in list_devices() if not d.loopback])
    if found is None:
        raise DeviceError(f"no output or loopback device matches {spec!r} (see --list-devices)")
    return found


class DeviceCapture:
    """Records one device as 48 kHz mono int16 blocks. `read` waits for the next block; it
    raises DeviceLost when the device fails or delivers nothing for `silence_limit_s` (on
    some failures soundcard's own read waits forever, and the recorder must not hang)."""

    def __init__(
        self, device: AudioDevice, block_frames: int = 4800, silence_limit_s: float = 5.0
    ) -> None:
        self.device = device
        self.block_frames = block_frames
        self.silence_limit_s = silence_limit_s
        self._recorder: Any = None
        self._blocks: queue.Queue[np.ndarray | BaseException] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._checked_at = time.monotonic()

    def __enter__(self) -> DeviceCapture:
        sc = _soundcard()
        try:
            microphone = sc.get_microphone(self.device.id, include_loopback=True)
            self._recorder = microphone.recorder(
                samplerate=CAPTURE_RATE, channels=1, blocksize=self.block_frames
            )
            self._recorder.__enter__()
        except (IndexError, RuntimeError) as exc:
            raise DeviceError(f"cannot open {self.device.name!r}: {exc}") from None
        self._thread = threading.Thread(
            target=self._pump, daemon=True, name=f"capture-{self.device.id}"
        )
        self._thread.start()
        return self

    def _pump(self) -> None:
        while not self._stop.is_set():
            try:
                self._blocks.put(self._recorder.record(numframes=self.block_frames))
            except BaseException as exc:  # noqa: BLE001 - handed to the reading thread
                self._blocks.put(exc)
                return

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._recorder is not None and (self._thread is None or not self._thread.is_alive()):
            try:
                self._recorder.__exit__(None, None, None)
            except RuntimeError:
                pass  # the device is gone already

    @property
    def latency_s(self) -> float:
        try:
            return float(self._recorder.latency)
        except (AttributeError, RuntimeError, NotImplementedError):
            return 0.0  # only PulseAudio reports it

    def read(self) -> np.ndarray:
        if time.monotonic() - self._checked_at > PRESENCE_CHECK_S:
            self._checked_at = time.monotonic()
            # A sound server may move a stream whose device vanished to another device
            # (PulseAudio does) and it goes on delivering: ask whether the device is there.
            if self.device.id not in {d.id for d in list_devices()}:
                raise DeviceLost(f"{self.device.name!r} disappeared")
        try:
            block = self._blocks.get(timeout=self.silence_limit_s)
        except queue.Empty:
            raise DeviceLost(
                f"{self.device.name!r} delivered nothing for {self.silence_limit_s:g} s"
            ) from None
        if isinstance(block, BaseException):
            raise DeviceLost(f"{self.device.name!r} stopped: {block}")
        pcm = np.clip(block.reshape(-1), -1.0, 1.0)
        return (pcm * 32767).astype(np.int16)
