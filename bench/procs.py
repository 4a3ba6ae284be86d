"""What the Python bench scripts share: loopback ports, waiting for a server, and what a
process holds (resident memory, open descriptors, threads) read from /proc."""

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, timeout=30):
    """Returns once `url` answers 2xx; exits the script after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except Exception:
            time.sleep(0.05)
    sys.exit(f"timed out waiting for {url}")


def proc_stats(pid):
    """RSS in MiB, open file descriptors and threads of process `pid`."""
    with open(f"/proc/{pid}/status") as f:
        status = f.read()
    rss_kb = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
    threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))
    return {"rss_mib": round(rss_kb / 1024, 1), "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "threads": threads}


def start_sim(bin_, port, *args):
    """`tollgate mock-provider` on loopback `port` with extra knobs, once it answers."""
    sim = subprocess.Popen([bin_, "mock-provider", "--listen", f"127.0.0.1:{port}", *args],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/_sim/config")
    return sim
