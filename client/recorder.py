"""`rollscribe record`: the desktop recorder.

Encodes each input to Ogg Opus in rolling segments while it plays, spools closed segments
in a bounded folder, uploads each with tuspy as soon as it closes (resuming after network
loss with backoff), deletes a segment only once the server has every byte, finalizes at the
end and can wait for the transcript. Run again with the same --spool after a crash: the
same meeting resumes and only what is missing is encoded and uploaded.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import requests
from tusclient import client as tus_client
from tusclient.exceptions import TusCommunicationError, TusUploadFailed

from client.spool import SegmentState, Spool, SpoolState, TrackState
from codec.segmenter import ENCODE_RATE, OggOpusFileWriter, iter_pcm

TUS_CHUNK = 4 * 1024 * 1024
NETWORK_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    TusCommunicationError,
    TusUploadFailed,
)


class Progress:
    """One status line on a terminal; silent otherwise."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self.recorded = self.uploaded = 0
        self.note = ""

    def show(self) -> None:
        if self.enabled:
            sys.stderr.write(
                f"\rrecorded {self.recorded} segments, uploaded {self.uploaded} {self.note:40}"
            )
            sys.stderr.flush()

    def say(self, message: str) -> None:
        # Problems are always reported, terminal or not.
        sys.stderr.write(("\n" if self.enabled else "") + message + "\n")
        sys.stderr.flush()


class Recorder:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.spool = Spool(Path(args.spool), args.spool_max_bytes)
        self.session = requests.Session()
        self.headers: dict[str, str] = {}
        if args.api_key:
            self.headers["Authorization"] = f"Bearer {args.api_key}"
            self.session.headers.update(self.headers)
        self.server = args.server.rstrip("/")
        self.progress = Progress()
        self.lock = threading.Lock()
        self.state = self._load_or_start()
        self.wake = threading.Event()

    def _load_or_start(self) -> SpoolState:
        state = self.spool.load()
        tracks = dict(t.split("=", 1) for t in self.args.track)
        if state is None:
            state = SpoolState(server=self.server, segment_seconds=self.args.segment_seconds)
            state.tracks = {name: TrackState(str(Path(f).resolve())) for name, f in tracks.items()}
        elif set(tracks) and set(tracks) != set(state.tracks):
            raise SystemExit(
                f"the spool records tracks {sorted(state.tracks)}, not {sorted(tracks)}"
            )
        if state.meeting_id is None:
            state.meeting_id = self._with_backoff(lambda: self._create_meeting(state))
        self.spool.save(state)
        print(state.meeting_id, flush=True)
        return state

    def _create_meeting(self, state: SpoolState) -> str:
        r = self.session.post(
            f"{self.server}/meetings",
            timeout=30,
            json={"external_id": state.external_id, "tracks": sorted(state.tracks)},
        )
        r.raise_for_status()
        return r.json()["id"]

    def _with_backoff(self, action):  # type: ignore[no-untyped-def]
        delay = 0.5
        while True:
            try:
                return action()
            except NETWORK_ERRORS as exc:
                self.progress.note = f"server unreachable, retrying in {delay:.0f}s"
                self.progress.show()
                if not self.progress.enabled:
                    self.progress.say(f"server unreachable ({type(exc).__name__}); retrying")
                time.sleep(delay)
                delay = min(10.0, delay * 2)

    def save(self) -> None:
        with self.lock:
            self.spool.save(self.state)

    # ---- recording --------------------------------------------------------------------

    def record(self) -> None:
        seg_samples = int(self.state.segment_seconds * ENCODE_RATE)
        sources = {
            name: self._pcm_after(track)
            for name, track in self.state.tracks.items()
            if not track.finished
        }
        writers: dict[str, tuple[OggOpusFileWriter, int]] = {}
        started = time.monotonic()
        played = 0.0
        while sources:
            for name in list(sources):
                track = self.state.tracks[name]
                block = next(sources[name], None)
                if block is None:
                    if name in writers:
                        self._close(name, *writers.pop(name))
                    track.finished = True
                    self.save()
                    del sources[name]
                    continue
                while len(block):
                    if name not in writers:
                        self._wait_for_space()
                        path = self.spool.segment_path(name, track.next_seq)
                        writers[name] = (
                            OggOpusFileWriter(path.with_suffix(".part")),
                            track.samples_done,
                        )
                    writer, first = writers[name]
                    take = min(len(block), seg_samples - writer.samples_written)
                    writer.write(block[:take])
                    block = block[take:]
                    if writer.samples_written >= seg_samples:
                        self._close(name, *writers.pop(name))
            played += 1.0
            if self.args.speed:
                time.sleep(max(0.0, started + played / self.args.speed - time.monotonic()))

    def _pcm_after(self, track: TrackState):  # type: ignore[no-untyped-def]
        skip = track.samples_done
        for block in iter_pcm(track.file, ENCODE_RATE, block_seconds=1.0):
            if skip >= len(block):
                skip -= len(block)
                continue
            yield block[skip:]
            skip = 0

    def _close(self, name: str, writer: OggOpusFileWriter, first_sample: int) -> None:
        writer.close()
        track = self.state.tracks[name]
        final = self.spool.segment_path(name, track.next_seq)
        os.replace(writer.path, final)
        with self.lock:
            self.state.segments.append(
                SegmentState(
                    track=name,
                    seq=track.next_seq,
                    start_ms=round(first_sample * 1000 / ENCODE_RATE),
                    path=str(final),
                )
            )
            track.next_seq += 1
            track.samples_done = first_sample + writer.samples_written
            self.spool.save(self.state)
        self.progress.recorded += 1
        self.progress.show()
        self.wake.set()

    def _wait_for_space(self) -> None:
        warned = False
        while self.spool.full():
            if not warned:
                self.progress.say(
                    f"spool full ({self.spool.used_bytes()} bytes): recording waits"
                    " for uploads; no audio is dropped"
                )
                warned = True
            time.sleep(0.5)

    # ---- uploading --------------------------------------------------------------------

    def upload_loop(self, recording: threading.Thread) -> None:
        # A crash between marking a segment uploaded and deleting its file (below) leaves
        # the file behind; the server holds all of it, so it goes now.
        with self.lock:
            done = [s.path for s in self.state.segments if s.uploaded]
        for path in done:
            Path(path).unlink(missing_ok=True)
        while True:
            with self.lock:
                todo = [s for s in self.state.segments if not s.uploaded]
            for segment in todo:
                self._with_backoff(lambda s=segment: self._upload(s))
            if not todo:
                if not recording.is_alive():
                    with self.lock:
                        if all(s.uploaded for s in self.state.segments):
                            return
                self.wake.wait(0.5)
                self.wake.clear()

    def _upload(self, segment: SegmentState) -> None:
        client = tus_client.TusClient(f"{self.server}/files/", headers=self.headers)
        meta = {
            "meeting_id": self.state.meeting_id or "",
            "track": segment.track,
            "seq": str(segment.seq),
            "start_ms": str(segment.start_ms),
            "filename": Path(segment.path).name,
            "filetype": "audio/ogg",
        }
        if segment.upload_url is None:
            uploader = client.uploader(
                segment.path, metadata=meta, chunk_size=TUS_CHUNK, retries=2, retry_delay=0.5
            )
            url = uploader.create_url()
            with self.lock:
                segment.upload_url = url
                self.spool.save(self.state)
            uploader.set_url(url)
            uploader.offset = uploader.get_offset()
        else:
            uploader = client.uploader(
                segment.path,
                url=segment.upload_url,
                chunk_size=TUS_CHUNK,
                retries=2,
                retry_delay=0.5,
            )
        uploader.upload()
        # Deleted only once the server holds every byte (the last PATCH said so).
        with self.lock:
            segment.uploaded = True
            self.spool.save(self.state)
        Path(segment.path).unlink(missing_ok=True)
        self.progress.uploaded += 1
        self.progress.show()

    # ---- the end ------------------------------------------------------------------------

    def finalize(self) -> None:
        last_seq = {name: t.next_seq - 1 for name, t in self.state.tracks.items() if t.next_seq}

        def call() -> None:
            r = self.session.post(
                f"{self.server}/meetings/{self.state.meeting_id}/finalize",
                json={"last_seq": last_seq},
                timeout=30,
            )
            r.raise_for_status()

        self._with_backoff(call)
        self.state.finalized = True
        self.save()

    def wait_and_write(self) -> None:
        def view() -> dict:
            r = self.session.get(f"{self.server}/meetings/{self.state.meeting_id}", timeout=30)
            r.raise_for_status()
            return r.json()

        while (current := self._with_backoff(view))["state"] not in ("complete", "failed"):
            self.progress.note = f"meeting {current['state']}"
            self.progress.show()
            time.sleep(0.5)

        def transcript() -> str:
            r = self.session.get(
                f"{self.server}/meetings/{self.state.meeting_id}/transcript",
                params={"format": self.args.format},
                timeout=30,
            )
            r.raise_for_status()
            return r.text

        text = self._with_backoff(transcript)
        if self.args.output:
            Path(self.args.output).write_text(text)
        else:
            sys.stdout.write(text)
            sys.stdout.flush()

    def run(self) -> None:
        recording = threading.Thread(target=self.record, name="record")
        recording.start()
        self.upload_loop(recording)
        recording.join()
        if not self.state.finalized:
            self.finalize()
        if self.args.wait:
            self.wait_and_write()
        if self.progress.enabled:
            sys.stderr.write("\n")


def add_record_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", required=True, help="e.g. http://127.0.0.1:8080")
    parser.add_argument(
        "--track",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="an input file per track (repeat for several tracks)",
    )
    parser.add_argument("--segment-seconds", type=float, default=30.0)
    parser.add_argument("--spool", default="./rollscribe-spool")
    parser.add_argument("--spool-max-bytes", type=int, default=512 * 1024 * 1024)
    parser.add_argument(
        "--realtime",
        dest="speed",
        action="store_const",
        const=1.0,
        help="play inputs at real-time pace (as if recording live)",
    )
    parser.add_argument(
        "--speed",
        type=float,
        help="play inputs at this multiple of real time (benchmarks: a 30 min meeting in 5)",
    )
    parser.add_argument("--wait", action="store_true", help="wait for the final transcript")
    parser.add_argument("--format", choices=["txt", "srt", "vtt", "json"], default="txt")
    parser.add_argument("--output", help="write the transcript here instead of stdout")
    parser.add_argument("--api-key", default=os.environ.get("ROLLSCRIBE_API_KEY"))


def run_from_args(args: argparse.Namespace) -> None:
    if args.speed is not None and args.speed <= 0:
        raise SystemExit(f"--speed must be positive, got {args.speed}")
    for spec in args.track:
        name, sep, path = spec.partition("=")
        if not sep or not name or not Path(path).is_file():
            raise SystemExit(f"--track must be NAME=FILE with an existing file, got {spec!r}")
    if not args.track and not (Path(args.spool) / "state.json").exists():
        raise SystemExit("give at least one --track NAME=FILE (or a --spool to resume)")
    Recorder(args).run()
