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
// Build (offline, Debian layout):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o perf/bin/gobench ./perf/gobench
package main

import (
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

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
}

var (
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
	nc, err := nats.Connect(url,
		nats.Name(name),
		nats.NoReconnect(),
		nats.Timeout(5*time.Second),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			fail("io", fmt.Sprintf("%s: async error: %v", name, err))
		}),
	)
	if err != nil {
		fail("io", fmt.Sprintf("%s: connect %s: %v", name, url, err))
		finish(nil)
	}
	return nc
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
		fmt.Printf("gobench: np=%d ns=%d n=%d ms=%d: pub %.0f msgs/s (%.2f MB/s), sub %.0f msgs/s delivered (%.2f MB/s), %.3f s\n",
			s.NP, s.NS, s.Msgs, s.Size, s.PubRate, s.PubMBs, s.SubRate, s.SubMBs, s.DurationS)
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
// probe subscription got one, then drops the probe subscriptions.
func routeBarrier(subject string, pub *nats.Conn, probes []*nats.Subscription, conns []*nats.Conn) {
	if probes == nil {
		return
	}
	got := make([]bool, len(probes))
	left := len(probes)
	deadline := time.Now().Add(cfg.syncWait)
	for left > 0 {
		if time.Now().After(deadline) {
			who := "subscribers"
			if cfg.req {
				who = "responders"
			}
			fail("io", fmt.Sprintf("no interest across servers: %d of %d %s on %s got a message published on %s within %v (route not up?)",
				len(probes)-left, len(probes), who, cfg.subURL, cfg.url, cfg.syncWait))
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

	pubConns := make([]*nats.Conn, cfg.np)
	for i := range pubConns {
		pubConns[i] = connect(fmt.Sprintf("gobench-pub-%d", i))
	}
	routeBarrier(syncSubj, pubConns[0], probes, subConns)
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
	routeBarrier(syncSubj, reqConns[0], probes, conns)
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
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, "Usage: gobench [-s url] [-np N] [-ns N] [-n MSGS] [-ms SIZE] [-csv FILE] [-queue G] [-subjects K] [-req] [-json] [-timeout S] [-sub-url url [-sync-wait S]] [subject]")
		fs.PrintDefaults()
	}
	_ = fs.Parse(normalizeArgs(os.Args[1:]))
	cfg.subject = "bench"
	if fs.NArg() > 0 {
		cfg.subject = fs.Arg(0)
	}
	if cfg.np < 1 || cfg.msgs < cfg.np || cfg.subjects < 1 || cfg.size < 0 {
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
