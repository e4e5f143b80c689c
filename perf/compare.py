#!/usr/bin/env python3
"""Runs the ringnats benchmark matrix against ringnats, nats-server and
(optionally) gnatsd 1.0 with two load generators and writes the results.

Normally started through `perf/compare`, which installs peers and builds the
binaries first. Configuration is by environment variable; see perf/README.md.
"""

import datetime
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # importing plot.py must not leave __pycache__ in perf/

PERF = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(PERF)
RESULTS = os.path.join(PERF, "results")

# name: (np, ns, msgs at SCALE=1, size, extra generator options)
# Counts are sized so one default run takes roughly 0.5-2 s on a 2-core box.
CASES = [
    ("pub16", 1, 0, 10_000_000, 16, {}),
    ("pub128", 1, 0, 5_000_000, 128, {}),
    ("pub1k", 1, 0, 1_500_000, 1024, {}),
    ("pub64k", 1, 0, 30_000, 65536, {}),
    ("1to1_16", 1, 1, 5_000_000, 16, {}),
    ("1to1_128", 1, 1, 3_000_000, 128, {}),
    ("fanout4", 1, 4, 1_500_000, 16, {}),
    ("fanout16", 1, 16, 400_000, 16, {}),
    ("fanin4", 4, 1, 4_000_000, 16, {}),
    ("4to4_128", 4, 4, 1_000_000, 128, {}),
    ("queue4", 1, 4, 3_000_000, 16, {"queue": "q"}),
    ("subjects1m", 1, 1, 2_000_000, 16, {"subjects": 1_000_000}),
    ("reqrep", 1, 1, 20_000, 128, {"req": True}),
    ("idle1k", 1, 1, 3_000_000, 16, {"idle": 1000}),
    # Two nodes of the same server joined by a route: publishers/requesters on
    # node A, subscribers/responders on node B.
    ("routed1to1_16", 1, 1, 2_000_000, 16, {"routed": True}),
    ("routed1to4_16", 1, 4, 600_000, 16, {"routed": True}),
    ("routedreq", 1, 1, 20_000, 128, {"req": True, "routed": True}),
    # One publisher, one healthy subscriber and one subscriber that never reads
    # (SO_RCVBUF 4 KiB), against its twin without the stuck one; each pair runs
    # back to back on the same server and generator.
    ("stuck128", 1, 1, 2_000_000, 128, {"stuck": 1}),
    ("stuck128_base", 1, 1, 2_000_000, 128, {}),
]
PUB_ONLY = {c[0] for c in CASES if c[2] == 0}
ROUTED = {c[0] for c in CASES if c[5].get("routed")}
# Single-node case with the same clients and sizes, for the route hop cost.
TWIN = {"routed1to1_16": "1to1_16", "routed1to4_16": "fanout4", "routedreq": "reqrep"}
# Case with stuck subscribers -> the same case without them (always run with it).
STUCK_TWIN = {"stuck128": "stuck128_base"}
# Node B must have received a probe published on node A within this time.
ROUTE_WAIT = 10.0
# Route flags per server kind: (listen URL scheme, extra arguments).
CLUSTER_FLAVOUR = {
    "ringnats": ("nats-route", []),
    "ringnats-base": ("nats-route", []),
    "gnatsd": ("nats-route", []),
    "nats-server": ("nats", ["--cluster_name", "ringnats-bench"]),
}
# Mixed pairs for the routed cases (node A, node B): ringnats routed with nats-server 2.x
# over the 2.x route protocol, in both orders. Only run for routed cases.
MIXED = {
    "ringnats>nats-server": ("ringnats", "nats-server"),
    "nats-server>ringnats": ("nats-server", "ringnats"),
}
MIN_MSGS = 1000

CSV_FIELDS = [
    "run", "started", "rep", "case", "server", "gen", "np", "ns", "msgs", "size",
    "ok", "failure", "error", "rate", "pub_rate", "sub_rate", "published",
    "delivered", "routed", "duration_s", "rss_kib", "cpu_s", "cpu_us_per_msg",
    "cpu_sys_s", "cpu_sys_us_per_msg",
    "p50_us", "p90_us", "p99_us", "p999_us", "max_us", "wall_s",
    # routed cases only: node A (publishers) and node B (subscribers)
    "cpu_a_s", "cpu_b_s", "cpu_a_us_per_msg", "cpu_b_us_per_msg", "rss_a_kib", "rss_b_kib",
    "route_wait_s",
    # stuck cases: never-reading subscribers, how many the server cut during the run,
    # when the last was seen cut (s after the start line), the server's log line on it
    "stuck", "stuck_cut", "stuck_cut_s", "cut_log",
]


def log(msg):
    print(msg, flush=True)


def env(name, default=None):
    v = os.environ.get(name)
    return default if v is None or v == "" else v


def sh_out(cmd, timeout=10):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return (r.stdout + r.stderr).strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def git_commit():
    """Reads HEAD without running git."""
    gitdir = os.path.join(ROOT, ".git")
    try:
        if os.path.isfile(gitdir):
            with open(gitdir) as f:
                gitdir = os.path.join(ROOT, f.read().split(":", 1)[1].strip())
        with open(os.path.join(gitdir, "HEAD")) as f:
            head = f.read().strip()
        if not head.startswith("ref:"):
            return head[:12]
        ref = head[4:].strip()
        dirs = [gitdir]
        common = os.path.join(gitdir, "commondir")  # a linked worktree keeps its refs there
        if os.path.isfile(common):
            with open(common) as f:
                dirs.append(os.path.normpath(os.path.join(gitdir, f.read().strip())))
        for d in dirs:
            p = os.path.join(d, ref)
            if os.path.exists(p):
                with open(p) as f:
                    return f.read().strip()[:12]
        for d in dirs:
            packed = os.path.join(d, "packed-refs")
            if os.path.exists(packed):
                with open(packed) as f:
                    for line in f:
                        parts = line.split()
                        if len(parts) == 2 and parts[1] == ref:
                            return parts[0][:12]
    except OSError:
        pass
    return "nocommit"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def mem_total():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return "%.1f GiB" % (int(line.split()[1]) / 1048576)
    except OSError:
        pass
    return "?"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, 1 << 20), hard))
    except (ValueError, OSError):
        pass


def proc_cpu_s(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def proc_sys_s(pid):
    """System (kernel) CPU seconds of a process, all threads."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[12]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def proc_hwm_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def wait_accepting(port, proc, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.01)
    return False


def stop(proc, grace=5.0):
    """Stops one process we started, by its PID."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=5)


class Config:
    def __init__(self):
        self.scale = float(env("SCALE", "1"))
        self.reps = max(1, int(env("REPS", "3")))
        self.gen = env("GEN", "both")
        if self.gen not in ("ours", "go", "both"):
            sys.exit("GEN must be ours, go or both")
        self.timeout = float(env("TIMEOUT", "60"))
        self.pin = env("PIN", "0") == "1"
        self.ceiling = env("CEILING", "1") != "0"
        self.bench = env("BENCH_BIN", os.path.join(ROOT, "target/release/ringnats-bench"))
        self.sink = env("SINK_BIN", os.path.join(ROOT, "target/release/ringnats-sink"))
        self.gobench = env("GOBENCH_BIN", os.path.join(PERF, "bin/gobench"))
        self.ringnats = env("RINGNATS_BIN", os.path.join(ROOT, "target/release/ringnats"))
        self.ringnats_args = shlex.split(env("RINGNATS_ARGS", ""))
        self.gnatsd = env("GNATSD_BIN")
        if self.gnatsd is None:
            peer = os.path.normpath(os.path.join(ROOT, "..", "shared", "peers", "gnatsd-1.0.0"))
            if executable(peer):
                self.gnatsd = peer
        self.nats_server = shutil.which("nats-server")
        names = env("CASES")
        known = [c[0] for c in CASES]
        if names:
            wanted = [n.strip() for n in names.split(",") if n.strip()]
            bad = [n for n in wanted if n not in known]
            if bad:
                sys.exit("unknown case(s) %s; known: %s" % (", ".join(bad), ", ".join(known)))
            if env("ROUTED_TWINS", "1") != "0":
                twins = [TWIN[n] for n in wanted if n in TWIN and TWIN[n] not in wanted]
                if twins:
                    log("adding the single-node twin case(s) %s for the route hop cost "
                        "(ROUTED_TWINS=0 to leave them out)" % ", ".join(twins))
                    wanted += twins
            stuck_twins = [STUCK_TWIN[n] for n in wanted if n in STUCK_TWIN and STUCK_TWIN[n] not in wanted]
            if stuck_twins:
                log("adding %s: the same case without the stuck subscriber, for the with/without ratio"
                    % ", ".join(stuck_twins))
                wanted += stuck_twins
            self.cases = [c for c in CASES if c[0] in wanted]
        else:
            self.cases = list(CASES)
        self.servers_filter = [s.strip() for s in env("SERVERS", "").split(",") if s.strip()]


def executable(p):
    return p and os.path.isfile(p) and os.access(p, os.X_OK)


def pick_servers(cfg):
    servers = []
    if executable(cfg.ringnats):
        servers.append(("ringnats", [cfg.ringnats] + cfg.ringnats_args))
    else:
        log("ringnats binary not found at %s: skipping ringnats" % cfg.ringnats)
    base = env("BASE_BIN", "")
    if base:
        # A second ringnats build (say, the commit before a change), run alternately with
        # the one under test so before/after come from the same run.
        if executable(base):
            servers.append(("ringnats-base", [base] + cfg.ringnats_args))
        else:
            log("BASE_BIN=%s is not an executable: skipping ringnats-base" % base)
    if cfg.nats_server:
        servers.append(("nats-server", [cfg.nats_server]))
    else:
        log("nats-server not installed: skipping nats-server")
    if cfg.gnatsd:
        if executable(cfg.gnatsd):
            servers.append(("gnatsd", [cfg.gnatsd]))
        else:
            log("GNATSD_BIN=%s is not an executable: skipping gnatsd 1.0" % cfg.gnatsd)
    else:
        log("GNATSD_BIN not set and no ../shared/peers/gnatsd-1.0.0: skipping gnatsd 1.0")
    kinds = dict(servers)
    if env("MIXED", "1") != "0" and "ringnats" in kinds and "nats-server" in kinds:
        for name, (a, b) in MIXED.items():
            servers.append((name, (kinds[a], kinds[b])))
    if cfg.servers_filter:
        servers = [s for s in servers if s[0] in cfg.servers_filter]
    return servers


def pick_gens(cfg):
    gens = []
    if cfg.gen in ("ours", "both"):
        if executable(cfg.bench):
            gens.append("ours")
        else:
            log("ringnats-bench not found at %s: skipping our generator" % cfg.bench)
    if cfg.gen in ("go", "both"):
        if executable(cfg.gobench):
            gens.append("go")
        else:
            log("Go generator not found at %s (Go or nats.go missing?): skipping it" % cfg.gobench)
    return gens


def scaled(msgs, scale, np_):
    return max(int(round(msgs * scale)), MIN_MSGS, np_)


def gen_cmd(cfg, gen, url, np_, ns, msgs, size, extra, subject, sub_url=None):
    if gen == "ours":
        cmd = [cfg.bench, "-s", url, "-np", str(np_), "-ns", str(ns), "-n", str(msgs),
               "-ms", str(size), "--json", "--no-progress", "--timeout", str(cfg.timeout)]
        if sub_url:
            cmd += ["--sub-url", sub_url]
        if extra.get("queue"):
            cmd += ["--queue", extra["queue"]]
        if extra.get("subjects"):
            cmd += ["--subjects", str(extra["subjects"])]
        if extra.get("req"):
            cmd += ["--req"]
        if extra.get("stuck"):
            cmd += ["--stuck", str(extra["stuck"])]
    else:
        cmd = [cfg.gobench, "-s", url, "-np", str(np_), "-ns", str(ns), "-n", str(msgs),
               "-ms", str(size), "-json", "-timeout", str(cfg.timeout)]
        if sub_url:
            cmd += ["-sub-url", sub_url]
        if extra.get("queue"):
            cmd += ["-queue", extra["queue"]]
        if extra.get("subjects"):
            cmd += ["-subjects", str(extra["subjects"])]
        if extra.get("req"):
            cmd += ["-req"]
        if extra.get("stuck"):
            cmd += ["-stuck", str(extra["stuck"])]
    cmd.append(subject)
    if cfg.pin:
        cmd = ["taskset", "-c", "1"] + cmd
    return cmd


def free_ports(n):
    """n distinct free ports (bound one after the other, so they differ)."""
    socks = []
    try:
        for _ in range(n):
            sk = socket.socket()
            sk.bind(("127.0.0.1", 0))
            socks.append(sk)
        return [sk.getsockname()[1] for sk in socks]
    finally:
        for sk in socks:
            sk.close()


def start_server(cfg, argv, logpath):
    if cfg.pin:
        argv = ["taskset", "-c", "0"] + argv
    with open(logpath, "wb") as slog:
        return subprocess.Popen(argv, stdout=slog, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, preexec_fn=raise_nofile)


def cluster_args(sname, cport, seed_port=None):
    """Cluster listen (and, for node B, route) flags for one node."""
    scheme, extra = CLUSTER_FLAVOUR.get(sname, ("nats-route", []))
    argv = ["--cluster", "%s://127.0.0.1:%d" % (scheme, cport)] + list(extra)
    if seed_port:
        argv += ["--routes", "%s://127.0.0.1:%d" % (scheme, seed_port)]
    return argv


class ProtoConn:
    """Minimal blocking NATS client for the route probe."""

    def __init__(self, port, deadline):
        self.deadline = deadline
        self.buf = b""
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=1.0)
        self.sock.settimeout(0.05)
        self.read_until(b"INFO", consume=True)
        self.sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"name":"compare-probe"}\r\nPING\r\n')
        self.read_until(b"PONG", consume=True)

    def fill(self):
        try:
            d = self.sock.recv(65536)
        except socket.timeout:
            return False
        if not d:
            raise OSError("connection closed by the server")
        self.buf += d
        if b"PING\r\n" in self.buf:
            self.buf = self.buf.replace(b"PING\r\n", b"")
            self.sock.sendall(b"PONG\r\n")
        if b"-ERR" in self.buf:
            line = self.buf[self.buf.index(b"-ERR"):].split(b"\r\n", 1)[0]
            raise OSError("server said %s" % line.decode(errors="replace"))
        return True

    def read_until(self, token, consume=False, wait=None):
        """True once token was seen; False after `wait` s (None: until the deadline)."""
        end = self.deadline if wait is None else min(self.deadline, time.monotonic() + wait)
        while token not in self.buf:
            if time.monotonic() >= end:
                if wait is None:
                    raise OSError("no %s from the server" % token.decode())
                return False
            self.fill()
        if consume:
            self.buf = self.buf[self.buf.index(token) + len(token):]
        return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def route_probe(port_a, port_b, timeout=ROUTE_WAIT):
    """Subscribes on B and publishes on A until a message crosses the route.

    Returns (seconds it took, None) or (None, error text)."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    subject = "_COMPARE.probe.%016x" % int.from_bytes(os.urandom(8), "little")
    a = b = None
    try:
        b = ProtoConn(port_b, deadline)
        b.sock.sendall(("SUB %s 1\r\nPING\r\n" % subject).encode())
        b.read_until(b"PONG", consume=True)
        a = ProtoConn(port_a, deadline)
        pub = ("PUB %s 0\r\n\r\nPING\r\n" % subject).encode()
        while time.monotonic() < deadline:
            a.sock.sendall(pub)
            a.read_until(b"PONG", consume=True)
            if b.read_until(b"MSG " + subject.encode(), wait=0.02):
                return time.monotonic() - t0, None
        return None, ("the nodes did not form a route within %.0f s: a message published on "
                      "node A never reached a subscriber on node B" % timeout)
    except OSError as e:
        return None, "route probe failed after %.1f s: %s" % (time.monotonic() - t0, e)
    finally:
        for c in (a, b):
            if c:
                c.close()


def run_one(cfg, server, gen, case, rep, tmpdir):
    name, np_, ns, base, size, extra = case
    msgs = scaled(base, cfg.scale, np_)
    sname, sargv = server
    routed = bool(extra.get("routed"))
    row = {"case": name, "server": sname, "gen": gen, "rep": rep, "np": np_, "ns": ns,
           "msgs": msgs, "size": size, "ok": False, "failure": "", "error": ""}
    t_start = time.monotonic()
    helper = None
    nodes = []  # (label, Popen, log path); node A first
    try:
        if routed:
            port, port_b, cport_a, cport_b = free_ports(4)
            if sname in MIXED:
                (ka, kb), (argv_a, argv_b) = MIXED[sname], sargv
            else:
                ka, kb, argv_a, argv_b = sname, sname, sargv, sargv
            # node B solicits A with A's route URL scheme
            route_b = cluster_args(kb, cport_b) + ["--routes", "%s://127.0.0.1:%d" % (
                CLUSTER_FLAVOUR.get(ka, ("nats-route", []))[0], cport_a)]
            plan = [("A", port, argv_a + ["-a", "127.0.0.1", "-p", str(port)] + cluster_args(ka, cport_a)),
                    ("B", port_b, argv_b + ["-a", "127.0.0.1", "-p", str(port_b)] + route_b)]
        else:
            port = free_port()
            port_b = None
            plan = [("", port, sargv + ["-a", "127.0.0.1", "-p", str(port)])]
        url = "nats://127.0.0.1:%d" % port
        sub_url = "nats://127.0.0.1:%d" % port_b if routed else None
        # Node A (the seed) first; B solicits the route to A.
        for label, p, argv in plan:
            logpath = os.path.join(tmpdir, "server-%s%s-%s-%d.log" % (sname, label and "-" + label, name, rep))
            srv = start_server(cfg, argv, logpath)
            nodes.append((label, srv, logpath))
            if not wait_accepting(p, srv):
                row["failure"] = "server"
                how = ("exited at start with code %s" % srv.returncode if srv.poll() is not None
                       else "did not start accepting")
                row["error"] = "server%s %s: %s" % (label and " node " + label, how, one_line(tail(logpath)))
                if routed:
                    row["error"] += " (does it take %s?)" % " ".join(a for a in argv if a.startswith("--"))
                return row
        if routed:
            waited, err = route_probe(port, port_b)
            if err:
                row["failure"] = "route"
                row["error"] = err + "".join(
                    "; node %s log: %s" % (label, one_line(tail(lp, 200)) or "(empty)") for label, _, lp in nodes)
                return row
            row["route_wait_s"] = round(waited, 3)
        if extra.get("idle"):
            hcmd = [cfg.bench, "-s", url, "--hold-idle", str(extra["idle"]),
                    "--timeout", str(cfg.timeout * 3)]
            if cfg.pin:
                hcmd = ["taskset", "-c", "1"] + hcmd
            helper = subprocess.Popen(hcmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      stdin=subprocess.DEVNULL, preexec_fn=raise_nofile, text=True)
            line = read_line_with_timeout(helper, 30)
            if not line.startswith("ready"):
                row["failure"] = "helper"
                row["error"] = "idle helper failed: " + (line or helper_err(helper))
                return row
        cpu0 = [proc_cpu_s(srv.pid) for _, srv, _ in nodes]
        sys0 = [proc_sys_s(srv.pid) for _, srv, _ in nodes]
        cmd = gen_cmd(cfg, gen, url, np_, ns, msgs, size, extra, "bench.%s" % name, sub_url)
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=cfg.timeout + 20,
                               preexec_fn=raise_nofile)
            out, err, code = r.stdout, r.stderr, r.returncode
        except subprocess.TimeoutExpired as e:
            out, err, code = (e.stdout or b""), (e.stderr or b""), -9
            out = out.decode() if isinstance(out, bytes) else out
            err = err.decode() if isinstance(err, bytes) else err
        cpu1 = [proc_cpu_s(srv.pid) for _, srv, _ in nodes]
        sys1 = [proc_sys_s(srv.pid) for _, srv, _ in nodes]
        rss = [proc_hwm_kib(srv.pid) for _, srv, _ in nodes]
        # routed: the sum of both nodes' peak RSS (the cluster's footprint)
        row["rss_kib"] = sum(rss) if None not in rss else None
        summary = None
        for line in out.splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    summary = json.loads(line)
                except ValueError:
                    pass
        if summary is None:
            row["failure"] = "generator"
            row["error"] = "exit %d, no JSON summary: %s" % (code, (err or out).strip()[-300:])
            return row
        row["ok"] = bool(summary.get("ok")) and code == 0
        row["failure"] = summary.get("failure") or ("" if code == 0 else "exit %d" % code)
        row["error"] = summary.get("error") or ""
        for label, srv, logpath in nodes:
            if srv.poll() is not None:
                row["ok"] = False
                row["failure"] = "server"
                row["error"] = ("server%s exited with %s; " % (label and " node " + label, srv.returncode)
                                + row["error"] + tail(logpath))
        for k in ("pub_rate", "sub_rate", "published", "delivered", "duration_s", "client_version"):
            row[k] = summary.get(k)
        if extra.get("stuck"):
            row["stuck"] = summary.get("stuck")
            if summary.get("stuck_watch") == "proc":
                row["stuck_cut"] = summary.get("stuck_cut")
                row["stuck_cut_s"] = summary.get("stuck_cut_s")
            row["cut_log"] = cut_log(nodes[0][2])
        req = bool(extra.get("req"))
        if req:
            row["rate"] = summary.get("sub_rate")
            # each request and each reply is one message through the server
            row["routed"] = 2 * (summary.get("delivered") or 0)
        elif ns > 0:
            row["rate"] = summary.get("sub_rate")
            row["routed"] = summary.get("delivered") or 0
        else:
            row["rate"] = summary.get("pub_rate")
            row["routed"] = summary.get("published") or 0
        lat = summary.get("latency")
        if lat:
            for k in ("p50_us", "p90_us", "p99_us", "p999_us", "max_us"):
                row[k] = lat.get(k)
        if None not in cpu0 and None not in cpu1:
            deltas = [c1 - c0 for c0, c1 in zip(cpu0, cpu1)]
            # routed: both nodes' utime+stime, per message delivered to the clients
            row["cpu_s"] = round(sum(deltas), 3)
            if row["routed"]:
                row["cpu_us_per_msg"] = round(sum(deltas) * 1e6 / row["routed"], 4)
            if None not in sys0 and None not in sys1:
                sys_s = sum(b - a for a, b in zip(sys0, sys1))
                row["cpu_sys_s"] = round(sys_s, 3)
                if row["routed"]:
                    row["cpu_sys_us_per_msg"] = round(sys_s * 1e6 / row["routed"], 4)
            if routed:
                for (label, _, _), d, kib in zip(nodes, deltas, rss):
                    k = label.lower()
                    row["cpu_%s_s" % k] = round(d, 3)
                    row["rss_%s_kib" % k] = kib
                    if row["routed"]:
                        row["cpu_%s_us_per_msg" % k] = round(d * 1e6 / row["routed"], 4)
        return row
    finally:
        stop(helper)
        for _, srv, _ in reversed(nodes):
            stop(srv)
        row["wall_s"] = round(time.monotonic() - t_start, 2)


def cut_log(path):
    """The server's first log line about a slow consumer, without pid and time stamp."""
    try:
        with open(path, "rb") as f:
            for raw in f:
                line = raw.decode(errors="replace").strip()
                if "slow consumer" in line.lower():
                    # "[pid] 2026/11/26 14:30:38.398100 [INF] 127.0.0.1:43614 - cid:6 - text"
                    for tag in ("[INF]", "[WRN]", "[ERR]", "[DBG]", "[TRC]"):
                        if tag in line:
                            line = line[line.index(tag):]
                            break
                    # the client's address and cid differ run by run
                    parts = line.split(" - ")
                    if len(parts) > 2 and parts[1].startswith("cid:"):
                        rest = [p for p in parts[2:] if not p.startswith('"')]  # client name
                        line = parts[0].split(" ", 1)[0] + " … - " + " - ".join(rest)
                    return line
    except OSError:
        pass
    return ""


def one_line(text):
    return " ".join(text.split())


def read_line_with_timeout(proc, timeout):
    import selectors
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if sel.select(timeout=0.2):
            line = proc.stdout.readline()
            sel.close()
            return line.strip()
        if proc.poll() is not None:
            break
    sel.close()
    return ""


def helper_err(proc):
    try:
        stop(proc)
        return (proc.stderr.read() or "").strip()[-300:]
    except (OSError, ValueError):
        return ""


def tail(path, n=400):
    try:
        with open(path, "rb") as f:
            whole = f.read()
        data = whole[-n:]
        if len(whole) > n and b"\n" in data[:-1]:
            data = data[data.index(b"\n") + 1:]  # start at a line
        return data.decode(errors="replace").strip()
    except OSError:
        return ""


def versions(cfg, servers):
    v = {}
    v["ringnats"] = git_commit()
    v["nats-server"] = sh_out([cfg.nats_server, "--version"]) if cfg.nats_server else "not installed"
    if any(s[0] == "gnatsd" for s in servers):
        v["gnatsd"] = sh_out([cfg.gnatsd, "-v"]) or "unknown"
    go = shutil.which("go")
    v["go"] = sh_out([go, "version"]) if go else "not installed"
    v["rustc"] = sh_out(["rustc", "--version"]) or "unknown"
    return v


def fmt_rate(x):
    if x is None:
        return "-"
    if x >= 1e6:
        return "%.2fM" % (x / 1e6)
    if x >= 1e3:
        return "%.1fk" % (x / 1e3)
    return "%.0f" % x


def aggregate(rows):
    """(case, gen, server) -> stats over the successful repetitions."""
    groups = {}
    for r in rows:
        groups.setdefault((r["case"], r["gen"], r["server"]), []).append(r)
    agg = {}
    for key, rs in groups.items():
        good = [r for r in rs if r["ok"] and r.get("rate")]
        a = {"runs": len(rs), "failed": len(rs) - len(good)}
        if good:
            rates = [r["rate"] for r in good]
            a["median"] = statistics.median(rates)
            a["min"] = min(rates)
            a["max"] = max(rates)
            for k in ("rss_kib", "cpu_us_per_msg", "cpu_sys_us_per_msg", "p50_us", "p90_us", "p99_us", "p999_us", "max_us",
                      "cpu_a_us_per_msg", "cpu_b_us_per_msg", "rss_a_kib", "rss_b_kib",
                      "pub_rate", "sub_rate", "stuck_cut_s"):
                vals = [r[k] for r in good if r.get(k) is not None]
                a[k] = statistics.median(vals) if vals else None
            cuts = [r["stuck_cut_s"] for r in good if r.get("stuck_cut_s") is not None]
            a["cut_range"] = (min(cuts), max(cuts)) if cuts else None
            a["cut_runs"] = len(cuts)
            a["cut_log"] = next((r["cut_log"] for r in good if r.get("cut_log")), "")
        errs = [r["error"] for r in rs if not r["ok"] and r.get("error")]
        a["first_error"] = errs[0] if errs else ""
        agg[key] = a
    return agg


def ratio(a, b):
    if not a or not b or not a.get("median") or not b.get("median"):
        return "-"
    return "%.2f" % (a["median"] / b["median"])


def markdown(cfg, rows, meta, svg_rel, csv_rel):
    agg = aggregate(rows)
    servers = meta["servers"]
    gens = meta["gens"]
    L = []
    L.append("## %s — commit %s" % (meta["date"], meta["versions"]["ringnats"]))
    L.append("")
    L.append("- Machine: %s CPUs (%s), %s RAM; kernel %s" % (meta["nproc"], meta["cpu"], meta["mem"], meta["kernel"]))
    vs = meta["versions"]
    parts = ["ringnats `%s`" % vs["ringnats"], "nats-server `%s`" % vs["nats-server"]]
    if "gnatsd" in vs:
        parts.append("gnatsd `%s`" % vs["gnatsd"])
    else:
        parts.append("gnatsd: not run")
    parts.append("Go `%s`" % vs["go"])
    if meta.get("go_client"):
        parts.append("nats.go `%s`" % meta["go_client"])
    parts.append("`%s`" % vs["rustc"])
    L.append("- Versions: " + ", ".join(parts))
    L.append("- Command: `%s`" % meta["command"])
    L.append("- SCALE=%s, REPS=%d, generators: %s, pinning: %s, total time %.0f s" % (
        cfg.scale, cfg.reps, ", ".join(gens),
        "server on CPU 0, generator on CPU 1" if cfg.pin else "none (scheduler places server and generator)",
        meta["elapsed"]))
    L.append("- Raw data: [%s](%s); plot: ![plot](%s)" % (os.path.basename(csv_rel), csv_rel, svg_rel))
    L.append("- Rate is delivered msgs/s summed over subscribers (published msgs/s for pub-only cases, "
             "requests/s for reqrep); median of the repetitions with (min–max). CPU is the server's "
             "utime+stime per message it routed (µs/msg = CPU s per million msgs); RSS is its VmHWM.")
    if any(c[0] in STUCK_TWIN for c in cfg.cases):
        L.append("- Stuck cases: %s runs one publisher, one healthy subscriber and one subscriber that "
                 "subscribes, then never reads (raw socket, SO_RCVBUF 4 KiB), all on default server options; "
                 "its twin is the same without the stuck one, run back to back on the same server and "
                 "generator (order swapped each repetition). Rate is the healthy subscriber's; the stuck one "
                 "is not counted. See \"stuck subscriber: with / without\" below."
                 % ", ".join(c[0] for c in cfg.cases if c[0] in STUCK_TWIN))
    if any(c[0] in ROUTED for c in cfg.cases):
        L.append("- Routed cases: two fresh nodes of the same server joined by one route (B solicits A), "
                 "publishers/requesters on A, subscribers/responders on B; the load starts once a probe "
                 "published on A reaches B. CPU is **both nodes'** utime+stime per delivered message "
                 "(request + reply for routedreq); RSS is **the sum** of both nodes' VmHWM.")
    L.append("")
    # overview of ratios
    L.append("| case | " + " | ".join(
        "%s ringnats/nats-server" % g + (" | %s ringnats/gnatsd" % g if "gnatsd" in servers else "")
        for g in gens) + " |")
    L.append("|---|" + "---|" * (len(gens) * (2 if "gnatsd" in servers else 1)))
    for case in [c[0] for c in cfg.cases]:
        cells = []
        for g in gens:
            rn = agg.get((case, g, "ringnats"))
            cells.append(ratio(rn, agg.get((case, g, "nats-server"))))
            if "gnatsd" in servers:
                cells.append(ratio(rn, agg.get((case, g, "gnatsd"))))
        L.append("| %s | %s |" % (case, " | ".join(cells)))
    L.append("")
    for case in cfg.cases:
        name, np_, ns, base, size, extra = case
        msgs = scaled(base, cfg.scale, np_)
        desc = "np=%d ns=%d n=%d size=%d B" % (np_, ns, msgs, size)
        if extra:
            desc += " " + " ".join("%s=%s" % kv for kv in sorted(extra.items()))
        L.append("### %s (%s)" % (name, desc))
        L.append("")
        is_req = bool(extra.get("req"))
        routed = name in ROUTED
        if routed:
            head = ("| server | gen | msgs/s median (min–max) | vs nats-server | vs gnatsd | peak RSS MiB A+B "
                    "| CPU µs/msg A+B | CPU A / B |")
            sep = "|---|---|---|---|---|---|---|---|"
        else:
            head = "| server | gen | msgs/s median (min–max) | vs nats-server | vs gnatsd | peak RSS MiB | CPU µs/msg (sys) |"
            sep = "|---|---|---|---|---|---|---|"
        if is_req:
            head += " p50 µs | p90 µs | p99 µs | p99.9 µs | max µs |"
            sep += "---|---|---|---|---|"
        head += " failed |"
        sep += "---|"
        L.append(head)
        L.append(sep)
        srv_order = list(servers) + (["ceiling"] if name in PUB_ONLY and cfg.ceiling else [])
        for g in gens:
            for s in srv_order:
                a = agg.get((name, g, s))
                if not a:
                    continue
                if a.get("median"):
                    cell = "%s (%s–%s)" % (fmt_rate(a["median"]), fmt_rate(a["min"]), fmt_rate(a["max"]))
                else:
                    cell = "failed"
                rss = "%.1f" % (a["rss_kib"] / 1024) if a.get("rss_kib") else "-"
                cpu = "%.3f" % a["cpu_us_per_msg"] if a.get("cpu_us_per_msg") is not None else "-"
                if a.get("cpu_sys_us_per_msg") is not None:
                    cpu += " (sys %.3f)" % a["cpu_sys_us_per_msg"]
                line = "| %s | %s | %s | %s | %s | %s | %s |" % (
                    s, g, cell, ratio(a, agg.get((name, g, "nats-server"))),
                    ratio(a, agg.get((name, g, "gnatsd"))), rss, cpu)
                if routed:
                    line += " %s / %s |" % (fmt_num(a.get("cpu_a_us_per_msg"), "%.3f"),
                                            fmt_num(a.get("cpu_b_us_per_msg"), "%.3f"))
                if is_req:
                    line += "".join(" %s |" % fmt_num(a.get(k), "%.1f")
                                    for k in ("p50_us", "p90_us", "p99_us", "p999_us", "max_us"))
                failed = "%d/%d" % (a["failed"], a["runs"])
                if a["failed"] and a.get("first_error"):
                    failed += " (%s)" % a["first_error"][:120].replace("|", "/").replace("\n", " ")
                line += " %s |" % failed
                L.append(line)
        L.append("")
    L.extend(hop_cost(cfg, agg, servers, gens))
    L.extend(stuck_ratios(cfg, agg, servers, gens))
    return "\n".join(L) + "\n"


def fmt_num(v, f):
    return f % v if v is not None else "-"


def hop_cost(cfg, agg, servers, gens):
    """Markdown lines comparing each routed case with its single-node twin."""
    names = [c[0] for c in cfg.cases]
    pairs = [(r, TWIN[r]) for r in names if r in TWIN]
    if not pairs:
        return []
    case_ns = {c[0]: c[2] for c in CASES}
    L = ["### route hop cost", "",
         "Each routed case against its single-node twin from the same run (same clients and sizes). "
         "CPU µs/msg: routed = node A + node B, single = the one server, both per delivered message "
         "(request + reply for the req cases). Hop = routed − single; per crossing = hop × subscribers "
         "(with fan-out each published message crosses the route once and B fans it out; "
         "each request and each reply cross once).", "",
         "| routed case | twin | server | gen | rate routed / single | CPU µs/msg routed | single "
         "| hop µs/msg | hop µs per crossing | p50 µs routed / single |",
         "|---|---|---|---|---|---|---|---|---|---|"]
    summary = []
    for rcase, tcase in pairs:
        is_req = rcase == "routedreq"
        per_cross = 1 if is_req else case_ns[rcase]
        for g in gens:
            for s in servers:
                a, t = agg.get((rcase, g, s)), agg.get((tcase, g, s))
                if not a or not a.get("median"):
                    continue
                rc, tc = a.get("cpu_us_per_msg"), (t or {}).get("cpu_us_per_msg")
                hop = rc - tc if rc is not None and tc is not None else None
                p50 = "-"
                if is_req and a.get("p50_us") is not None:
                    p50 = "%.1f / %s" % (a["p50_us"], fmt_num((t or {}).get("p50_us"), "%.1f"))
                L.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                    rcase, tcase if t else "%s (not run)" % tcase, s, g, ratio(a, t), fmt_num(rc, "%.3f"),
                    fmt_num(tc, "%.3f"), fmt_num(hop, "%+.3f"),
                    fmt_num(hop * per_cross if hop is not None else None, "%+.3f"), p50))
                if rcase == "routed1to1_16" and hop is not None:
                    summary.append("%s/%s %+.3f µs CPU per message crossing (%.3f → %.3f µs/msg, rate ×%s)"
                                   % (s, g, hop, tc, rc, ratio(a, t)))
                if is_req and a.get("p50_us") is not None and t and t.get("p50_us") is not None:
                    summary.append("%s/%s request/reply p50 %+.1f µs" % (s, g, a["p50_us"] - t["p50_us"]))
    L.append("")
    if summary:
        L.append("Route hop cost (routed1to1_16 vs 1to1_16; routedreq vs reqrep): " + "; ".join(summary) + ".")
        L.append("")
    return L


def med_ratio(a, b, k):
    """Median of `k` in a over its median in b, as text."""
    x, y = (a or {}).get(k), (b or {}).get(k)
    return "%.2f" % (x / y) if x and y else "-"


def stuck_ratios(cfg, agg, servers, gens):
    """Markdown lines: each stuck case against its twin without the stuck subscriber."""
    names = [c[0] for c in cfg.cases]
    pairs = [(s, STUCK_TWIN[s]) for s in names if s in STUCK_TWIN and STUCK_TWIN[s] in names]
    if not pairs:
        return []
    L = ["### stuck subscriber: with / without", "",
         "Publisher rate (published msgs / time to its final PONG or flush) and the healthy subscriber's "
         "delivered rate (msgs / time to its last message; it must receive every message), with the stuck "
         "subscriber and without it. Ratio = median over the repetitions of the rate with it ÷ median of "
         "the rate without it, same server, same generator, same run (target for ringnats: ≥ 0.9). "
         "Cut = when the server was seen to close the stuck connection, seconds after the start line "
         "(its end of the connection in /proc/net/tcp left ESTABLISHED or lost its owner; nothing is read "
         "from the stuck socket), median (min–max) over the runs where it was cut during the run.", "",
         "| case | server | gen | pub msgs/s with | without | pub with/without | sub msgs/s with | without "
         "| sub with/without | stuck cut at s | peak RSS MiB with / without | server log on the cut | failed |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    summary = []
    for scase, tcase in pairs:
        for g in gens:
            for s in servers:
                a, t = agg.get((scase, g, s)), agg.get((tcase, g, s))
                if not a and not t:
                    continue
                a, t = a or {}, t or {}
                pr, sr = med_ratio(a, t, "pub_rate"), med_ratio(a, t, "sub_rate")
                if a.get("cut_range"):
                    lo, hi = a["cut_range"]
                    cut = "%.2f (%.2f–%.2f)" % (a["stuck_cut_s"], lo, hi)
                    if a["cut_runs"] < a["runs"] - a["failed"]:
                        cut += " in %d of %d runs" % (a["cut_runs"], a["runs"] - a["failed"])
                elif a.get("median"):
                    cut = "not cut during the run"
                else:
                    cut = "-"
                rss = "%s / %s" % (fmt_num(a["rss_kib"] / 1024 if a.get("rss_kib") else None, "%.1f"),
                                   fmt_num(t["rss_kib"] / 1024 if t.get("rss_kib") else None, "%.1f"))
                failed = "%d/%d, %d/%d" % (a.get("failed", 0), a.get("runs", 0), t.get("failed", 0), t.get("runs", 0))
                err = a.get("first_error") or t.get("first_error")
                if (a.get("failed") or t.get("failed")) and err:
                    failed += " (%s)" % err[:120].replace("|", "/").replace("\n", " ")
                L.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                    scase, s, g, fmt_rate(a.get("pub_rate")), fmt_rate(t.get("pub_rate")), pr,
                    fmt_rate(a.get("sub_rate")), fmt_rate(t.get("sub_rate")), sr, cut, rss,
                    (a.get("cut_log") or "-").replace("|", "/")[:140], failed))
                summary.append("%s/%s pub ×%s, sub ×%s" % (s, g, pr, sr))
    L.append("")
    L.append("Stuck subscriber, rate with ÷ without (publisher, healthy subscriber): " + "; ".join(summary) + ".")
    L.append("")
    return L


def write_csv(path, rows):
    import csv
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_FIELDS})


def command_line():
    keys = ["SCALE", "REPS", "CASES", "ROUTED_TWINS", "GEN", "SERVERS", "PIN", "CEILING", "TIMEOUT",
            "GNATSD_BIN", "RINGNATS_BIN", "BASE_BIN", "RINGNATS_ARGS", "BENCH_BIN", "SINK_BIN", "GOBENCH_BIN"]
    parts = ["%s=%s" % (k, shlex.quote(os.environ[k])) for k in keys if os.environ.get(k)]
    parts.append(os.environ.get("COMPARE_ARGV0", "perf/compare"))
    return " ".join(parts)


def main():
    cfg = Config()
    servers = pick_servers(cfg)
    gens = pick_gens(cfg)
    if not servers:
        sys.exit("no server to benchmark")
    if not gens:
        sys.exit("no load generator available")
    ceiling = None
    if cfg.ceiling and any(c[0] in PUB_ONLY for c in cfg.cases):
        if executable(cfg.sink):
            ceiling = ("ceiling", [cfg.sink])
        else:
            log("ringnats-sink not found at %s: no ceiling rows" % cfg.sink)
    if cfg.pin and not shutil.which("taskset"):
        log("PIN=1 but taskset is missing: running unpinned")
        cfg.pin = False
    if cfg.pin and (os.cpu_count() or 1) < 2:
        log("PIN=1 needs 2 CPUs: running unpinned")
        cfg.pin = False
    if any(c[5].get("idle") for c in cfg.cases) and "ours" not in gens and not executable(cfg.bench):
        log("idle1k needs ringnats-bench for its idle-connection helper")
    os.makedirs(RESULTS, exist_ok=True)
    now = datetime.datetime.now()
    commit = git_commit()
    run_id = "%s-%s" % (now.strftime("%Y%m%d-%H%M%S"), commit)
    csv_path = os.path.join(RESULTS, run_id + ".csv")
    svg_path = os.path.join(RESULTS, run_id + ".svg")

    plan = []
    by_name = {c[0]: c for c in cfg.cases}
    # A stuck case and its twin run back to back on each server and generator, the
    # order swapped every repetition, so the with/without ratio sees the same machine.
    paired = {STUCK_TWIN[n]: n for n in by_name if n in STUCK_TWIN and STUCK_TWIN[n] in by_name}
    for rep in range(1, cfg.reps + 1):
        for case in cfg.cases:
            if case[0] in paired:
                continue
            variants = [case]
            if case[0] in STUCK_TWIN and STUCK_TWIN[case[0]] in by_name:
                variants.append(by_name[STUCK_TWIN[case[0]]])
                if rep % 2 == 0:
                    variants.reverse()
            for gen in gens:
                if case[5].get("idle") and not executable(cfg.bench):
                    continue
                srvs = [s for s in servers if s[0] not in MIXED or case[0] in ROUTED]
                if ceiling and case[0] in PUB_ONLY:
                    srvs.append(ceiling)
                for s in srvs:
                    for v in variants:
                        plan.append((rep, v, gen, s))
    log("benchmark %s: %d runs (%d cases x %s x %s, REPS=%d, SCALE=%s)" % (
        run_id, len(plan), len(cfg.cases), "/".join(gens),
        "/".join(s[0] for s in servers) + ("/ceiling" if ceiling else ""), cfg.reps, cfg.scale))
    t0 = time.monotonic()
    rows = []
    with tempfile.TemporaryDirectory(prefix="ringnats-perf-") as tmpdir:
        for i, (rep, case, gen, server) in enumerate(plan, 1):
            row = run_one(cfg, server, gen, case, rep, tmpdir)
            row["run"] = run_id
            row["started"] = datetime.datetime.now().strftime("%H:%M:%S")
            rows.append(row)
            if row["ok"]:
                extra = ""
                if row.get("p50_us") is not None:
                    extra = " p50 %.1f us p99 %.1f us" % (row["p50_us"], row["p99_us"] or 0)
                if case[0] in STUCK_TWIN or case[0] in STUCK_TWIN.values():
                    extra = " pub %s msgs/s" % fmt_rate(row.get("pub_rate"))
                    if row.get("stuck"):
                        extra += ", stuck cut %s" % (
                            "at %.2f s" % row["stuck_cut_s"] if row.get("stuck_cut_s") is not None
                            else "not seen" if row.get("stuck_cut") == 0 else "unobservable")
                log("[%3d/%d] rep%d %-10s %-4s %-11s %9s msgs/s  rss %6.1f MiB  cpu %s us/msg%s" % (
                    i, len(plan), rep, case[0], gen, server[0], fmt_rate(row["rate"]),
                    (row.get("rss_kib") or 0) / 1024,
                    "%.3f" % row["cpu_us_per_msg"] if row.get("cpu_us_per_msg") is not None else "-", extra))
            else:
                log("[%3d/%d] rep%d %-10s %-4s %-11s FAILED (%s): %s" % (
                    i, len(plan), rep, case[0], gen, server[0], row["failure"], row["error"][:300]))
            write_csv(csv_path, rows)
    go_client = next((r["client_version"] for r in rows if r.get("client_version")), None)
    elapsed = time.monotonic() - t0
    meta = {
        "date": now.strftime("%Y-%m-%d %H:%M"),
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "mem": mem_total(),
        "kernel": platform.release(),
        "versions": versions(cfg, servers),
        "command": command_line(),
        "servers": [s[0] for s in servers],
        "gens": gens,
        "elapsed": elapsed,
        "go_client": go_client,
    }
    write_csv(csv_path, rows)
    try:
        sys.path.insert(0, PERF)
        import plot
        plot.render(csv_path, svg_path, title="ringnats %s" % run_id)
    except Exception as e:  # the report is still useful without the plot
        log("plot failed: %s" % e)
    md = markdown(cfg, rows, meta, os.path.relpath(svg_path, PERF), os.path.relpath(csv_path, PERF))
    md_path = os.path.join(PERF, "RESULTS.md")
    new = not os.path.exists(md_path)
    with open(md_path, "a") as f:
        if new:
            f.write("# ringnats benchmark results\n\nEach section is appended by `perf/compare`.\n\n")
        f.write(md)
    failed = sum(1 for r in rows if not r["ok"])
    log("")
    log(md)
    log("wrote %s, %s and a section in %s (%d of %d runs failed, %.0f s)" % (
        os.path.relpath(csv_path, ROOT), os.path.relpath(svg_path, ROOT),
        os.path.relpath(md_path, ROOT), failed, len(rows), elapsed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
