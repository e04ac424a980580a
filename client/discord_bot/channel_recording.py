"""One voice channel being recorded into one meeting: a track per speaker, a spool folder,
a muxing thread and an upload thread.

`feed()` is called from the voice-receive thread for every packet and never blocks: the
packet goes into a bounded queue. The muxing thread writes it into the speaker's open
segment (`SpeakerTrack`), closes idle segments, and records each closed segment in the
spool's state (atomic writes, as the desktop recorder does). The upload thread
(`SpoolUploader`) creates the meeting and uploads closed segments; it retries through any
outage and never dies (the old adapter's thread died after ~90 s of failures and every
later `feed()` raised). Either thread's unexpected error is logged, counted in the status
and survived.

Spool cap (`max_bytes`, shared by every meeting in the bot's spool): while the segments
waiting for upload fill it, new speech is not recorded (said in the log once per episode,
counted in `/record status`, and a gap on the server); recording resumes as uploads free
space. A bot restart picks the folder up (`resume`): what it holds is uploaded into the same
meeting, and the segment open at the crash is lost (said; at most `segment_seconds`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from client.discord_bot.dave_frames import DaveStats
from client.discord_bot.speaker_track import SpeakerTrack
from client.spool import SegmentState, Spool, SpoolState, TrackState
from client.spool_uploader import SpoolUploader

log = logging.getLogger("rollscribe.discord")

QUEUE_PACKETS = 20_000  # ~400 s of one speaker: the muxer is far faster than speech
TICK_S = 0.25
FULL_CHECK_S = 1.0


@dataclass
class RecordingStats:
    packets: int = 0
    segments_spooled: int = 0
    segments_uploaded: int = 0
    segments_refused: int = 0
    dropped_full_spool: int = 0  # packets not recorded because the spool was full
    dropped_overflow: int = 0  # packets the muxer could not take in time
    dropped_late: int = 0
    errors: int = 0
    dave: DaveStats = field(default_factory=DaveStats)


def external_id_for(guild_id: int, channel_id: int, started_at: float) -> str:
    """One meeting per recording of a channel: a restarted bot that creates it again gets
    the same meeting back."""
    return f"discord:{guild_id}:{channel_id}:{int(started_at)}"


class ChannelRecording:
    def __init__(
        self,
        spool: Spool,
        state: SpoolState,
        segment_seconds: float,
        pause_seconds: float,
        api_key: str | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.spool = spool
        self.state = state
        self.segment_seconds = segment_seconds
        self.pause_seconds = pause_seconds
        self.wall_clock = wall_clock
        self.stats = RecordingStats()
        self.lock = threading.Lock()
        self.uploader = SpoolUploader(
            spool, state, self.lock, say=self._say, api_key=api_key, on_uploaded=self._uploaded
        )
        self.speakers: dict[str, SpeakerTrack] = {}
        self._queue: queue.Queue[tuple[str, str, int, int, bytes, float] | None] = queue.Queue(
            QUEUE_PACKETS
        )
        self._muxed = threading.Event()  # the muxing thread has closed every segment
        self._spool_full = False
        self._full_checked = -FULL_CHECK_S * 1000  # meeting ms of the last check
        self._threads = [
            threading.Thread(target=self._mux_loop, name="discord-mux", daemon=True),
            threading.Thread(target=self._upload_loop, name="discord-upload", daemon=True),
        ]
        self.finalized_view: dict[str, Any] | None = None

    # ---- starting -------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        spool_root: Path,
        server: str,
        source: dict[str, str],
        title: str | None,
        segment_seconds: float,
        pause_seconds: float,
        max_bytes: int,
        api_key: str | None = None,
        started_at: float | None = None,
        wall_clock: Callable[[], float] = time.time,
        language: str | None = None,
    ) -> ChannelRecording:
        started = wall_clock() if started_at is None else started_at
        external_id = external_id_for(int(source["guild_id"]), int(source["channel_id"]), started)
        folder = spool_root / external_id.replace(":", "-")
        spool = Spool(folder, max_bytes, budget_folder=spool_root)
        state = spool.load()
        if state is not None:  # started again after the bot stopped: carry on
            return cls.resume(folder, spool_root, pause_seconds, max_bytes, api_key, wall_clock)
        state = SpoolState(
            server=server,
            external_id=external_id,
            title=title,
            language=language,
            started_at=started,
            segment_seconds=segment_seconds,
            source=source,
        )
        spool.save(state)
        recording = cls(spool, state, segment_seconds, pause_seconds, api_key, wall_clock)
        recording._run()
        return recording

    @classmethod
    def resume(
        cls,
        folder: Path,
        spool_root: Path,
        pause_seconds: float,
        max_bytes: int,
        api_key: str | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> ChannelRecording:
        """A recording a stopped bot left in its spool: closed segments are uploaded into the
        same meeting; what was being written when it stopped is lost."""
        spool = Spool(folder, max_bytes, budget_folder=spool_root)
        state = spool.load()
        if state is None:
            raise FileNotFoundError(f"{folder} holds no recording")
        recording = cls(spool, state, state.segment_seconds, pause_seconds, api_key, wall_clock)
        for part in sorted(folder.glob("*.part")):
            recording._say(
                f"the segment being written when the bot stopped is lost ({part.stat().st_size}"
                f" bytes, at most {state.segment_seconds:g} s of one speaker): {part.name}"
            )
            part.unlink()
        recording._run()
        return recording

    def _run(self) -> None:
        for thread in self._threads:
            thread.start()

    def _say(self, message: str) -> None:
        log.warning("%s: %s", self.state.external_id, message)

    # ---- packets (voice-receive thread) ----------------------------------------------------

    def feed(self, user_id: int, label: str, ssrc: int, rtp: int, opus: bytes) -> None:
        if self._muxed.is_set():
            return  # stopped: the channel's last packets after /record stop
        arrival_ms = (self.wall_clock() - self.state.started_at) * 1000
        try:
            self._queue.put_nowait((str(user_id), label, ssrc, rtp, bytes(opus), arrival_ms))
        except queue.Full:
            self.stats.dropped_overflow += 1
            if self.stats.dropped_overflow == 1:
                self._say("the muxer fell behind; packets are being dropped")

    # ---- muxing thread ---------------------------------------------------------------------

    def _mux_loop(self) -> None:
        ticked = 0.0
        while True:
            try:
                item = self._queue.get(timeout=TICK_S)
            except queue.Empty:
                item = ()
            try:
                if item is None:
                    self._close_all()
                    return
                if item:
                    self._mux(*item)
                # Idle segments are judged by the wall clock only once every packet that
                # arrived is muxed: a backlog must not make a speaker look silent.
                if self._queue.empty() and time.monotonic() - ticked >= TICK_S:
                    ticked = time.monotonic()
                    now_ms = (self.wall_clock() - self.state.started_at) * 1000
                    for speaker in self.speakers.values():
                        speaker.tick(now_ms)
            except Exception:  # one bad packet or a disk error must not end the recording
                self.stats.errors += 1
                log.exception("%s: muxing failed", self.state.external_id)
                time.sleep(TICK_S)

    def _speaker(self, user_id: str, label: str) -> SpeakerTrack:
        speaker = self.speakers.get(user_id)
        if speaker is None:
            with self.lock:
                track = self.state.tracks.setdefault(user_id, TrackState(label=label))
                track.label = label
                track.finished = False
                self.spool.save(self.state)
            speaker = self.speakers[user_id] = SpeakerTrack(
                user_id,
                track,
                self.spool,
                self.segment_seconds,
                self.pause_seconds,
                self._segment_closed,
            )
        elif speaker.track.label != label:  # renamed: later segments carry the new name
            with self.lock:
                speaker.track.label = label
        return speaker

    def _mux(
        self, user_id: str, label: str, ssrc: int, rtp: int, opus: bytes, arrival_ms: float
    ) -> None:
        speaker = self._speaker(user_id, label)
        if not speaker.recording and self._full(arrival_ms):
            self.stats.dropped_full_spool += 1
            speaker.skip_until(arrival_ms)
            return
        if speaker.packet(ssrc, rtp, opus, arrival_ms):
            self.stats.packets += 1
        else:
            self.stats.dropped_late += 1

    def _full(self, arrival_ms: float) -> bool:
        """Checked when a segment would open, at most once a second of meeting time (it
        walks the spool; while full, every packet of a speaker would ask)."""
        if abs(arrival_ms - self._full_checked) < FULL_CHECK_S * 1000:
            return self._spool_full
        self._full_checked = arrival_ms
        full = self.spool.full()
        if full != self._spool_full:
            self._say(
                f"spool full ({self.spool.used_bytes()} bytes >= the cap): new speech is not "
                "recorded until uploads free space (a gap in the transcript)"
                if full
                else "spool has room again: recording"
            )
        self._spool_full = full
        return full

    def _segment_closed(
        self, track: str, seq: int, start_ms: int, path: Path, samples: int
    ) -> None:
        with self.lock:
            self.state.segments.append(
                SegmentState(
                    track=track, seq=seq, start_ms=start_ms, path=str(path), closed_at=time.time()
                )
            )
            kept = self.state.tracks[track]
            kept.next_seq = seq + 1
            kept.samples_done += samples
            kept.kept_until_ms = start_ms + samples / 48
            self.spool.save(self.state)
        self.stats.segments_spooled += 1
        self.uploader.wake.set()

    def _close_all(self) -> None:
        for speaker in self.speakers.values():
            try:
                speaker.close_segment()
            except Exception:
                self.stats.errors += 1
                log.exception("%s: closing %s failed", self.state.external_id, speaker.name)
        self._muxed.set()
        self.uploader.wake.set()

    # ---- upload thread ----------------------------------------------------------------------

    def _upload_loop(self) -> None:
        while True:
            try:
                self.uploader.ensure_meeting({})
                self.uploader.run(more_to_come=lambda: not self._muxed.is_set())
                return
            except Exception:  # a bug or a refusal of the meeting itself: said, retried
                self.stats.errors += 1
                log.exception("%s: the upload thread failed; retrying", self.state.external_id)
                time.sleep(5.0)

    def _uploaded(self, segment: SegmentState) -> None:
        self.stats.segments_uploaded += 1

    # ---- the end ---------------------------------------------------------------------------

    def stop_recording(self) -> None:
        """No more packets: close the open segments (returns at once)."""
        if not self._muxed.is_set():
            self._queue.put(None)

    def finish(self) -> dict[str, Any]:
        """Blocking: close everything, upload it all (however long the server is away),
        finalize with each speaker's last seq. The meeting's view."""
        self.stop_recording()
        for thread in self._threads:
            thread.join()
        if self.state.finalized and self.finalized_view is not None:
            return self.finalized_view
        last_seq = {
            name: track.next_seq - 1 for name, track in self.state.tracks.items() if track.next_seq
        }
        self.finalized_view = self.uploader.finalize(last_seq)
        return self.finalized_view

    @property
    def meeting_id(self) -> str | None:
        return self.state.meeting_id

    @property
    def speaker_labels(self) -> dict[str, str]:
        return {name: track.label or name for name, track in self.state.tracks.items()}

    @property
    def uploads_pending(self) -> int:
        return len(self.uploader.pending())
