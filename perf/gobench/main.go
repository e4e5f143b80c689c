// Command gobench is the Go-client side of the ringnats benchmark suite.
//
// It drives a NATS server with the official Go client (nats.go) and
// aggregates results with its bench package, using the same flags as
// nats-bench (-s -np -ns -n -ms -csv subject) plus -queue, -subjects, -req,
// -json, -timeout and -sub-url. Its output fields match ringnats-bench so both
// generators can be compared side by side.
//
// With -sub-url, subscribers and responders connect there while publishers
// and requesters stay on -s (two servers joined by a route); the load starts
// only after a probe message published on -s has reached every subscriber.
//
// With -tlsca FILE, every client connects with TLS (tls:// URLs too) and
// trusts the CA certificates in FILE; -stuck is plain TCP only.
//
// With -stuck N, N more subscribers on the same subject (raw TCP sockets with a
// small receive buffer, on -sub-url if given) send CONNECT, SUB and PING, read
// the PONG and then never read again. They are not counted; the summary says
// whether and when the server cut them, as seen in /proc/net/tcp without
// reading their data.
//
// Build (offline, Debian layout):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o perf/bin/gobench ./perf/gobench
package main

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/bench"
)

const stampLen = 12

type latency struct {
	Count  int     `json:"count"`
	MinUs  float64 `json:"min_us"`
	MeanUs float64 `json:"mean_us"`
	P50Us  float64 `json:"p50_us"`
	P90Us  float64 `json:"p90_us"`
	P99Us  float64 `json:"p99_us"`
	P999Us float64 `json:"p999_us"`
	MaxUs  float64 `json:"max_us"`
}

type summary struct {
	OK                bool     `json:"ok"`
	Error             string   `json:"error,omitempty"`
	Failure           string   `json:"failure,omitempty"`
	Generator         string   `json:"generator"`
	ClientVersion     string   `json:"client_version"`
	Mode              string   `json:"mode"`
	Server            string   `json:"server"`
	SubServer         string   `json:"sub_server,omitempty"`
	Subject           string   `json:"subject"`
	NP                int      `json:"np"`
	NS                int      `json:"ns"`
	Msgs              int      `json:"msgs"`
	Size              int      `json:"size"`
	Subjects          int      `json:"subjects"`
	Queue             string   `json:"queue,omitempty"`
	Published         uint64   `json:"published"`
	Delivered         uint64   `json:"delivered"`
	ExpectedDelivered uint64   `json:"expected_delivered"`
	Lost              uint64   `json:"lost"`
	Reordered         uint64   `json:"reordered"`
	DurationS         float64  `json:"duration_s"`
	PubDurationS      float64  `json:"pub_duration_s"`
	SubDurationS      float64  `json:"sub_duration_s"`
	PubRate           float64  `json:"pub_rate"`
	SubRate           float64  `json:"sub_rate"`
	PubMBs            float64  `json:"pub_mb_s"`
	SubMBs            float64  `json:"sub_mb_s"`
	Latency           *latency `json:"latency,omitempty"`
	// -stuck connections, how many of them the server cut during the run and
	// when the last of those was seen cut (seconds after the start).
	Stuck      int      `json:"stuck"`
	StuckCut   int      `json:"stuck_cut"`
	StuckCutS  *float64 `json:"stuck_cut_s"`
	StuckWatch string   `json:"stuck_watch,omitempty"`
	// With -tlsca: the protocol version and cipher suite of the first connection.
	TLS string `json:"tls,omitempty"`
}

type config struct {
	url      string
	subURL   string
	syncWait time.Duration
	np, ns   int
	msgs     int
	size     int
	csvFile  string
	queue    string
	subjects int
	req      bool
	jsonOut  bool
	timeout  time.Duration
	subject  string
	stuck    int
	rcvbuf   int
	tlsCA    string
}

var (
	tlsOnce sync.Once
	tlsInfo string
	cfg     config
	jsonOut bool
	failMu  sync.Mutex
	failMsg string
	failKnd string
)

func fail(kind, msg string) {
	failMu.Lock()
	defer failMu.Unlock()
	if failMsg == "" {
		failMsg, failKnd = msg, kind
	}
}

func exitCode(kind string) int {
	switch kind {
	case "verification":
		return 1
	case "timeout":
		return 3
	case "":
		return 0
	}
	return 4
}

// splitCount spreads total over n clients, the remainder to the first ones.
func splitCount(total, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = total / n
		if i < total%n {
			out[i]++
		}
	}
	return out
}

// connect opens a client connection to the publishers' server (-s).
func connect(name string) *nats.Conn {
	return connectTo(cfg.url, name)
}

// connectSub opens a subscriber or responder connection (-sub-url if given).
func connectSub(name string) *nats.Conn {
	if cfg.subURL != "" {
		return connectTo(cfg.subURL, name)
	}
	return connectTo(cfg.url, name)
}

func connectTo(url, name string) *nats.Conn {
	opts := []nats.Option{
		nats.Name(name),
		nats.NoReconnect(),
		nats.Timeout(5 * time.Second),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			fail("io", fmt.Sprintf("%s: async error: %v", name, err))
		}),
	}
	if cfg.tlsCA != "" {
		// Also turns TLS on for nats:// URLs; tls:// URLs need it for a private CA.
		opts = append(opts, nats.RootCAs(cfg.tlsCA))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		fail("io", fmt.Sprintf("%s: connect %s: %v", name, url, err))
		finish(nil)
	}
	if cfg.tlsCA != "" {
		tlsOnce.Do(func() {
			if cs, err := nc.TLSConnectionState(); err == nil {
				tlsInfo = tlsVersion(cs.Version) + " " + tls.CipherSuiteName(cs.CipherSuite)
			}
		})
	}
	return nc
}

// tlsVersion names a TLS version (tls.VersionName needs Go 1.21; Debian has 1.19).
func tlsVersion(v uint16) string {
	switch v {
	case tls.VersionTLS12:
		return "TLS 1.2"
	case tls.VersionTLS13:
		return "TLS 1.3"
	}
	return fmt.Sprintf("TLS 0x%04x", v)
}

func payload(size int) []byte {
	p := make([]byte, size)
	for i := range p {
		p[i] = byte('a' + i%26)
	}
	return p
}

func secs(start, end time.Time) float64 {
	if end.IsZero() {
		return 0
	}
	return end.Sub(start).Seconds()
}

func rate(n uint64, d float64) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d
}

// finish prints the summary and exits with the code of the first failure.
func finish(s *summary) {
	failMu.Lock()
	msg, kind := failMsg, failKnd
	failMu.Unlock()
	if s == nil {
		s = &summary{Server: cfg.url, SubServer: cfg.subURL, Subject: cfg.subject, NP: cfg.np, NS: cfg.ns, Msgs: cfg.msgs, Size: cfg.size}
	}
	s.SubServer = cfg.subURL
	s.TLS = tlsInfo
	s.Generator = "gobench"
	s.ClientVersion = nats.Version
	s.OK = msg == ""
	s.Error, s.Failure = msg, kind
	if jsonOut {
		b, _ := json.Marshal(s)
		fmt.Println(string(b))
	} else if s.Latency != nil {
		l := s.Latency
		fmt.Printf("gobench: np=%d ns=%d n=%d ms=%d: req %.0f req/s, latency us p50 %.1f p90 %.1f p99 %.1f p99.9 %.1f max %.1f, %.3f s\n",
			s.NP, s.NS, s.Msgs, s.Size, s.SubRate, l.P50Us, l.P90Us, l.P99Us, l.P999Us, l.MaxUs, s.DurationS)
	} else {
		fmt.Printf("gobench: np=%d ns=%d n=%d ms=%d: pub %.0f msgs/s (%.2f MB/s), sub %.0f msgs/s delivered (%.2f MB/s), %.3f s%s\n",
			s.NP, s.NS, s.Msgs, s.Size, s.PubRate, s.PubMBs, s.SubRate, s.SubMBs, s.DurationS, stuckText(s))
	}
	if msg != "" {
		fmt.Fprintf(os.Stderr, "gobench: FAILED (%s): %s\n", kind, msg)
	}
	os.Exit(exitCode(kind))
}

// syncSubs, with -sub-url, adds a probe subscription on every subscriber or
// responder connection after its own one. A server handles one connection's
// SUBs in order and a route carries them in order, so once the probe's
// interest reaches the publishers' server the subscription before it has too.
func syncSubs(subject string, conns []*nats.Conn) []*nats.Subscription {
	if cfg.subURL == "" {
		return nil
	}
	subs := make([]*nats.Subscription, len(conns))
	for i, nc := range conns {
		s, err := nc.SubscribeSync(subject)
		if err != nil {
			fail("io", fmt.Sprintf("probe subscribe: %v", err))
			finish(nil)
		}
		subs[i] = s
		if err := nc.Flush(); err != nil {
			fail("io", fmt.Sprintf("flush: %v", err))
			finish(nil)
		}
	}
	return subs
}

// routeBarrier publishes probe messages on pub (connected to -s) until every
// probe subscription got one (and every stuck subscriber, counted by
// stuckSynced), then drops the probe subscriptions.
func routeBarrier(subject string, pub *nats.Conn, probes []*nats.Subscription, conns []*nats.Conn, stuck int, stuckSynced *int32) {
	if probes == nil {
		return
	}
	got := make([]bool, len(probes))
	left := len(probes)
	stuckLeft := func() int {
		if stuckSynced == nil {
			return 0
		}
		return stuck - int(atomic.LoadInt32(stuckSynced))
	}
	deadline := time.Now().Add(cfg.syncWait)
	for left > 0 || stuckLeft() > 0 {
		if time.Now().After(deadline) {
			who := "subscribers"
			if cfg.req {
				who = "responders"
			}
			fail("io", fmt.Sprintf("no interest across servers: %d of %d %s on %s got a message published on %s within %v (route not up?)",
				len(probes)-left+stuck-stuckLeft(), len(probes)+stuck, who, cfg.subURL, cfg.url, cfg.syncWait))
			finish(nil)
		}
		if err := pub.Publish(subject, nil); err != nil {
			fail("io", fmt.Sprintf("probe publish: %v", err))
			finish(nil)
		}
		if err := pub.Flush(); err != nil {
			fail("io", fmt.Sprintf("probe flush: %v", err))
			finish(nil)
		}
		for i, s := range probes {
			if got[i] {
				continue
			}
			if _, err := s.NextMsg(5 * time.Millisecond); err == nil {
				got[i] = true
				left--
			}
		}
	}
	for i, s := range probes {
		_ = s.Unsubscribe()
		_ = conns[i].Flush()
	}
}

func syncSubject() string {
	return fmt.Sprintf("_GOBENCH.sync.%s", nats.NewInbox()[len(nats.InboxPrefix):])
}

type subState struct {
	received uint64
	reorder  uint64
	next     []uint64
	last     time.Time
	done     chan struct{}
	once     sync.Once
}

func runPubSub() {
	per := splitCount(cfg.msgs, cfg.np)
	bm := bench.NewBenchmark("gobench", cfg.ns, cfg.np)
	expectedPerSub := uint64(cfg.msgs)
	var totalDelivered uint64
	expectedTotal := uint64(cfg.msgs) * uint64(cfg.ns)
	if cfg.queue != "" {
		expectedTotal = uint64(cfg.msgs)
	}
	allDone := make(chan struct{})
	var allOnce sync.Once

	subSubject := cfg.subject
	if cfg.subjects > 1 {
		subSubject = cfg.subject + ".>"
	}
	subs := make([]*subState, cfg.ns)
	subConns := make([]*nats.Conn, cfg.ns)
	for i := 0; i < cfg.ns; i++ {
		st := &subState{next: make([]uint64, cfg.np), done: make(chan struct{})}
		subs[i] = st
		nc := connectSub(fmt.Sprintf("gobench-sub-%d", i))
		subConns[i] = nc
		handler := func(m *nats.Msg) {
			n := atomic.AddUint64(&st.received, 1)
			st.last = time.Now()
			if len(m.Data) >= stampLen && cfg.size >= stampLen {
				p := binary.LittleEndian.Uint32(m.Data[0:4])
				seq := binary.LittleEndian.Uint64(m.Data[4:12])
				if int(p) < len(st.next) {
					if seq < st.next[p] {
						st.reorder++
					} else {
						st.next[p] = seq + 1
					}
				}
			}
			if cfg.queue == "" && n == expectedPerSub {
				st.once.Do(func() { close(st.done) })
			}
			if atomic.AddUint64(&totalDelivered, 1) == expectedTotal {
				allOnce.Do(func() { close(allDone) })
			}
		}
		var sub *nats.Subscription
		var err error
		if cfg.queue != "" {
			sub, err = nc.QueueSubscribe(subSubject, cfg.queue, handler)
		} else {
			sub, err = nc.Subscribe(subSubject, handler)
		}
		if err != nil {
			fail("io", fmt.Sprintf("subscribe: %v", err))
			finish(nil)
		}
		_ = sub.SetPendingLimits(-1, -1)
		if err := nc.Flush(); err != nil {
			fail("io", fmt.Sprintf("flush: %v", err))
			finish(nil)
		}
	}

	var subjects []string
	if cfg.subjects > 1 {
		subjects = make([]string, cfg.subjects)
		for i := range subjects {
			subjects[i] = cfg.subject + "." + strconv.Itoa(i)
		}
	}

	syncSubj := syncSubject()
	probes := syncSubs(syncSubj, subConns)
	var stuckSynced int32
	stuck := make([]*stuckConn, cfg.stuck)
	for i := range stuck {
		stuck[i] = openStuck(i, subSubject, syncSubj, &stuckSynced)
	}

	pubConns := make([]*nats.Conn, cfg.np)
	for i := range pubConns {
		pubConns[i] = connect(fmt.Sprintf("gobench-pub-%d", i))
	}
	routeBarrier(syncSubj, pubConns[0], probes, subConns, cfg.stuck, &stuckSynced)
	var stopWatch chan struct{}
	var watchDone chan bool
	startGate := make(chan struct{})
	var wg sync.WaitGroup
	pubEnds := make([]time.Time, cfg.np)
	var published uint64
	for i := 0; i < cfg.np; i++ {
		wg.Add(1)
		go func(idx int) {
			defer wg.Done()
			nc := pubConns[idx]
			data := payload(cfg.size)
			<-startGate
			for seq := 0; seq < per[idx]; seq++ {
				if cfg.size >= stampLen {
					binary.LittleEndian.PutUint32(data[0:4], uint32(idx))
					binary.LittleEndian.PutUint64(data[4:12], uint64(seq))
				}
				subj := cfg.subject
				if subjects != nil {
					subj = subjects[seq%len(subjects)]
				}
				if err := nc.Publish(subj, data); err != nil {
					fail("io", fmt.Sprintf("publish: %v", err))
					return
				}
			}
			if err := nc.FlushTimeout(cfg.timeout); err != nil {
				fail("io", fmt.Sprintf("final flush: %v", err))
				return
			}
			pubEnds[idx] = time.Now()
			atomic.AddUint64(&published, uint64(per[idx]))
		}(i)
	}
	start := time.Now()
	if len(stuck) > 0 {
		stopWatch, watchDone = make(chan struct{}), make(chan bool)
		go func() { watchDone <- watchStuck(stuck, stopWatch) }()
	}
	close(startGate)
	wg.Wait()
	pubDone := time.Now()

	// Wait for deliveries; give up after 3 s without progress.
	if cfg.ns > 0 {
		var waitAll <-chan struct{} = allDone
		if cfg.queue == "" {
			ch := make(chan struct{})
			go func() {
				for _, st := range subs {
					<-st.done
				}
				close(ch)
			}()
			waitAll = ch
		}
		lastSeen, lastChange := uint64(0), time.Now()
		tick := time.NewTicker(20 * time.Millisecond)
	wait:
		for {
			select {
			case <-waitAll:
				break wait
			case <-tick.C:
				cur := atomic.LoadUint64(&totalDelivered)
				if cur != lastSeen {
					lastSeen, lastChange = cur, time.Now()
				} else if time.Since(lastChange) > 3*time.Second {
					break wait
				}
			}
		}
		tick.Stop()
	}
	_ = pubDone
	// The measured clients are done: what happens to the stuck ones from now
	// on does not count.
	watchOK := false
	if stopWatch != nil {
		close(stopWatch)
		watchOK = <-watchDone
	}

	s := &summary{Mode: "pubsub", Server: cfg.url, SubServer: cfg.subURL, Subject: cfg.subject, NP: cfg.np, NS: cfg.ns,
		Msgs: cfg.msgs, Size: cfg.size, Subjects: cfg.subjects, Queue: cfg.queue}
	for i, nc := range pubConns {
		if !pubEnds[i].IsZero() {
			bm.AddPubSample(bench.NewSample(per[i], cfg.size, start, pubEnds[i], nc))
			if d := secs(start, pubEnds[i]); d > s.PubDurationS {
				s.PubDurationS = d
			}
		}
	}
	var reorder uint64
	for i, st := range subs {
		n := atomic.LoadUint64(&st.received)
		s.Delivered += n
		reorder += st.reorder
		end := st.last
		if end.IsZero() {
			end = start
		}
		bm.AddSubSample(bench.NewSample(int(n), cfg.size, start, end, subConns[i]))
		if d := secs(start, end); d > s.SubDurationS {
			s.SubDurationS = d
		}
		if cfg.queue == "" && n < expectedPerSub {
			s.Lost += expectedPerSub - n
		}
	}
	bm.Close()
	for _, nc := range append(pubConns, subConns...) {
		nc.Close()
	}
	if len(stuck) > 0 {
		s.Stuck = len(stuck)
		s.StuckWatch = "unavailable"
		if watchOK {
			s.StuckWatch = "proc"
		}
		for _, c := range stuck {
			_ = c.conn.Close()
			if !c.cut.IsZero() {
				s.StuckCut++
				if d := secs(start, c.cut); s.StuckCutS == nil || d > *s.StuckCutS {
					s.StuckCutS = &d
				}
			}
		}
	}
	if cfg.queue != "" && s.Delivered < expectedTotal {
		s.Lost = expectedTotal - s.Delivered
	}
	s.Published = atomic.LoadUint64(&published)
	s.Reordered = reorder
	if cfg.ns > 0 {
		s.ExpectedDelivered = expectedTotal
		if s.Lost > 0 || s.Reordered > 0 || s.Delivered > expectedTotal {
			fail("verification", fmt.Sprintf("%d lost, %d out of order, delivered %d of %d expected",
				s.Lost, s.Reordered, s.Delivered, expectedTotal))
		}
	}
	s.DurationS = s.PubDurationS
	if s.SubDurationS > s.DurationS {
		s.DurationS = s.SubDurationS
	}
	s.PubRate = rate(s.Published, s.PubDurationS)
	s.SubRate = rate(s.Delivered, s.SubDurationS)
	s.PubMBs = s.PubRate * float64(cfg.size) / 1e6
	s.SubMBs = s.SubRate * float64(cfg.size) / 1e6
	if !jsonOut {
		fmt.Fprint(os.Stderr, bm.Report())
	}
	writeCSV(bm)
	finish(s)
}

func writeCSV(bm *bench.Benchmark) {
	if cfg.csvFile == "" {
		return
	}
	if err := os.WriteFile(cfg.csvFile, []byte(bm.CSV()), 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "gobench: cannot write %s: %v\n", cfg.csvFile, err)
	}
}

func runReq() {
	if cfg.ns < 1 {
		fmt.Fprintln(os.Stderr, "gobench: -req needs -ns >= 1 responders")
		os.Exit(2)
	}
	group := cfg.queue
	if group == "" {
		group = "gobench-responders"
	}
	var conns []*nats.Conn
	for i := 0; i < cfg.ns; i++ {
		nc := connectSub(fmt.Sprintf("gobench-resp-%d", i))
		conns = append(conns, nc)
		sub, err := nc.QueueSubscribe(cfg.subject, group, func(m *nats.Msg) {
			_ = m.Respond(m.Data)
		})
		if err != nil {
			fail("io", fmt.Sprintf("subscribe: %v", err))
			finish(nil)
		}
		_ = sub.SetPendingLimits(-1, -1)
		_ = nc.Flush()
	}
	per := splitCount(cfg.msgs, cfg.np)
	bm := bench.NewBenchmark("gobench-req", 0, cfg.np)
	lats := make([][]time.Duration, cfg.np)
	ends := make([]time.Time, cfg.np)
	reqConns := make([]*nats.Conn, cfg.np)
	syncSubj := syncSubject()
	probes := syncSubs(syncSubj, conns)
	for i := range reqConns {
		reqConns[i] = connect(fmt.Sprintf("gobench-req-%d", i))
	}
	routeBarrier(syncSubj, reqConns[0], probes, conns, 0, nil)
	startGate := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < cfg.np; i++ {
		wg.Add(1)
		go func(idx int) {
			defer wg.Done()
			nc := reqConns[idx]
			data := payload(cfg.size)
			l := make([]time.Duration, 0, per[idx])
			<-startGate
			for seq := 0; seq < per[idx]; seq++ {
				t0 := time.Now()
				m, err := nc.Request(cfg.subject, data, cfg.timeout)
				if err != nil {
					fail("io", fmt.Sprintf("request %d: %v", seq, err))
					return
				}
				l = append(l, time.Since(t0))
				if len(m.Data) != cfg.size {
					fail("verification", fmt.Sprintf("reply of %d bytes, expected %d", len(m.Data), cfg.size))
					return
				}
			}
			lats[idx] = l
			ends[idx] = time.Now()
		}(i)
	}
	start := time.Now()
	close(startGate)
	wg.Wait()
	s := &summary{Mode: "req", Server: cfg.url, SubServer: cfg.subURL, Subject: cfg.subject, NP: cfg.np, NS: cfg.ns,
		Msgs: cfg.msgs, Size: cfg.size, Subjects: 1, Queue: cfg.queue}
	var all []time.Duration
	for i := range lats {
		all = append(all, lats[i]...)
		if !ends[i].IsZero() {
			bm.AddPubSample(bench.NewSample(len(lats[i]), cfg.size, start, ends[i], reqConns[i]))
			if d := secs(start, ends[i]); d > s.DurationS {
				s.DurationS = d
			}
		}
	}
	bm.Close()
	s.Published = uint64(len(all))
	s.Delivered = uint64(len(all))
	s.ExpectedDelivered = uint64(cfg.msgs)
	if s.Delivered < s.ExpectedDelivered {
		s.Lost = s.ExpectedDelivered - s.Delivered
	}
	s.PubDurationS, s.SubDurationS = s.DurationS, s.DurationS
	s.PubRate = rate(s.Published, s.DurationS)
	s.SubRate = s.PubRate
	s.PubMBs = s.PubRate * float64(cfg.size) / 1e6
	s.SubMBs = s.PubMBs
	if len(all) > 0 {
		sort.Slice(all, func(a, b int) bool { return all[a] < all[b] })
		us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 }
		q := func(f float64) float64 {
			i := int(f*float64(len(all))+0.5) - 1
			if i < 0 {
				i = 0
			}
			if i >= len(all) {
				i = len(all) - 1
			}
			return us(all[i])
		}
		var sum time.Duration
		for _, d := range all {
			sum += d
		}
		s.Latency = &latency{Count: len(all), MinUs: us(all[0]), MeanUs: us(sum) / float64(len(all)),
			P50Us: q(0.50), P90Us: q(0.90), P99Us: q(0.99), P999Us: q(0.999), MaxUs: us(all[len(all)-1])}
	}
	for _, nc := range append(reqConns, conns...) {
		nc.Close()
	}
	writeCSV(bm)
	finish(s)
}

// ---- stuck subscribers

// stuckConn is a subscriber that stopped reading after its SUB was
// acknowledged: the server's MSGs pile up in its small receive buffer, then in
// the server's send buffer, then in the server's own queue.
type stuckConn struct {
	conn          net.Conn
	ours, theirs  tcpKey
	oursVisible   bool // listed in /proc/net/tcp at the start
	serverVisible bool // the server's end too (same network namespace)
	cut           time.Time
}

// tcpKey is "local_address rem_address" of one /proc/net/tcp{,6} line.
type tcpKey struct {
	v6            bool
	local, remote string
}

const (
	tcpMissing = iota // not listed: closed and gone, or reset
	tcpOpen           // ESTABLISHED and owned by a process
	tcpClosed         // another state, or orphaned (closed, unsent data still queued)
)

var littleEndian = func() bool { x := uint16(1); return *(*byte)(unsafe.Pointer(&x)) == 1 }()

// procAddr spells an address as /proc/net/tcp does: each 32-bit word of the
// address in host byte order, then the port, in hex.
func procAddr(a *net.TCPAddr) string {
	ip := a.IP.To4()
	if ip == nil {
		ip = a.IP.To16()
	}
	var b strings.Builder
	for i := 0; i+4 <= len(ip); i += 4 {
		w := binary.BigEndian.Uint32(ip[i : i+4])
		if littleEndian {
			w = binary.LittleEndian.Uint32(ip[i : i+4])
		}
		fmt.Fprintf(&b, "%08X", w)
	}
	fmt.Fprintf(&b, ":%04X", a.Port)
	return b.String()
}

// tcpStates looks the keys up in /proc/net/tcp and /proc/net/tcp6; false when
// neither can be read.
func tcpStates(keys []tcpKey) ([]int, bool) {
	out := make([]int, len(keys))
	readable := false
	for _, f := range []struct {
		path string
		v6   bool
	}{{"/proc/net/tcp", false}, {"/proc/net/tcp6", true}} {
		need := false
		for _, k := range keys {
			need = need || k.v6 == f.v6
		}
		if !need {
			continue
		}
		data, err := os.ReadFile(f.path)
		if err != nil {
			continue
		}
		readable = true
		for _, line := range strings.Split(string(data), "\n")[1:] {
			fl := strings.Fields(line)
			if len(fl) < 10 {
				continue
			}
			for i, k := range keys {
				if k.v6 == f.v6 && fl[1] == k.local && fl[2] == k.remote {
					// 01 = ESTABLISHED; inode 0 = no process holds it any more
					if fl[3] == "01" && fl[9] != "0" {
						out[i] = tcpOpen
					} else {
						out[i] = tcpClosed
					}
				}
			}
		}
	}
	return out, readable
}

func hostPort(u string) string {
	first := strings.TrimSpace(strings.Split(u, ",")[0])
	host := first
	if p, err := url.Parse(first); err == nil && p.Host != "" {
		host = p.Host
	}
	if _, _, err := net.SplitHostPort(host); err != nil {
		host = net.JoinHostPort(host, "4222")
	}
	return host
}

// readUntil reads server frames until a control line starting with op,
// answering PINGs and skipping MSG payloads.
func readUntil(c net.Conn, r *bufio.Reader, op string) error {
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case strings.HasPrefix(line, "-ERR"):
			return fmt.Errorf("server error: %s", line)
		case strings.HasPrefix(line, "PING"):
			if _, err := c.Write([]byte("PONG\r\n")); err != nil {
				return err
			}
		case strings.HasPrefix(line, "MSG "):
			f := strings.Fields(line)
			n, err := strconv.Atoi(f[len(f)-1])
			if err != nil {
				return fmt.Errorf("malformed MSG line %q", line)
			}
			if _, err := r.Discard(n + 2); err != nil {
				return err
			}
		}
		if strings.HasPrefix(line, op) {
			return nil
		}
	}
}

// openStuck connects a never-reading subscriber to the subscribers' server:
// SO_RCVBUF set before connecting, CONNECT + SUB + PING, the PONG read (and
// with -sub-url the start-line probe, in the background, counted in synced),
// then nothing is read any more.
func openStuck(idx int, subject, syncSubj string, synced *int32) *stuckConn {
	target := cfg.url
	if cfg.subURL != "" {
		target = cfg.subURL
	}
	name := fmt.Sprintf("gobench-stuck-%d", idx)
	die := func(err error) {
		fail("io", fmt.Sprintf("%s: %v", name, err))
		finish(nil)
	}
	d := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, cfg.rcvbuf)
		}); err != nil {
			return err
		}
		return serr
	}}
	c, err := d.Dial("tcp", hostPort(target))
	if err != nil {
		die(err)
	}
	_ = c.SetDeadline(time.Now().Add(cfg.timeout))
	r := bufio.NewReaderSize(c, 4096)
	if err := readUntil(c, r, "INFO"); err != nil {
		die(err)
	}
	hello := fmt.Sprintf("CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1,\"name\":%q}\r\nSUB %s 1\r\n", name, subject)
	if cfg.subURL != "" {
		hello += fmt.Sprintf("SUB %s 2\r\n", syncSubj)
	}
	if _, err := c.Write([]byte(hello + "PING\r\n")); err != nil {
		die(err)
	}
	if err := readUntil(c, r, "PONG"); err != nil {
		die(err)
	}
	sc := &stuckConn{conn: c}
	local, lok := c.LocalAddr().(*net.TCPAddr)
	peer, pok := c.RemoteAddr().(*net.TCPAddr)
	if lok && pok {
		v6 := local.IP.To4() == nil
		sc.ours = tcpKey{v6: v6, local: procAddr(local), remote: procAddr(peer)}
		sc.theirs = tcpKey{v6: v6, local: sc.ours.remote, remote: sc.ours.local}
		if st, ok := tcpStates([]tcpKey{sc.ours, sc.theirs}); ok {
			sc.oursVisible, sc.serverVisible = st[0] == tcpOpen, st[1] == tcpOpen
		}
	}
	if cfg.subURL == "" {
		return sc
	}
	go func() {
		// With -sub-url: one probe message, drop the probe subscription, and
		// read past any probe still on its way (nothing else is sent yet).
		if err := readUntil(c, r, "MSG "); err != nil {
			die(err)
		}
		if _, err := c.Write([]byte("UNSUB 2\r\nPING\r\n")); err != nil {
			die(err)
		}
		if err := readUntil(c, r, "PONG"); err != nil {
			die(err)
		}
		atomic.AddInt32(synced, 1)
	}()
	return sc
}

// watchStuck checks the stuck connections every 10 ms until stop is closed: a
// connection is cut once the server's end is closed (orphaned with its FIN
// queued behind the unread data, or gone) or ours saw FIN or RST. Nothing is
// read from them. It returns false when /proc/net/tcp cannot tell for some.
func watchStuck(conns []*stuckConn, stop <-chan struct{}) bool {
	usable := true
	for _, c := range conns {
		usable = usable && (c.oursVisible || c.serverVisible)
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		stopping := false
		select {
		case <-stop:
			stopping = true
		case <-tick.C:
		}
		now := time.Now()
		var open []*stuckConn
		var keys []tcpKey
		for _, c := range conns {
			if c.cut.IsZero() && (c.oursVisible || c.serverVisible) {
				open = append(open, c)
				keys = append(keys, c.ours, c.theirs)
			}
		}
		if len(open) == 0 {
			return usable
		}
		st, ok := tcpStates(keys)
		if !ok {
			return false
		}
		for i, c := range open {
			if (c.oursVisible && st[2*i] != tcpOpen) || (c.serverVisible && st[2*i+1] != tcpOpen) {
				c.cut = now
			}
		}
		if stopping {
			return usable
		}
	}
}

func stuckText(s *summary) string {
	switch {
	case s.Stuck == 0:
		return ""
	case s.StuckWatch != "proc":
		return fmt.Sprintf(", stuck %d: cut not observable", s.Stuck)
	case s.StuckCutS == nil:
		return fmt.Sprintf(", stuck %d: none cut during the run", s.Stuck)
	}
	return fmt.Sprintf(", stuck %d: %d cut by the server (last at %.3f s)", s.Stuck, s.StuckCut, *s.StuckCutS)
}

// normalizeArgs lets "--flag" spellings work too (Go's flag package already
// accepts single-dash long flags).
func normalizeArgs(args []string) []string {
	out := make([]string, 0, len(args))
	for _, a := range args {
		if strings.HasPrefix(a, "--") && len(a) > 2 {
			a = a[1:]
		}
		out = append(out, a)
	}
	return out
}

func main() {
	fs := flag.NewFlagSet("gobench", flag.ExitOnError)
	fs.StringVar(&cfg.url, "s", nats.DefaultURL, "server URL")
	fs.StringVar(&cfg.subURL, "sub-url", "", "subscribers/responders connect here (publishers stay on -s); waits for interest to cross the route first")
	syncWait := fs.Float64("sync-wait", 10, "with -sub-url: give up if interest has not crossed to -s within this many seconds")
	fs.IntVar(&cfg.np, "np", 1, "number of concurrent publishers (requesters with -req)")
	fs.IntVar(&cfg.ns, "ns", 0, "number of concurrent subscribers (responders with -req)")
	fs.IntVar(&cfg.msgs, "n", 100000, "total messages to publish, split over publishers")
	fs.IntVar(&cfg.size, "ms", 128, "message payload size")
	fs.StringVar(&cfg.csvFile, "csv", "", "write per-client results (nats-bench CSV) to this file")
	fs.StringVar(&cfg.queue, "queue", "", "subscribers join this queue group")
	fs.IntVar(&cfg.subjects, "subjects", 1, "publishers cycle over K subjects <subject>.<i>")
	fs.BoolVar(&cfg.req, "req", false, "request/reply latency mode")
	fs.BoolVar(&jsonOut, "json", false, "print one JSON summary object")
	timeout := fs.Float64("timeout", 60, "give up after this many seconds (exit 3)")
	fs.IntVar(&cfg.stuck, "stuck", 0, "also open N subscribers on the subject that never read after subscribing (not counted; the summary says when the server cut them)")
	fs.StringVar(&cfg.tlsCA, "tlsca", "", "connect with TLS, trusting the CA certificates in this PEM file")
	fs.IntVar(&cfg.rcvbuf, "stuck-rcvbuf", 4096, "SO_RCVBUF of the -stuck connections, set before connecting (the kernel doubles it)")
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, "Usage: gobench [-s url] [-np N] [-ns N] [-n MSGS] [-ms SIZE] [-csv FILE] [-queue G] [-subjects K] [-req] [-json] [-timeout S] [-sub-url url [-sync-wait S]] [-stuck N [-stuck-rcvbuf B]] [-tlsca FILE] [subject]")
		fs.PrintDefaults()
	}
	_ = fs.Parse(normalizeArgs(os.Args[1:]))
	cfg.subject = "bench"
	if fs.NArg() > 0 {
		cfg.subject = fs.Arg(0)
	}
	if cfg.np < 1 || cfg.msgs < cfg.np || cfg.subjects < 1 || cfg.size < 0 || cfg.stuck < 0 ||
		(cfg.stuck > 0 && (cfg.req || cfg.queue != "" || cfg.tlsCA != "")) {
		fs.Usage()
		os.Exit(2)
	}
	cfg.timeout = time.Duration(*timeout * float64(time.Second))
	cfg.syncWait = time.Duration(*syncWait * float64(time.Second))
	time.AfterFunc(cfg.timeout, func() {
		fail("timeout", fmt.Sprintf("timed out after %.0fs", *timeout))
		finish(nil)
	})
	if cfg.req {
		runReq()
	} else {
		runPubSub()
	}
}
