"""A real PulseAudio daemon for tests, on a machine without a sound card: null sinks stand for
the speakers, their monitors for the microphone and the loopback, and `paplay` plays known
speech into them at real time."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

# Sinks the tests play into. `both` plays one stream into mic and out at the same instant.
CONFIG = """
load-module module-native-protocol-unix
load-module module-null-sink sink_name=meeting_mic sink_properties=device.description=MeetingMic
load-module module-null-sink sink_name=meeting_out sink_properties=device.description=MeetingOut
load-module module-null-sink sink_name=meeting_spare sink_properties=device.description=Spare
load-module module-combine-sink sink_name=both slaves=meeting_mic,meeting_out
set-default-sink meeting_out
set-default-source meeting_mic.monitor
"""


@dataclass
class PulseDaemon:
    folder: Path
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    def start(self) -> PulseDaemon:
        if shutil.which("pulseaudio") is None:
            raise RuntimeError("pulseaudio is not installed (./dev installs it)")
        for sub in ("run", "home", "xdg"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        (self.folder / "default.pa").write_text(CONFIG)
        self.env = {
            **os.environ,
            "PULSE_RUNTIME_PATH": str(self.folder / "run"),
            "XDG_RUNTIME_DIR": str(self.folder / "xdg"),
            "HOME": str(self.folder / "home"),
            "PULSE_SERVER": f"unix:{self.folder / 'run' / 'native'}",
        }
        self.process = subprocess.Popen(
            [
                "pulseaudio",
                "-n",
                "-F",
                str(self.folder / "default.pa"),
                "--daemonize=no",
                "--exit-idle-time=-1",
                "--use-pid-file=no",
                "--disallow-exit",
                "--log-target=stderr",
            ],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.folder / "pulseaudio.log", "wb"),  # noqa: SIM115
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.pactl("info", check=False).returncode == 0:
                return self
            time.sleep(0.1)
        raise RuntimeError(
            "PulseAudio did not start: " + (self.folder / "pulseaudio.log").read_text()
        )

    def pactl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["pactl", *args], env=self.env, capture_output=True, text=True, check=check, timeout=10
        )

    def play(self, sink: str, path: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen(["paplay", f"--device={sink}", str(path)], env=self.env)

    def unload_sink(self, sink: str) -> None:
        for line in self.pactl("list", "short", "modules").stdout.splitlines():
            if f"sink_name={sink} " in line + " ":
                self.pactl("unload-module", line.split()[0])
                return
        raise LookupError(sink)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
