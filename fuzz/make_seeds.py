#!/usr/bin/env python3
"""Writes the committed seed corpora: fuzz/corpus/<target>/seed-<name>.

Each seed is a small scenario spelled out with the input layout the targets decode
(fuzz/src/conn_ops.rs `decode`, fuzz/src/sublist_ops.rs `decode`). Run it again after
changing a layout; `cargo test --test fuzz_corpus` replays the seeds.
"""
import os

HERE = os.path.dirname(os.path.abspath(__file__))

# ---------------------------------------------------------------------------------
# conn_ops

SUB_SUBJECTS = ["a", "b", "a.b", "a.c", "b.c", "a.b.c", "*", ">", "a.*", "*.b", "a.>", "*.*",
                "a.*.c", "a.b.>", "_INBOX.r1", "_INBOX.*", "_INBOX.>", "a*.b", "a..b", "a.>.b",
                ".a", "a."]
PUB_SUBJECTS = ["a", "b", "a.b", "a.c", "b.c", "a.b.c", "c", "a.b.c.d", "_INBOX.r1", "_INBOX.r2",
                "a*.b", "a.*", "a..b", "_SYS.x", ">"]
REPLIES = ["_INBOX.r1", "_INBOX.r2", "a.b", "c"]
QUEUES = ["q1", "q2"]
RSIDS = ["RSID:9:1", "RSID:9:2", "RSID:9:3", "QRSID:9:4", "QRSID:9:5"]


def opt(xs, v):
    return len(xs) if v is None else xs.index(v)


def header(cluster=False, auth=False, clients=3, cache=0, small=0, sizes=0):
    flags = int(cluster) | int(auth) << 1 | (clients - 3) << 2 | cache << 4
    return [flags, small, sizes]


def cut(kind=None, at=0):
    return {None: [0], "at": [4, at], "bytes": [7]}[kind]


# client ops (kind byte + args); in a batch the same bytes are used.
def sub(subj, sid, q=None):
    return [0, SUB_SUBJECTS.index(subj), opt(QUEUES, q), sid - 1]


def unsub(sid, max=None, zero=False):
    m = 1 if zero else (0 if max is None else max + 1)
    return [2, sid - 1, m]


def pub(subj, n=3, fill=ord("x"), reply=None):
    return [3, PUB_SUBJECTS.index(subj), opt(REPLIES, reply), n, fill]


def hpub(subj, n=3, fill=ord("y"), reply=None, hdrs=1):
    return [5, PUB_SUBJECTS.index(subj), opt(REPLIES, reply), hdrs, n, fill]


def connect(verbose=False, pedantic=False, echo=True, headers=False, no_responders=False,
            protocol=1, token_ok=True, bad_json=False):
    f = int(verbose) | int(pedantic) << 1 | int(not echo) << 2 | int(headers) << 3 \
        | int(no_responders) << 4 | {1: 0, 0: 1, 2: 3}[protocol] << 5
    g = 14 if bad_json else (15 if not token_ok else 0)
    return [6, f, g]


PING = [7]
PONG = [8]


def garbage(first=0, rest=b""):
    return [9, first, len(rest)] + list(rest)


# steps
def client(c, op, how=None, at=0):
    return [0, c] + op + cut(how, at)


def batch(c, ops, how=None, at=0):
    out = [6, c, len(ops) - 2]
    for op in ops:
        out += op
    return out + cut(how, at)


def close(c):
    return [8, c]


def open_(c):
    return [9, c]


def stall(c):
    return [10, c]


def tick(ms):
    return [11, 0, ms // 10]


ROUTE_OPEN = [14, 0]
ROUTE_CLOSE = [15, 0]


def route(ops, how=None, at=0):
    out = [12, 0, len(ops) - 1]
    for op in ops:
        out += op
    return out + cut(how, at)


def rsub(subj, rsid, q=None):
    return [0, SUB_SUBJECTS.index(subj), opt(QUEUES, q), RSIDS.index(rsid)]


def runsub(rsid, max=0):
    return [2, RSIDS.index(rsid), max]


def rmsg_rsid(subj, rsid, n=3, reply=None):
    return [3, PUB_SUBJECTS.index(subj), 0, RSIDS.index(rsid), opt(REPLIES, reply), n, ord("r")]


def rmsg_qrsid(subj, slot, sid, n=3, old=False):
    # who: even = current cid of slot who/2, odd = the (who/2)-th cid ever handed out
    who = slot * 2 + (1 if old else 0)
    return [3, PUB_SUBJECTS.index(subj), 3, who, sid - 1, opt(REPLIES, None), n, ord("q")]


def rmsg_bad(subj, which=0):
    return [3, PUB_SUBJECTS.index(subj), 7, which, opt(REPLIES, None), 2, ord("b")]


RPING = [7]
RPONG = [8]


QUIET = connect()

CONN_SEEDS = {
    "pubsub": header() + client(0, QUIET) + client(1, QUIET)
    + client(0, sub("a.b", 1)) + client(0, sub("a.*", 2)) + client(0, sub(">", 3))
    + client(1, pub("a.b")) + client(1, pub("a.c", reply="_INBOX.r1"))
    + client(1, pub("b")),
    "verbose_pedantic": header() + client(0, sub("a", 1)) + client(0, pub("a.*"))
    + client(0, pub("a")) + client(0, pub("_SYS.x")) + client(0, sub("a..b", 2))
    + client(0, unsub(9 % 5 + 1)) + client(0, PING),
    "queue_groups": header(clients=5) + client(0, QUIET) + client(1, QUIET) + client(2, QUIET)
    + client(0, sub("a.>", 1, "q1")) + client(1, sub("a.b", 1, "q1")) + client(2, sub("*.b", 1, "q2"))
    + client(2, sub("a.b", 2)) + batch(3, [pub("a.b"), pub("a.b"), pub("a.b"), pub("a.c")])
    + close(1) + client(3, pub("a.b")),
    "auto_unsub": header() + client(0, QUIET) + client(0, sub("a", 1)) + client(0, unsub(1, 2))
    + client(1, pub("a")) + client(1, pub("a")) + client(1, pub("a"))
    + client(0, unsub(1, 5)) + client(0, sub("a", 1)) + client(1, pub("a"))
    + client(0, sub("b", 2)) + client(1, pub("b")) + client(0, unsub(2, 1))
    + client(0, unsub(2, zero=True)) + client(1, pub("b")),
    "echo_off_headers": header() + client(0, connect(echo=False, headers=True))
    + client(1, connect(headers=False)) + client(0, sub(">", 1)) + client(1, sub("a", 1))
    + client(0, hpub("a", hdrs=2)) + client(1, hpub("a")) + client(0, pub("a")),
    "no_responders": header() + client(0, connect(headers=True, no_responders=True))
    + client(0, sub("_INBOX.r1", 1)) + client(0, pub("a", reply="_INBOX.r1"))
    + client(1, sub("a", 1, "q1")) + client(0, pub("a", reply="_INBOX.r1"))
    + client(2, connect(no_responders=True)),
    "errors": header() + client(0, garbage(0, b"abc")) + client(1, pub("a", n=210))
    + client(2, connect(protocol=2)) + open_(0) + open_(1) + open_(2)
    + client(0, connect(bad_json=True)) + client(1, hpub("a")),
    "batch_cuts": header() + client(0, QUIET) + client(1, QUIET)
    + batch(0, [sub("a", 1), sub("b", 2, "q1"), pub("a"), unsub(1, 1)], "at", 7)
    + batch(1, [pub("a"), pub("b", n=150), pub("a"), PING], "bytes")
    + batch(1, [pub("b"), pub("b"), sub("b", 3)], "at", 200),
    "keepalive": header() + client(0, QUIET) + tick(1000) + tick(1000) + client(0, PONG)
    + tick(1000) + tick(1000) + tick(1000) + tick(1000),
    "auth": header(auth=True) + client(0, QUIET) + client(1, pub("a")) + client(2, connect(token_ok=False))
    + client(0, sub("a", 1)) + open_(1) + tick(1600),
    "slow_consumer": header(small=0b010, sizes=0b0000) + client(0, QUIET) + client(1, QUIET)
    + client(1, sub(">", 1)) + client(2, QUIET) + client(2, sub(">", 1))
    + client(0, pub("a", n=210)) + client(0, pub("a", n=150)) + client(1, QUIET),
    "stuck_reader": header(small=0b100, sizes=0b100000) + client(0, QUIET) + client(2, QUIET)
    + client(1, QUIET) + client(1, sub("a", 1, "q1")) + client(2, sub("a", 1, "q1"))
    + client(2, sub("a", 2)) + stall(2)
    + batch(0, [pub("a", n=150)] * 6) + batch(0, [pub("a", n=150)] * 6) + client(0, pub("a"))
    + stall(1) + client(0, pub("a")) + stall(1) + client(0, pub("a")),
    "route": header(cluster=True, clients=4) + client(0, QUIET) + client(1, QUIET)
    + client(0, sub("a.b", 1)) + client(0, sub("a.*", 2, "q1")) + client(0, unsub(2, 3)) + client(0, PING)
    + ROUTE_OPEN + client(1, sub("a", 1)) + client(2, sub("a.>", 7 % 5 + 1, "q1"))
    + route([rsub("a.b", "RSID:9:1"), rsub(">", "RSID:9:2"), rsub("a.b", "QRSID:9:4", "q1")])
    + client(1, pub("a.b")) + route([runsub("RSID:9:1", 1)]) + client(1, pub("a.b"))
    + route([rmsg_rsid("a.b", "RSID:9:3"), rmsg_qrsid("a.b", 0, 2), rmsg_bad("a.b")])
    + client(0, unsub(2)) + route([rmsg_qrsid("a.b", 0, 2), RPING]) + close(2)
    + route([rmsg_qrsid("a.c", 2, 3, old=True)]) + ROUTE_CLOSE + client(0, sub("b", 4)) + ROUTE_OPEN,
    "route_limits": header(cluster=True) + client(0, QUIET) + client(0, sub("a", 1))
    + client(0, unsub(1, 2)) + client(1, pub("a")) + ROUTE_OPEN + client(1, pub("a"))
    + client(0, sub("a", 2, "q2")) + client(0, unsub(2, 1)) + route([rmsg_qrsid("a", 0, 2)])
    + route([rmsg_qrsid("a", 0, 2)]) + tick(1000) + route([RPONG]) + tick(1000) + tick(1000) + tick(1000),
    "route_errors": header(cluster=True) + ROUTE_OPEN + route([[9, 0, 0]]) + ROUTE_OPEN
    + route([rsub("a", "RSID:9:1"), rsub("a", "RSID:9:1"), rsub("a..b", "RSID:9:2")])
    + client(0, pub("a")) + client(0, pub("_SYS.x")),
}

# ---------------------------------------------------------------------------------
# sublist_ops

SL_PATTERNS = ["a", "b", "a.b", "a.c", "b.c", "a.b.c", "*", ">", "a.*", "*.b", "a.>", "*.*",
               "a.*.c", "a.b.>", "a*", "a*.b", "a.>b", "a.*.b", "", "a..b", "a.>.b", ".a", "a."]
SL_SUBJECTS = ["a", "b", "c", "a.b", "a.c", "b.c", "a.b.c", "a.b.d", "a*", "a*.b", "a.>b", "a.*",
               ">", "a..b", "a.b.c.d", "b.b.b", "", "a.x.b"]


def sl_header(cache=0):
    return [cache]


def sl_insert(p, q=None):
    return [0, SL_PATTERNS.index(p), opt(["q1", "q2"], q)]


def sl_again(i):
    return [2, i]


def sl_remove(i):
    return [3, i]


def sl_batch(idx):
    return [4, len(idx)] + idx


def sl_match(s):
    return [5, SL_SUBJECTS.index(s)]


def sl_sweep():
    return [8]


# One reader held over a few ops: ("m", subject) lookup, ("i", pattern, queue) insert,
# ("r", index) remove.
def sl_reader(ops):
    out = [7, len(ops) - 1]
    for op in ops:
        if op[0] == "m":
            out += [2, SL_SUBJECTS.index(op[1])]
        elif op[0] == "i":
            out += [0, SL_PATTERNS.index(op[1]), opt(["q1", "q2"], op[2])]
        else:
            out += [1, op[1]]
    return out


SL_SEEDS = {
    "basic": sl_header(0) + sl_insert("a.b") + sl_insert("a.*") + sl_insert(">") + sl_match("a.b")
    + sl_match("a.b") + sl_remove(0) + sl_match("a.b") + sl_sweep() + sl_sweep(),
    "queues": sl_header(0) + sl_insert("a.*", "q1") + sl_insert("a.b", "q1") + sl_insert("a.b", "q2")
    + sl_insert("*.b") + sl_match("a.b") + sl_again(1) + sl_match("a.b") + sl_batch([0, 1, 1])
    + sl_match("a.b") + sl_sweep(),
    "tiny_cache": sl_header(2) + sl_insert("a.>") + sl_insert("*.b") + sl_insert("a")
    + sum([sl_match(s) for s in ["a.b", "a.c", "a.b", "b.c", "a.b", "a.c", "a", "a.b.c"]], [])
    + sl_remove(1) + sl_match("a.b") + sl_insert("a.b", "q2") + sl_match("a.b") + sl_sweep(),
    "uncached": sl_header(1) + sl_insert("*") + sl_insert("a*") + sl_insert("a.>b") + sl_match("a*")
    + sl_match("a.>b") + sl_match(">") + sl_sweep(),
    "reader": sl_header(3) + sl_insert("a.b") + sl_match("a.b")
    + sl_reader([("m", "a.b"), ("i", "a.*", "q1"), ("m", "a.b"), ("r", 0), ("m", "a.b"), ("m", "a.c")])
    + sl_match("a.b") + sl_sweep(),
    "invalid": sl_header(0) + sl_insert("") + sl_insert("a..b") + sl_insert("a.>.b") + sl_insert(".a")
    + sl_insert("a.") + sl_insert("a.b") + sl_match("a..b") + sl_sweep(),
}


def write(target, seeds):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for name in os.listdir(d):
        if name.startswith("seed-"):
            os.remove(os.path.join(d, name))
    for name, data in seeds.items():
        with open(os.path.join(d, "seed-" + name), "wb") as f:
            f.write(bytes(b % 256 for b in data))


if __name__ == "__main__":
    write("conn_ops", CONN_SEEDS)
    write("sublist_ops", SL_SEEDS)
    print(f"{len(CONN_SEEDS)} conn_ops seeds, {len(SL_SEEDS)} sublist_ops seeds")
