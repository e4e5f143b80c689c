#!/usr/bin/env python3
"""Records the nats-server 2.x route protocol on the wire, for tests/transcripts/.

Runs the real nats-server (default /usr/sbin/nats-server, 2.9.10 on Debian) on 127.0.0.1 and
plays a hand-driven fake route against it, in both directions (the fake dials the server, and
the server dials the fake), plus a raw client on the server's client port. Every frame that
crosses the fake route is written, in order, as one record:

    S: <bytes>   nats-server -> fake route
    F: <bytes>   fake route -> nats-server
    C: <bytes>   test client -> nats-server (client port)
    c: <bytes>   nats-server -> test client
    X: client    the test client closed its connection

with CR, LF and backslash escaped (\\r, \\n, \\\\). A record holds one whole frame (a control
line, plus its payload for RMSG/HMSG/MSG). Lines starting with '#' are comments.

Usage: capture.py [nats-server binary] (writes nats-server-<version>-*.txt beside this file).
Only processes this script started are stopped, by PID.
"""
import json, os, socket, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = sys.argv[1] if len(sys.argv) > 1 else "/usr/sbin/nats-server"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def esc(b):
    return b.decode("latin1").replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")


class Rec:
    def __init__(self, name):
        self.name = name
        self.lines = []

    def note(self, text):
        self.lines.append("# " + text)

    def add(self, who, frame):
        self.lines.append(f"{who}: {esc(frame)}")

    def save(self, version):
        path = os.path.join(HERE, f"nats-server-{version}-{self.name}.txt")
        with open(path, "w") as f:
            f.write("\n".join(self.lines) + "\n")
        print("wrote", path)


class Peer:
    """One side of a TCP connection that reads NATS frames."""

    def __init__(self, sock, rec, tag_in, tag_out):
        self.s = sock
        self.s.settimeout(5)
        self.buf = b""
        self.rec, self.tin, self.tout = rec, tag_in, tag_out

    def send(self, data):
        # record frame by frame
        rest = data
        while rest:
            f, rest2 = split_frame(rest)
            if f is None:
                f, rest2 = rest, b""
            self.rec.add(self.tout, f)
            rest = rest2
        self.s.sendall(data)

    def frame(self, timeout=5.0):
        end = time.time() + timeout
        while True:
            f, rest = split_frame(self.buf)
            if f is not None:
                self.buf = rest
                self.rec.add(self.tin, f)
                return f
            left = end - time.time()
            if left <= 0:
                return None
            self.s.settimeout(left)
            try:
                d = self.s.recv(65536)
            except socket.timeout:
                return None
            except ConnectionResetError:
                return b"<EOF>"
            if not d:
                return b"<EOF>"
            self.buf += d

    def until(self, pred, timeout=5.0, answer_ping=True):
        """Reads frames until pred(frame) is true; returns all frames read."""
        got = []
        end = time.time() + timeout
        while time.time() < end:
            f = self.frame(end - time.time())
            if f is None:
                break
            got.append(f)
            if answer_ping and f == b"PING\r\n":
                self.send(b"PONG\r\n")
            if f == b"<EOF>" or pred(f):
                return got
        return got

    def drain(self, t=0.5):
        return self.until(lambda f: False, timeout=t)

    def sync(self):
        """PING and read until PONG (frames before it are recorded)."""
        self.send(b"PING\r\n")
        return self.until(lambda f: f == b"PONG\r\n")


def split_frame(buf):
    i = buf.find(b"\r\n")
    if i < 0:
        return None, buf
    line = buf[: i + 2]
    parts = line.split()
    op = parts[0].upper() if parts else b""
    size = None
    if op in (b"RMSG", b"MSG", b"PUB", b"LMSG"):
        size = int(parts[-1])
    elif op in (b"HMSG", b"HPUB"):
        size = int(parts[-1])
    if size is None:
        return line, buf[i + 2 :]
    end = i + 2 + size + 2
    if len(buf) < end:
        return None, buf
    return buf[:end], buf[end:]


def start_server(rec, args):
    log = open(os.path.join("/tmp", f"capture-{rec.name}.log"), "w")
    p = subprocess.Popen([BIN] + args, stdout=log, stderr=log)
    rec.note("nats-server " + " ".join(args))
    return p


def wait_port(port, t=5):
    end = time.time() + t
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise SystemExit(f"port {port} not open")


def client(rec, port):
    s = socket.create_connection(("127.0.0.1", port))
    c = Peer(s, rec, "c", "C")
    c.frame()  # INFO
    c.send(b'CONNECT {"verbose":false,"pedantic":false,"protocol":1,"headers":true,"no_responders":true}\r\nPING\r\n')
    c.until(lambda f: f == b"PONG\r\n")
    return c


def stop(p):
    p.terminate()
    try:
        p.wait(5)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


FAKE_ID = "FAKEROUTE2X"


def fake_connect(cluster, extra=""):
    return ('CONNECT {"echo":true,"verbose":false,"pedantic":false,"tls_required":false,'
            '"headers":true,"name":"%s","cluster":"%s"%s}\r\n' % (FAKE_ID, cluster, extra)).encode()


def fake_info(route_port, client_port, cluster):
    return ('INFO {"server_id":"%s","server_name":"%s","version":"2.9.10","proto":1,"go":"go1.19",'
            '"host":"127.0.0.1","port":%d,"headers":true,"max_payload":1048576,"cluster":"%s",'
            '"connect_urls":["127.0.0.1:%d"]}\r\n' % (FAKE_ID, FAKE_ID, route_port, cluster, client_port)).encode()


def scenario_fake_dials(version):
    rec = Rec("fake-dials-server")
    cp, rp = free_port(), free_port()
    p = start_server(rec, ["-a", "127.0.0.1", "-p", str(cp), "--cluster", f"nats://127.0.0.1:{rp}",
                           "--cluster_name", "C1"])
    try:
        wait_port(cp)
        wait_port(rp)
        cl = client(rec, cp)
        rec.note("client: plain and queue interest before the route exists")
        cl.send(b"SUB foo 1\r\nSUB foo q 2\r\nSUB foo q 3\r\nPING\r\n")
        cl.until(lambda f: f == b"PONG\r\n")
        s = socket.create_connection(("127.0.0.1", rp))
        f = Peer(s, rec, "S", "F")
        rec.note("the accepting server sends its INFO at once")
        f.frame()
        f.send(fake_connect("C1"))
        f.send(fake_info(free_port(), free_port(), "C1"))
        rec.note("registration: the server sends its interest, aggregated (queue weight 2)")
        f.sync()
        f.drain(0.3)
        rec.note("client interest changes")
        cl.send(b"SUB bar 4\r\nSUB bar 5\r\nUNSUB 5\r\nUNSUB 3\r\nUNSUB 4\r\nSUB baz.* 6\r\nUNSUB 6 2\r\nPING\r\n")
        cl.until(lambda f: f == b"PONG\r\n")
        f.sync()
        rec.note("fake route interest: plain, queue with weight, $SYS")
        f.send(b"RS+ $G rq\r\nRS+ $G rq workers 3\r\nRS+ $SYS $SYS.REQ.X\r\n")
        f.sync()
        rec.note("client publishes: plain, with reply, with headers")
        cl.send(b"PUB rq 2\r\nhi\r\nPUB rq _INBOX.1 2\r\nhi\r\nHPUB rq _INBOX.2 12 14\r\nNATS/1.0\r\n\r\nhi\r\nPING\r\n")
        cl.until(lambda f: f == b"PONG\r\n")
        f.until(lambda fr: fr.startswith(b"HMSG"), timeout=2)
        rec.note("weight update, then queue-only interest")
        f.send(b"RS+ $G rq workers 1\r\nRS- $G rq\r\n")
        f.sync()
        cl.send(b"PUB rq 2\r\nq1\r\nPUB rq _INBOX.3 2\r\nq2\r\nPING\r\n")
        cl.until(lambda f: f == b"PONG\r\n")
        f.until(lambda fr: fr.startswith(b"RMSG") and b"_INBOX.3" in fr, timeout=2)
        rec.note("messages from the fake route: plain, reply, queue-directed, headers, $SYS")
        f.send(b"RMSG $G foo 2\r\nm1\r\nRMSG $G foo _R.1 2\r\nm2\r\nRMSG $G foo | q 2\r\nm3\r\n"
               b"RMSG $G foo + _R.2 q 2\r\nm4\r\nHMSG $G foo _R.3 12 14\r\nNATS/1.0\r\n\r\nm5\r\n"
               b"RMSG $SYS foo 2\r\nm6\r\nRMSG $G foo | nosuch 2\r\nm7\r\n")
        f.sync()
        cl.send(b"PING\r\n")
        cl.until(lambda f: f == b"PONG\r\n")
        rec.note("keepalive: the server pings the route")
        f.until(lambda fr: fr == b"PING\r\n", timeout=3)
        rec.note("client closes: its interest is withdrawn")
        cl.s.close()
        rec.lines.append("X: client")
        f.drain(0.5)
        rec.note("RS- for unknown interest and a malformed RS+")
        f.send(b"RS- $G nothing\r\nRS+ $G a b\r\n")
        f.until(lambda fr: False, timeout=1)
    finally:
        stop(p)
    rec.save(version)


def scenario_server_dials(version):
    rec = Rec("server-dials-fake")
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4)
    fp = lsock.getsockname()[1]
    cp, rp = free_port(), free_port()
    p = start_server(rec, ["-a", "127.0.0.1", "-p", str(cp), "--cluster", f"nats://127.0.0.1:{rp}",
                           "--cluster_name", "C1", "--routes", f"nats-route://127.0.0.1:{fp}"])
    try:
        wait_port(cp)
        cl = client(rec, cp)
        cl.send(b"SUB foo 1\r\nPING\r\n")
        cl.until(lambda f: f == b"PONG\r\n")
        lsock.settimeout(5)
        s, _ = lsock.accept()
        f = Peer(s, rec, "S", "F")
        rec.note("the dialling server sends CONNECT then INFO, without waiting for ours")
        f.frame()
        f.frame()
        f.drain(0.5)
        rec.note("our INFO arrives: registration")
        f.send(fake_info(fp, free_port(), "C1"))
        f.sync()
        f.drain(0.3)
        f.send(b"RS+ $G bar\r\n")
        f.sync()
        cl.send(b"HPUB bar 12 14\r\nNATS/1.0\r\n\r\nhi\r\nPING\r\n")
        cl.until(lambda f: f == b"PONG\r\n")
        f.until(lambda fr: fr.startswith(b"HMSG"), timeout=2)
    finally:
        stop(p)
        lsock.close()
    rec.save(version)


def scenario_names(version):
    rec = Rec("cluster-names")
    for label, server_args, connect in [
        ("configured C1, peer says C2", ["--cluster_name", "C1"], fake_connect("C2")),
        ("configured C1, 1.0-style CONNECT (no cluster field)", ["--cluster_name", "C1"],
         b'CONNECT {"verbose":false,"pedantic":false,"tls_required":false,"name":"FAKEROUTE2X"}\r\n'),
        ("dynamic name, 1.0-style CONNECT (no cluster field)", [],
         b'CONNECT {"verbose":false,"pedantic":false,"tls_required":false,"name":"FAKEROUTE2X"}\r\n'),
        ("dynamic name, peer names C9", [], fake_connect("C9")),
    ]:
        cp, rp = free_port(), free_port()
        rec.note("---- " + label)
        p = start_server(rec, ["-a", "127.0.0.1", "-p", str(cp), "--cluster", f"nats://127.0.0.1:{rp}"] + server_args)
        try:
            wait_port(cp)
            wait_port(rp)
            s = socket.create_connection(("127.0.0.1", rp))
            f = Peer(s, rec, "S", "F")
            f.frame()
            f.send(connect)
            f.send(fake_info(free_port(), free_port(), ""))
            f.send(b"PING\r\n")
            f.until(lambda fr: fr == b"PONG\r\n" or fr == b"<EOF>", timeout=3)
            f.drain(0.3)
        finally:
            stop(p)
    rec.save(version)


def scenario_gossip(version):
    rec = Rec("gossip")
    cp1, rp1, cp2, rp2 = free_port(), free_port(), free_port(), free_port()
    p1 = start_server(rec, ["-a", "127.0.0.1", "-p", str(cp1), "--cluster", f"nats://127.0.0.1:{rp1}",
                            "--cluster_name", "C1"])
    p2 = None
    try:
        wait_port(rp1)
        s = socket.create_connection(("127.0.0.1", rp1))
        f = Peer(s, rec, "S", "F")
        f.frame()
        f.send(fake_connect("C1"))
        f.send(fake_info(free_port(), free_port(), "C1"))
        f.sync()
        rec.note("a second nats-server joins the first: the fake route hears of it (gossip)")
        p2 = start_server(rec, ["-a", "127.0.0.1", "-p", str(cp2), "--cluster", f"nats://127.0.0.1:{rp2}",
                                "--cluster_name", "C1", "--routes", f"nats-route://127.0.0.1:{rp1}"])
        f.until(lambda fr: fr.startswith(b"INFO"), timeout=5)
        f.drain(0.5)
    finally:
        if p2:
            stop(p2)
        stop(p1)
    rec.save(version)


if __name__ == "__main__":
    out = subprocess.run([BIN, "--version"], capture_output=True, text=True).stdout
    version = out.strip().split("v")[-1]
    scenario_fake_dials(version)
    scenario_server_dials(version)
    scenario_names(version)
    scenario_gossip(version)
