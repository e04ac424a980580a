"""`rollscribe record`: the desktop recorder.

Records the microphone (`--mic`) and what the computer plays (`--system`, an output's
loopback) live, or replays files (`--track NAME=FILE`). Each track is encoded to Ogg Opus
in rolling segments as it is captured (never a WAV of the meeting), closed segments wait
in a bounded spool folder and are uploaded with tuspy as soon as they close (resuming after
network loss with backoff); a segment is deleted only once the server has every byte. At
the end (input over, Ctrl-C or SIGTERM) the open segments are closed, the meeting is
finalized with each track's last seq, and with `--wait` the transcript is printed.

Crash-safe: the spool's state is written atomically after every change. Run again with the
same `--spool` after a crash: closed segments are uploaded into the same meeting, and
recording continues it (seq and meeting time carry on; the outage is a gap), or with
`--finalize-only` the meeting is finalized. The segment open at the crash is lost (at most
`--segment-seconds` of audio per track).
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import requests

from client.audio_devices import (
    CAPTURE_RATE,
    DeviceCapture,
    DeviceError,
    DeviceLost,
    find_loopback,
    find_microphone,
    list_devices,
)
from client.spool import SegmentState, Spool, SpoolState, TrackState
from client.spool_uploader import NETWORK_ERRORS, SpoolUploader, refusal
from client.status_line import StatusLine, clock
from client.track_recorder import TrackRecorder
from codec.segmenter import ENCODE_RATE, iter_pcm

LAG_POLL_S = 5.0


class Recorder:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.spool = Spool(Path(args.spool), args.spool_max_bytes)
        self.server = args.server.rstrip("/")
        self.status = StatusLine()
        self.lock = threading.Lock()
        self.stop = threading.Event()  # Ctrl-C / SIGTERM: close the segments and finish
        self.recorders: dict[str, TrackRecorder] = {}
        self.state = self._load_or_start()

    # ---- the spool and the meeting ------------------------------------------------------

    def _requested_tracks(self) -> dict[str, TrackState]:
        tracks = {
            name: TrackState(file=str(Path(f).resolve()))
            for name, f in (t.split("=", 1) for t in self.args.track)
        }
        if self.args.mic is not None:
            tracks["mic"] = TrackState(device=find_microphone(self.args.mic or None).id)
        if self.args.system is not None:
            tracks["system"] = TrackState(device=find_loopback(self.args.system or None).id)
        return tracks

    def _load_or_start(self) -> SpoolState:
        state = self.spool.load()
        requested = self._requested_tracks()
        if state is None:
            if not requested:
                raise SystemExit("rollscribe record: nothing to record (--mic, --system, --track)")
            state = SpoolState(server=self.server, segment_seconds=self.args.segment_seconds)
            state.tracks = requested
        elif requested and set(requested) != set(state.tracks):
            raise SystemExit(
                f"rollscribe record: the spool records tracks {sorted(state.tracks)}, "
                f"not {sorted(requested)}"
            )
        for track in state.tracks.values():
            if track.device is not None:
                track.finished = False  # a device is recorded again by every run
        for part in sorted(self.spool.folder.glob("*.part")):
            # The segment open when the last run died: its Ogg stream has no end.
            self.status.say(
                f"the segment being recorded when the last run stopped is lost "
                f"({part.stat().st_size} bytes, at most {state.segment_seconds:g} s): {part.name}"
            )
            part.unlink()
        if state.title is None:
            state.title = self.args.title
        if state.language is None:
            state.language = self.args.language
        self.spool.save(state)
        self.uploader = SpoolUploader(
            self.spool,
            state,
            self.lock,
            say=self.status.say,
            note=self._note,
            api_key=self.args.api_key,
            on_uploaded=self._uploaded,
        )
        self.uploader.ensure_meeting({"tracks": sorted(state.tracks)})
        print(state.meeting_id, flush=True)
        return state

    def _note(self, text: str) -> None:
        self.status.status.note = text

    def _uploaded(self, _segment: SegmentState) -> None:
        self.status.status.uploaded += 1

    def save(self) -> None:
        self.uploader.save()

    # ---- recording --------------------------------------------------------------------

    def _segment_closed(self, name: str, seq: int, start_ms: int, path: Path, frames: int) -> None:
        track = self.state.tracks[name]
        with self.lock:
            self.state.segments.append(
                SegmentState(
                    track=name, seq=seq, start_ms=start_ms, path=str(path), closed_at=time.time()
                )
            )
            track.next_seq = seq + 1
            track.samples_done += frames
            self.spool.save(self.state)
        self.status.status.spooled += 1
        self.uploader.wake.set()

    def _recorder(self, name: str) -> TrackRecorder:
        recorder = TrackRecorder(
            name,
            self.state.tracks[name],
            self.spool,
            self.state.segment_seconds,
            self._segment_closed,
        )
        self.recorders[name] = recorder
        return recorder

    def record(self) -> None:
        """Record every unfinished track until its input ends or `stop` is set."""
        threads = [
            threading.Thread(target=self._record_track, args=(name,), name=f"record-{name}")
            for name, track in self.state.tracks.items()
            if not track.finished
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _record_track(self, name: str) -> None:
        track = self.state.tracks[name]
        recorder = self._recorder(name)
        try:
            if track.device is not None:
                self._capture(recorder, track.device)
            else:
                self._replay(recorder, track)
        except DeviceLost as exc:
            at = clock(recorder.position / CAPTURE_RATE)
            self.status.say(
                f"{name}: {exc} at {at} into its recording; what was recorded is kept and "
                "uploaded, the other tracks go on"
            )
        finally:
            recorder.close_segment()
            track.finished = True
            self.save()
            recorder.level = -120.0

    def _capture(self, recorder: TrackRecorder, device_id: str) -> None:
        device = next((d for d in list_devices() if d.id == device_id), None)
        if device is None:
            raise DeviceLost(f"device {device_id!r} is not there")
        with DeviceCapture(device) as capture:
            block = capture.read()
            # Meeting time from the wall clock once, at this run's first block (so an outage
            # between runs is a gap); from counted frames after that.
            first_frame = time.time() - len(block) / CAPTURE_RATE - capture.latency_s
            recorder.begin((first_frame - self.state.started_at) * 1000)
            self.status.say(f"{recorder.name}: recording {device.name!r}")
            while True:
                self._keep(recorder, block, live=True)
                if self.stop.is_set():
                    return
                block = capture.read()

    def _replay(self, recorder: TrackRecorder, track: TrackState) -> None:
        assert track.file is not None
        recorder.begin(0.0, position=track.samples_done)
        started = time.monotonic()
        played = 0.0
        for block in _pcm_after(track.file, track.samples_done):
            self._keep(recorder, block, live=False)
            played += len(block) / ENCODE_RATE
            if self.args.speed:
                time.sleep(max(0.0, started + played / self.args.speed - time.monotonic()))
            if self.stop.is_set():
                return

    def _keep(self, recorder: TrackRecorder, block: np.ndarray, live: bool) -> None:
        """Encode a block, unless the spool is full: then a live input's audio is dropped
        (said, counted, and a gap on the server); a file waits."""
        if recorder.open_frames == 0 and self.spool.full():
            if live:
                if recorder.dropped_frames == 0:
                    self.status.say(
                        f"spool full ({self.spool.used_bytes()} bytes >= --spool-max-bytes): "
                        f"{recorder.name} audio is not recorded until uploads free space"
                    )
                recorder.skip(len(block))
                self.status.status.note = (
                    f"spool full: {recorder.dropped_frames / CAPTURE_RATE:.0f} s of "
                    f"{recorder.name} not recorded"
                )
                return
            self.status.say(
                f"spool full ({self.spool.used_bytes()} bytes): recording waits for uploads; "
                "no audio is dropped"
            )
            while self.spool.full() and not self.stop.is_set():
                time.sleep(0.5)
        if recorder.dropped_frames and live and recorder.open_frames == 0:
            self.status.say(
                f"{recorder.name}: recording again; {recorder.dropped_frames / CAPTURE_RATE:.1f} s "
                "were not recorded (a gap in the transcript)"
            )
            recorder.dropped_frames = 0
            self.status.status.note = ""
        recorder.write(block)

    # ---- the status line ----------------------------------------------------------------

    def _show_status(self, running: threading.Event) -> None:
        started = time.monotonic()
        polled = 0.0
        while running.is_set():
            status = self.status.status
            status.elapsed_s = time.monotonic() - started
            status.levels = {
                name: self.recorders[name].level if name in self.recorders else -120.0
                for name in self.state.tracks
            }
            if time.monotonic() - polled > LAG_POLL_S:
                polled = time.monotonic()
                status.lag_s = self._lag_s()
            self.status.show()
            time.sleep(0.25)

    def _lag_s(self) -> float | None:
        try:
            r = self.uploader.session.get(
                f"{self.server}/meetings/{self.state.meeting_id}", timeout=2
            )
            return float(r.json()["progress"]["lag_audio_s"]) if r.ok else None
        except (*NETWORK_ERRORS, ValueError, KeyError, TypeError):
            return None

    # ---- the end ------------------------------------------------------------------------

    def finalize(self) -> None:
        self.uploader.finalize(
            {name: t.next_seq - 1 for name, t in self.state.tracks.items() if t.next_seq}
        )

    def wait_and_write(self) -> None:
        path = f"/meetings/{self.state.meeting_id}"
        while (current := self.uploader.get_json(path))["state"] not in ("complete", "failed"):
            self.status.status.note = f"meeting {current['state']}"
            self.status.show()
            time.sleep(0.5)
        text = self.uploader.get_text(f"{path}/transcript", {"format": self.args.format})
        if self.args.output:
            Path(self.args.output).write_text(text)
        else:
            print(text, end="", flush=True)

    def _stop_on_signals(self) -> None:
        def handle(signum: int, _frame: object) -> None:
            if self.stop.is_set():  # a second Ctrl-C: leave now; the spool keeps the rest
                raise KeyboardInterrupt
            self.status.say(
                f"{signal.Signals(signum).name}: closing the open segments and finalizing "
                "(again to leave at once; run with the same --spool to finish later)"
            )
            self.stop.set()

        signal.signal(signal.SIGINT, handle)
        signal.signal(signal.SIGTERM, handle)

    def run(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._stop_on_signals()
        running = threading.Event()
        running.set()
        shown = threading.Thread(target=self._show_status, args=(running,), daemon=True)
        shown.start()
        recording = threading.Thread(
            target=(lambda: None) if self.args.finalize_only else self.record, name="record"
        )
        recording.start()
        try:
            self.uploader.run(more_to_come=recording.is_alive)
            recording.join()
            if not self.state.finalized:
                self.finalize()
            if self.args.wait:
                self.wait_and_write()
        finally:
            running.clear()
            self.status.end()


def _pcm_after(file: str, skip: int) -> Iterator[np.ndarray]:
    for block in iter_pcm(file, ENCODE_RATE, block_seconds=0.1):
        if skip >= len(block):
            skip -= len(block)
            continue
        yield block[skip:]
        skip = 0


def add_record_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", help="e.g. http://127.0.0.1:8080")
    parser.add_argument(
        "--mic",
        nargs="?",
        const="",
        metavar="DEVICE",
        help="record a microphone as track 'mic' (default input, or a name from --list-devices)",
    )
    parser.add_argument(
        "--system",
        nargs="?",
        const="",
        metavar="DEVICE",
        help="record what the computer plays as track 'system' (the default output's "
        "loopback, or an output or loopback from --list-devices)",
    )
    parser.add_argument(
        "--list-devices", action="store_true", help="print the inputs and loopbacks and exit"
    )
    parser.add_argument(
        "--track",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="replay a file as a track (repeat for several tracks)",
    )
    parser.add_argument("--title", help="the meeting's title")
    parser.add_argument(
        "--language",
        help="the language spoken: auto (detected per track) or a code such as en, de, es "
        "(default: the server's)",
    )
    parser.add_argument(
        "--segment-seconds",
        type=float,
        default=30.0,
        help="length of each uploaded segment; also the most a crash can lose per track",
    )
    parser.add_argument("--spool", default="./rollscribe-spool")
    parser.add_argument(
        "--spool-max-bytes",
        type=int,
        default=512 * 1024 * 1024,
        help="cap on segments waiting for upload; at the cap live audio is not recorded "
        "(said on screen; a gap in the transcript) and files wait",
    )
    parser.add_argument(
        "--finalize-only",
        action="store_true",
        help="with an existing --spool: upload what it holds and finalize, record nothing",
    )
    parser.add_argument(
        "--realtime",
        dest="speed",
        action="store_const",
        const=1.0,
        help="play files at real-time pace (as if recording live)",
    )
    parser.add_argument(
        "--speed",
        type=float,
        help="play files at this multiple of real time (benchmarks: a 30 min meeting in 5)",
    )
    parser.add_argument("--wait", action="store_true", help="wait for the final transcript")
    parser.add_argument("--format", choices=["txt", "srt", "vtt", "json"], default="txt")
    parser.add_argument("--output", help="write the transcript here instead of stdout")
    parser.add_argument("--api-key", default=os.environ.get("ROLLSCRIBE_API_KEY"))


def print_devices() -> None:
    devices = list_devices()
    print("inputs (--mic DEVICE):")
    for d in devices:
        if not d.loopback:
            print(f"  {d.id}    {d.name}")
    print("loopbacks of outputs (--system DEVICE):")
    for d in devices:
        if d.loopback:
            print(f"  {d.id}    {d.name}")


def run_from_args(args: argparse.Namespace) -> None:
    try:
        if args.list_devices:
            print_devices()
            return
        if not args.server:
            raise SystemExit("rollscribe record: --server is required")
        if args.speed is not None and args.speed <= 0:
            raise SystemExit(f"--speed must be positive, got {args.speed}")
        for spec in args.track:
            name, sep, path = spec.partition("=")
            if not sep or not name or not Path(path).is_file():
                raise SystemExit(f"--track must be NAME=FILE with an existing file, got {spec!r}")
            if name in ("mic", "system") and getattr(args, name) is not None:
                raise SystemExit(f"track {name!r} is both --{name} and --track")
        resuming = (Path(args.spool) / "state.json").exists()
        if args.finalize_only and not resuming:
            raise SystemExit(f"--finalize-only needs an existing spool; {args.spool} has none")
        if not (args.track or args.mic is not None or args.system is not None or resuming):
            raise SystemExit("give --mic, --system or --track NAME=FILE (or a --spool to resume)")
        Recorder(args).run()
    except DeviceError as exc:
        raise SystemExit(f"rollscribe record: {exc}") from None
    except requests.HTTPError as exc:  # a permanent refusal (temporary ones are retried)
        raise SystemExit(f"rollscribe record: the server refused: {refusal(exc)}") from None
    except KeyboardInterrupt:  # a second Ctrl-C
        raise SystemExit(
            f"rollscribe record: stopped; {args.spool} keeps what is not uploaded yet "
            "(run again with --spool to finish, --finalize-only to just finalize)"
        ) from None
