"""A simulated line controller on a real pseudo-terminal, driven by commands on stdin.

It owns the pty master; the slave's path is published as a stable symlink (as udev does
for a real board), so "unplug" / "plug" replace the pty behind the same path.
Commands: trigger <product> | garbage <n> | unplug | plug | heartbeats | quit.
Each answer is one JSON line on stdout.
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time
import tty

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import contextlib

from firmware_bridge import protocol as p  # noqa: E402


class Device:
    def __init__(self, link: str) -> None:
        self.link = link
        self.master = self.slave = None
        self.decoder = p.FrameDecoder()
        self.verdicts: dict[int, tuple] = {}
        self.heartbeats = 0
        self.seq = 0
        self.cond = threading.Condition()
        self.plug()
        threading.Thread(target=self._heartbeat, daemon=True).start()

    def _heartbeat(self) -> None:
        """Like the firmware: a HEARTBEAT every interval while plugged in."""
        started = time.monotonic()
        while True:
            time.sleep(0.2)
            fd = self.master
            if fd is None:
                continue
            uptime = int((time.monotonic() - started) * 1000)
            with contextlib.suppress(OSError):
                os.write(fd, p.encode(p.heartbeat(0, uptime)))

    def plug(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        tmp = self.link + ".new"
        os.symlink(os.ttyname(self.slave), tmp)
        os.replace(tmp, self.link)
        threading.Thread(target=self._read, args=(self.master,), daemon=True).start()

    def unplug(self) -> None:
        os.unlink(self.link)
        os.close(self.master)
        os.close(self.slave)
        self.master = None

    def _read(self, fd: int) -> None:
        while True:
            try:
                data = os.read(fd, 4096)
            except OSError:
                return
            if not data:
                return
            for message in self.decoder.feed(data):
                with self.cond:
                    if message.type == p.MessageType.VERDICT:
                        self.verdicts[message.seq] = (p.parse_verdict(message), time.monotonic())
                    elif message.type == p.MessageType.HEARTBEAT:
                        self.heartbeats += 1
                    self.cond.notify_all()

    def trigger(self, product: int) -> dict:
        self.seq = (self.seq + 1) & 0xFFFF
        seq = self.seq
        sent = time.monotonic()
        os.write(self.master, p.encode(p.trigger(seq, product)))
        with self.cond:
            self.cond.wait_for(lambda: seq in self.verdicts, timeout=3)
            if seq not in self.verdicts:
                return {"seq": seq, "timeout": True}
            (decision, flags, score), at = self.verdicts[seq]
        return {"seq": seq, "verdict": decision.name, "flags": flags,
                "score": None if score != score else score, "ms": (at - sent) * 1000}

    def garbage(self, count: int) -> dict:
        rng = random.Random(count)
        noise = bytes(rng.randrange(256) for _ in range(count))
        frame = bytearray(p.encode(p.trigger(999, 1)))
        frame[3] ^= 0x55  # a corrupted frame: CRC must reject it
        os.write(self.master, noise + b"\x00" + bytes(frame) + b"\x00" * 3)
        return {"ok": True}


def main() -> None:
    device = Device(sys.argv[1])
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd, *args = line.split()
        if cmd == "trigger":
            answer = device.trigger(int(args[0]))
        elif cmd == "garbage":
            answer = device.garbage(int(args[0]))
        elif cmd == "unplug":
            device.unplug()
            answer = {"ok": True}
        elif cmd == "plug":
            device.plug()
            answer = {"ok": True}
        elif cmd == "heartbeats":
            answer = {"heartbeats": device.heartbeats}
        else:
            break
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
